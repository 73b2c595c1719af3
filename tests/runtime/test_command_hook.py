"""``corec_command`` wrappers on a real worker (real Redis): one refuses, one rewrites the
result, several nest in pluggy's order, an unexpected error in one is a handler error; and
``exec`` goes through them too. Without an implementation the dispatch never calls the hook."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_helpers import payload, pending, results

from corec_plugin_kit import CorecError, RateLimited, Unauthorized, hookimpl
from corec_plugin_kit.plugins import ProcessorManager


@pytest.fixture(params=[False, True], ids=["direct", "through-pluggy"])
def traced(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def corec_processors(traced: bool) -> ProcessorManager:
    """Every test here runs twice: the kit's own call of the wrapper chain, and pluggy's
    (used when COREC_TRACE_HOOKS traces the hooks); they must behave alike."""
    return ProcessorManager(entry_points=False, trace=traced)


class Gatekeeper:
    """Refuses ``echo`` unless ``meta.role`` is ``admin``; rate-limits ``n`` over 100."""

    @staticmethod
    @hookimpl(wrapper=True)
    def corec_command(call: Any) -> Any:
        if call.action == "echo":
            meta = call.command.get("meta") or {}
            if meta.get("role") != "admin":
                raise Unauthorized(f"{call.action} needs the admin role", details={"who": "x"})
            if (call.command.get("params") or {}).get("n", 0) > 100:
                raise RateLimited("too many", details={"retry_after_s": 1})
        return (yield)


def tagger(tag: str, **opts: Any) -> type:
    """A wrapper that records its nesting: the result becomes ``{tag: inner result}``."""

    def corec_command(call: Any) -> Any:
        inner = yield

        async def wrapped() -> Any:
            return {tag: await inner, "processor": call.processor, "key": call.ctx.key}

        return wrapped()

    return type(f"Tag{tag}", (), {"corec_command": staticmethod(
        hookimpl(wrapper=True, **opts)(corec_command))})  # fmt: skip


class Crasher:
    @staticmethod
    @hookimpl(wrapper=True)
    def corec_command(call: Any) -> Any:
        inner = yield

        async def wrapped() -> Any:
            await inner
            raise ZeroDivisionError("the wrapper's own bug")

        return wrapped()


async def test_a_wrapper_refuses_commands(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    corec_register(Gatekeeper(), name="gatekeeper")
    stream = corec_streams["stream_in"]
    await corec_redis.xadd(stream, payload("echo", {"n": 1}, id="anon"))
    await corec_redis.xadd(stream, payload("echo", {"n": 2}, id="adm", meta={"role": "admin"}))
    await corec_redis.xadd(stream, payload("echo", {"n": 500}, id="many", meta={"role": "admin"}))
    await corec_redis.xadd(stream, payload("sleep", {"seconds": 0}, id="other"))
    kernel = echo_kernel()
    assert kernel.dispatcher.wrapped
    stats = await corec_worker(kernel)
    got = await results(corec_redis, corec_streams["stream_out"])
    assert got["anon"]["status"] == "error"
    assert got["anon"]["error"] == {
        "type": "unauthorized", "message": "echo needs the admin role", "details": {"who": "x"},
    }  # fmt: skip
    assert got["anon"]["processor"] == "echo_proc"
    assert got["many"]["error"]["type"] == "rate_limited"
    assert got["adm"]["result"] == {"n": 2, "text": ""}
    assert got["other"]["status"] == "ok"
    # Refusals are answers: acknowledged, not retried, not dead-lettered.
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    assert await corec_redis.xlen(corec_streams["dead_letter_stream"]) == 0
    assert stats.retried == 0 and stats.errors == 2


async def test_wrappers_rewrite_results_and_nest_in_pluggy_order(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    corec_register(tagger("inner", trylast=True)(), name="inner")
    corec_register(tagger("middle")(), name="middle")
    corec_register(tagger("outer", tryfirst=True)(), name="outer")
    stream = corec_streams["stream_in"]
    await corec_redis.xadd(stream, payload("echo", {"n": 7}, id="e1"))
    await corec_redis.xadd(stream, payload("echo", {"n": "x"}, id="bad"))
    await corec_worker(echo_kernel())
    got = await results(corec_redis, corec_streams["stream_out"])
    result = got["e1"]["result"]
    assert result["processor"] == "echo_proc" and result["key"] == "e1"
    assert result["outer"]["middle"]["inner"] == {"n": 7, "text": ""}
    # Validation runs inside the chain: the wrappers saw the error pass through.
    assert got["bad"]["error"]["type"] == "invalid_params"


async def test_an_unexpected_error_in_a_wrapper_is_a_handler_error(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    corec_register(Crasher(), name="crasher")
    await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": 1}, id="c1"))
    await corec_worker(echo_kernel(max_deliveries=1))
    got = await results(corec_redis, corec_streams["stream_out"])
    # An unexpected exception is transient (as a handler's): with max_deliveries=1 it is
    # dead-lettered, its last error the wrapper's.
    last = got["c1"]["error"]["details"]["last_error"]
    assert last["type"] == "handler_error" and "ZeroDivisionError" in last["message"]


async def test_exec_goes_through_the_wrappers(corec_register: Any, echo_kernel: Any) -> None:
    corec_register(Gatekeeper(), name="gatekeeper")
    kernel = echo_kernel()
    async with kernel:
        refused = await kernel.execute({"action": "echo", "params": {"n": 1}})
        allowed = await kernel.execute(
            {"action": "echo", "params": {"n": 1}, "meta": {"role": "admin"}}
        )
    assert refused["error"]["type"] == "unauthorized"
    assert allowed["status"] == "ok"


def test_without_an_implementation_the_hook_is_not_called(echo_kernel: Any) -> None:
    kernel = echo_kernel()
    assert kernel.dispatcher.wrapped is False


def test_a_plain_implementation_fails_its_processor(corec_register: Any, echo_kernel: Any) -> None:
    class Plain:
        @staticmethod
        @hookimpl
        def corec_command(call: Any) -> Any:
            return None

    info = corec_register(Plain(), name="plain")
    assert info.status == "failed"
    assert "must be a wrapper, @hookimpl(wrapper=True)" in str(info.reason)
    assert echo_kernel().dispatcher.wrapped is False


@pytest.mark.parametrize("error", [Unauthorized("no"), RateLimited("slow down")])
def test_refusals_are_answers(error: CorecError) -> None:
    assert not error.transient and not error.command_fault


class Forgiver:
    """Outermost: turns a refusal from an inner wrapper into a result."""

    @staticmethod
    @hookimpl(wrapper=True, tryfirst=True)
    def corec_command(call: Any) -> Any:
        try:
            inner = yield
        except Unauthorized as exc:
            message = exc.message

            async def forgiven() -> Any:
                return {"forgiven": message}

            return forgiven()
        return inner


async def test_an_outer_wrapper_sees_an_inner_refusal(
    traced: bool, corec_register: Any, echo_kernel: Any
) -> None:
    """The kit's own call of the chain and pluggy's (used when COREC_TRACE_HOOKS traces the
    hooks) behave alike."""
    corec_register(Gatekeeper(), name="gatekeeper")
    corec_register(Forgiver(), name="forgiver")
    kernel = echo_kernel()
    assert kernel.processors._traced is traced
    async with kernel:
        got = await kernel.execute({"action": "echo", "params": {"n": 1}})
        ok = await kernel.execute({"action": "echo", "params": {"n": 2}, "meta": {"role": "admin"}})
    assert got["status"] == "ok"
    assert got["result"] == {"forgiven": "echo needs the admin role"}
    assert ok["result"] == {"n": 2, "text": ""}


async def test_a_wrapper_that_does_not_yield_is_an_error(
    corec_register: Any, echo_kernel: Any
) -> None:
    class NoYield:
        @staticmethod
        @hookimpl(wrapper=True)
        def corec_command(call: Any) -> Any:
            if False:  # a generator that returns at once
                yield
            return None

    corec_register(NoYield(), name="noyield")
    kernel = echo_kernel()
    async with kernel:
        got = await kernel.execute({"action": "echo", "params": {"n": 1}})
    assert got["error"]["type"] == "handler_error"
    assert "did not yield" in got["error"]["message"]  # pluggy's words differ, not the meaning
