"""The routing table: one lookup per command, conflicts named, winners pinned by config."""

from __future__ import annotations

from typing import Any

import pytest
from kernel_procs import Greet, greet, greeter

from corec_plugin_kit import ActionConflict, ProcessorError, UnknownAction
from corec_plugin_kit.routing import ActionSpec, Register, RoutingTable


def test_route_and_describe(corec_register: Any, corec_kernel: Any) -> None:
    corec_register(greeter(), name="greeter", distribution="corec-greeter", version="1")
    kernel = corec_kernel()
    spec = kernel.routing.route("greet")
    assert isinstance(spec, ActionSpec)
    assert (spec.processor, spec.handler, spec.params_model) == ("greeter", greet, Greet)
    assert spec.claimed_by == "greeter (corec-greeter)"
    described = spec.describe()
    assert described["description"] == "Say hello."  # first line of the handler's docstring
    assert described["params_schema"]["required"] == ["name"]
    assert described["params_schema"]["properties"]["times"]["maximum"] == 3
    assert len(kernel.routing) == 1
    assert list(kernel.routing) == ["greet"]
    with pytest.raises(UnknownAction, match="corec-kit actions") as caught:
        kernel.routing.route("nope")
    assert caught.value.wire_type == "unknown_action"
    assert caught.value.details == {"action": "nope"}


def test_conflict_names_both_distributions(corec_register: Any, corec_kernel: Any) -> None:
    corec_register(greeter(), name="first", distribution="corec-first", version="1")
    corec_register(greeter(), name="second", distribution="corec-second", version="1")
    with pytest.raises(ActionConflict) as caught:
        corec_kernel()
    error = caught.value
    assert isinstance(error, ProcessorError)
    assert error.exit_code == 4
    assert "first (corec-first)" in error.message
    assert "second (corec-second)" in error.message
    assert "action_owners" in error.message  # says how to resolve it
    assert error.details == {
        "action": "greet",
        "claimed_by": ["first (corec-first)", "second (corec-second)"],
    }


@pytest.mark.parametrize("winner", ["first", "second"])
def test_action_owners_pins_the_winner(corec_register: Any, corec_kernel: Any, winner: str) -> None:
    corec_register(greeter(), name="first", distribution="corec-first")
    corec_register(greeter(), name="second", distribution="corec-second")
    kernel = corec_kernel(action_owners={"greet": winner})
    assert kernel.routing.route("greet").processor == winner


def test_pinning_a_third_processor_still_conflicts() -> None:
    claims = []
    for name in ("a", "b"):
        reg = Register(name, f"dist-{name}")
        reg("act", greet, Greet)
        claims.append(reg)
    with pytest.raises(ActionConflict):
        RoutingTable.build(claims, {"act": "c"})
    assert RoutingTable.build(claims, {"act": "a"})["act"].processor == "a"


def test_action_registered_without_model_takes_no_params() -> None:
    reg = Register("p")
    reg("bare", greet)
    reg("bare2", greet, description="Explicit text")
    spec = reg.specs[0]
    assert spec.params_model.model_json_schema()["additionalProperties"] is False
    assert reg.specs[1].params_model is spec.params_model  # one shared model
    assert reg.specs[1].description == "Explicit text"
