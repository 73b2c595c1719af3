"""The worker's time limit per command and how it runs a handler's first step.

The worker takes a handler's first step itself and arms the command's timer only when the
handler waits (most never do). What a handler can observe must not change: its limit counts
from the start, exceptions and cancellation reach it as with a plain ``await``, it runs in its
own task (``asyncio.current_task()``, timeouts of its own) and its context variables carry over
its waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from pydantic import BaseModel
from runtime_helpers import payload, pending, results

from corec_plugin_kit import CommandContext, hookimpl

_seen: contextvars.ContextVar[str] = contextvars.ContextVar("_seen", default="")


class Spin(BaseModel):
    spin: float = 0.0
    wait: float = 0.0


class Empty(BaseModel):
    n: int = 0


async def spin_then_wait(params: Spin, ctx: CommandContext) -> dict[str, Any]:
    time.sleep(params.spin)  # noqa: ASYNC251 - blocks the loop, as careless handlers do
    await asyncio.sleep(params.wait)
    return {"waited": params.wait}


async def recovers(params: Empty, ctx: CommandContext) -> dict[str, Any]:
    """An exception thrown into it while it waits is caught; it goes on waiting."""
    failing = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(failing.set_exception, KeyError("gone"))
    try:
        await failing
    except KeyError as exc:
        caught = str(exc)
    for _ in range(3):
        await asyncio.sleep(0)
    return {"caught": caught}


async def own_task(params: Empty, ctx: CommandContext) -> dict[str, Any]:
    """Its own task, its own timeout, its context variable carried over its waits."""
    task = asyncio.current_task()
    _seen.set(ctx.key)
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.05)
        own_timeout = False
    except asyncio.TimeoutError:
        own_timeout = True
    await asyncio.sleep(0.01)
    return {
        "same_task": asyncio.current_task() is task,
        "task_name": task.get_name() if task is not None else None,
        "own_timeout": own_timeout,
        "seen": _seen.get(),
    }


class Waits:
    @hookimpl
    def corec_register_actions(self, register: Any) -> None:
        register("spin_then_wait", spin_then_wait, Spin)
        register("recovers", recovers, Empty)
        register("own_task", own_task, Empty)


async def test_the_limit_counts_from_the_start_even_when_the_first_step_blocks(
    corec_register: Any, corec_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    corec_register(Waits(), name="waits")
    stream = corec_streams["stream_in"]
    # 0.6 s of blocking work against a 0.5 s limit, then a wait of 30 s: cancelled at its first
    # wait (the limit is already spent), not 0.5 s after it.
    await corec_redis.xadd(stream, payload("spin_then_wait", {"spin": 0.6, "wait": 30}, id="s"))
    await corec_redis.xadd(stream, payload("spin_then_wait", {"spin": 0, "wait": 0.01}, id="q"))
    kernel = corec_kernel(
        records=False, block_ms=100, handler_timeout_s=0.5, max_deliveries=1, **corec_streams
    )
    await corec_worker(kernel)

    got = await results(corec_redis, corec_streams["stream_out"])
    assert got["s"]["error"]["details"]["last_error"]["type"] == "timeout"
    assert got["s"]["duration_ms"] < 1000, got["s"]  # 1,100 if the timer started at the wait
    assert got["q"]["result"] == {"waited": 0.01}


async def test_a_handler_that_waits_sees_what_a_plain_await_gives(
    corec_register: Any, corec_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    corec_register(Waits(), name="waits")
    stream = corec_streams["stream_in"]
    for i in range(20):
        await corec_redis.xadd(stream, payload("own_task", {}, id=f"t{i}"))
        await corec_redis.xadd(stream, payload("recovers", {}, id=f"r{i}"))
    kernel = corec_kernel(records=False, block_ms=100, handler_timeout_s=5, **corec_streams)
    stats = await corec_worker(kernel)

    got = await results(corec_redis, corec_streams["stream_out"])
    assert stats.ok == 40
    names = set()
    for i in range(20):
        assert got[f"r{i}"]["result"] == {"caught": "'gone'"}
        mine = got[f"t{i}"]["result"]
        assert mine["same_task"] and mine["own_timeout"], mine
        assert mine["seen"] == f"t{i}"  # its own context, not another command's
        names.add(mine["task_name"])
        assert mine["task_name"] == got[f"t{i}"]["entry_id"]  # named after its stream entry
    assert len(names) == 20  # one task per command, never the reader's
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
