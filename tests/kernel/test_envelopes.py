"""Envelopes: both wire forms, every invalid-command case, the documented pydantic models."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_procs import Greet, greet, processor, refuse

from corec_plugin_kit import InvalidCommand
from corec_plugin_kit.envelopes import (
    Command,
    Result,
    check_shape,
    dumps,
    parse_fields,
    result_fields,
)


def test_payload_form() -> None:
    body = {
        "action": "greet",
        "params": {"name": "x"},
        "id": "k1",
        "reply_to": "r",
        "meta": {"a": 1},
    }
    assert parse_fields({b"payload": orjson.dumps(body)}) == body
    assert parse_fields({"payload": orjson.dumps(body).decode()}) == body


def test_payload_form_without_params_gets_empty_params() -> None:
    assert parse_fields({b"payload": b'{"action": "ping"}'}) == {"action": "ping", "params": {}}


def test_flat_form_keeps_params_as_json_text() -> None:
    fields = {b"action": b"greet", b"params": b'{"name": "x"}', b"id": b"k2", b"reply_to": b"out"}
    assert parse_fields(fields) == {
        "action": "greet",
        "params": b'{"name": "x"}',
        "id": "k2",
        "reply_to": "out",
    }
    assert parse_fields({"action": "ping"}) == {"action": "ping", "params": b"{}"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({b"payload": b"{not json"}, "payload is not JSON"),
        ({b"payload": b"[1, 2]"}, "must be a JSON object"),
        ({b"payload": b'{"params": {}}'}, "`action` must be a non-empty string"),
        ({b"payload": b'{"action": ""}'}, "`action` must be a non-empty string"),
        ({b"payload": orjson.dumps({"action": "a" * 101})}, "at most 100"),
        ({b"payload": b'{"action": 5}'}, "`action` must be a non-empty string"),
        ({b"payload": b'{"action": "a", "params": [1]}'}, "`params` must be a JSON object"),
        ({b"payload": b'{"action": "a", "id": ""}'}, "`id` must be a non-empty string"),
        ({b"payload": b'{"action": "a", "id": 7}'}, "`id` must be a non-empty string"),
        ({b"payload": orjson.dumps({"action": "a", "reply_to": "r" * 201})}, "`reply_to`"),
        ({b"payload": b'{"action": "a", "meta": "x"}'}, "`meta` must be a JSON object"),
        ({b"payload": b'{"action": "a", "extra": 1}'}, "unknown envelope keys: extra"),
        ({b"other": b"x"}, "neither a `payload` field nor an `action` field"),
        ({b"action": b"\xff\xfe"}, "`action` is not UTF-8 text"),
        ({b"action": b"a", b"id": b"\xff"}, "`id` is not UTF-8 text"),
    ],
)
def test_invalid_commands(fields: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(InvalidCommand, match=message.replace("[", r"\[")) as caught:
        parse_fields(fields)
    assert caught.value.wire_type == "invalid_command"
    assert caught.value.exit_code == 2


def test_size_limits_in_both_forms() -> None:
    big = orjson.dumps({"action": "a", "params": {"x": "y" * 200}})
    with pytest.raises(InvalidCommand, match="over max_payload_bytes=100") as caught:
        parse_fields({b"payload": big}, max_bytes=100)
    assert caught.value.details == {"size": len(big), "max_payload_bytes": 100}
    with pytest.raises(InvalidCommand, match="entry is"):
        parse_fields({b"action": b"a", b"params": b"y" * 200}, max_bytes=100)
    assert parse_fields({b"payload": big}, max_bytes=len(big))["action"] == "a"


def test_missing_fields_listed_in_details() -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_fields({b"zeta": b"1", "alpha": "2"})
    assert caught.value.details == {"fields": ["alpha", "zeta"]}


@given(
    action=st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True),
    params=st.dictionaries(
        st.text(max_size=10), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10), max_size=5
    ),
    key=st.none() | st.text(min_size=1, max_size=50),
)
def test_both_forms_agree_with_the_command_model(
    action: str, params: dict[str, Any], key: str | None
) -> None:
    body: dict[str, Any] = {"action": action, "params": params}
    if key is not None:
        body["id"] = key
    from_payload = parse_fields({b"payload": orjson.dumps(body)})
    flat = {b"action": action.encode(), b"params": orjson.dumps(params)}
    if key is not None:
        flat[b"id"] = key.encode()
    from_flat = parse_fields(flat)
    from_flat["params"] = orjson.loads(from_flat["params"])
    assert from_payload == from_flat
    assert Command.model_validate(from_payload).model_dump(exclude_none=True) == body


def test_check_shape_accepts_what_the_model_accepts() -> None:
    data = {"action": "x", "params": None}
    assert check_shape(data) == {"action": "x", "params": {}}


async def test_result_model_accepts_what_dispatch_builds(
    corec_register: Any, corec_kernel: Any
) -> None:
    def corec_register_actions(register: Any) -> None:
        register("greet", greet, Greet)
        register("refuse", refuse)

    corec_register(processor(corec_register_actions=corec_register_actions), name="p")
    async with corec_kernel() as kernel:
        envelopes = [
            await kernel.execute({"action": "greet", "params": {"name": "a"}}),
            await kernel.execute({"action": "refuse", "params": {}}),
            await kernel.execute({"action": "greet", "params": {}}),
            await kernel.execute({"action": "missing"}),
            await kernel.execute({"action": ""}),
        ]
    types = []
    for envelope in envelopes:
        model = Result.model_validate(envelope)
        assert model.model_dump(mode="json") == orjson.loads(dumps(envelope))
        assert set(envelope) == set(Result.model_fields)
        types.append(model.error.type if model.error else None)
    assert types == [None, "handler_error", "invalid_params", "unknown_action", "invalid_command"]
    fields = result_fields(envelopes[0])
    assert set(fields) == {"id", "action", "status", "payload"}
    assert orjson.loads(fields["payload"])["status"] == fields["status"] == "ok"


def test_dumps_understands_models_and_sets() -> None:
    assert orjson.loads(dumps({"m": Greet(name="x"), "s": {1}, 1: (2,)})) == {
        "m": {"name": "x", "times": 1},
        "s": [1],
        "1": [2],
    }
    with pytest.raises(TypeError, match="not JSON serializ"):
        dumps({"x": object()})
