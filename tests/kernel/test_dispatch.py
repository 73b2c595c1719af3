"""Dispatch: validation, timeouts, handler errors, blocking handlers, the context handlers get."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from kernel_procs import Greet, Sleep, blocking_sleep, crash, greet, processor, refuse, slow
from pydantic import BaseModel

from corec_plugin_kit import CommandContext, HandlerTimeout
from corec_plugin_kit.errors import error_from_exception


@pytest.fixture
def kernel(corec_register: Any, corec_kernel: Any) -> Any:
    seen: list[CommandContext] = []

    async def context(params: Sleep, ctx: CommandContext) -> BaseModel:
        seen.append(ctx)
        return Sleep(seconds=params.seconds)

    def corec_register_actions(register: Any) -> None:
        register("greet", greet, Greet)
        register("slow", slow, Sleep, timeout_s=0.05)
        register("slow_default", slow, Sleep)
        register("refuse", refuse, Sleep)
        register("crash", crash, Sleep)
        register("context", context, Sleep)
        register("block", blocking_sleep, Sleep, blocking=True, timeout_s=0.05)

    corec_register(processor(corec_register_actions=corec_register_actions), name="p")
    built = corec_kernel(handler_timeout_s=0.1)
    built.seen = seen
    return built


async def test_ok(kernel: Any) -> None:
    async with kernel:
        result = await kernel.execute(
            {"action": "greet", "params": {"name": "bo", "times": 2}, "id": "c1"}
        )
    assert result["status"] == "ok"
    assert result["result"] == {"greeting": "hello bo hello bo", "key": "c1"}
    assert result["processor"] == "p"
    assert result["id"] == "c1"
    assert result["duration_ms"] >= 0


async def test_generated_id_when_absent(kernel: Any) -> None:
    async with kernel:
        result = await kernel.execute({"action": "greet", "params": {"name": "x"}})
    assert result["id"].startswith("exec-")
    assert result["result"]["key"] == result["id"]


async def test_timeout_of_the_action_and_the_default(kernel: Any) -> None:
    async with kernel:
        own = await kernel.execute({"action": "slow", "params": {"seconds": 2}})
        default = await kernel.execute({"action": "slow_default", "params": {"seconds": 2}})
        blocked = await kernel.execute({"action": "block", "params": {"seconds": 0.5}})
    assert own["error"]["type"] == "timeout"
    assert own["error"]["details"] == {"timeout_s": 0.05}
    assert "did not finish within 0.05s" in own["error"]["message"]
    assert default["error"]["details"] == {"timeout_s": 0.1}
    assert blocked["error"]["type"] == "timeout"


async def test_handler_error_and_unexpected_exception(
    kernel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with kernel:
        refused = await kernel.execute({"action": "refuse"})
        with caplog.at_level(logging.ERROR, "corec_plugin_kit.dispatch"):
            crashed = await kernel.execute({"action": "crash"})
    assert refused["error"] == {
        "type": "handler_error",
        "message": "refused on purpose",
        "details": {"why": "test"},
    }
    assert crashed["status"] == "error"
    assert crashed["error"] == {
        "type": "handler_error",
        "message": "ZeroDivisionError: division by zero",
        "details": {"exception": "ZeroDivisionError"},
    }
    assert "ZeroDivisionError" in caplog.text  # the traceback is logged, not returned


async def test_invalid_params_with_details(kernel: Any) -> None:
    async with kernel:
        result = await kernel.execute(
            {"action": "greet", "params": {"name": "", "times": 9, "x": 1}}
        )
    error = result["error"]
    assert error["type"] == "invalid_params"
    assert sorted(d["loc"] for d in error["details"]) == ["name", "times", "x"]
    assert {d["type"] for d in error["details"]} == {
        "string_too_short",
        "less_than_equal",
        "extra_forbidden",
    }
    assert "corec-kit describe greet" in error["message"]


async def test_params_as_json_text_validated_directly(kernel: Any) -> None:
    async with kernel:
        ok = await kernel.dispatcher.dispatch({"action": "greet", "params": b'{"name": "j"}'})
        bad = await kernel.dispatcher.dispatch({"action": "greet", "params": b"{oops"})
    assert ok[0]["result"]["greeting"] == "hello j"
    assert ok[1] is None
    assert bad[0]["error"]["type"] == "invalid_params"


async def test_context_and_model_results(kernel: Any) -> None:
    async with kernel:
        result, error = await kernel.dispatcher.dispatch(
            {"action": "context", "params": {"seconds": 1}, "id": "k", "meta": {"m": 1}},
            entry_id="1-0",
            attempt=3,
        )
    assert error is None
    assert result["result"] == {"seconds": 1.0}  # pydantic results are dumped to JSON
    (ctx,) = kernel.seen
    assert (ctx.key, ctx.action, ctx.processor, ctx.attempt, ctx.entry_id, ctx.meta) == (
        "k",
        "context",
        "p",
        3,
        "1-0",
        {"m": 1},
    )
    assert ctx.kernel is kernel
    assert result["attempt"] == 3
    assert result["entry_id"] == "1-0"


async def test_execute_rejects_bad_envelopes(kernel: Any) -> None:
    async with kernel:
        result = await kernel.execute({"action": "greet", "bogus": 1, "id": "z"})
    assert result["error"]["type"] == "invalid_command"
    assert result["id"] == "z"


async def test_no_timeout_mode_leaves_it_to_the_caller(kernel: Any) -> None:
    async with kernel:
        result, _ = await kernel.dispatcher.dispatch(
            {"action": "slow", "params": {"seconds": 0.1}}, timeout=False
        )
    assert result["status"] == "ok"


def test_error_mapping_of_plain_exceptions() -> None:
    assert isinstance(error_from_exception(asyncio.TimeoutError()), HandlerTimeout)
    assert isinstance(error_from_exception(TimeoutError("t")), HandlerTimeout)
    mapped = error_from_exception(KeyError("k"))
    assert mapped.wire_type == "handler_error"
    assert mapped.transient is True
