"""A processor used by the runtime tests and the benchmarks (loaded with COREC_PLUGINS=echo_proc).

Its actions model the cases a worker must handle: fast work, slow work, a dependency that is
down (a file flag stands for it, so subprocess workers see the same state), a handler's own
final failure, an unexpected exception, and CPU-bound work in a worker process or a thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from corec_plugin_kit import CommandContext, DependencyUnavailable, HandlerError, hookimpl


class EchoParams(BaseModel):
    n: int
    text: str = Field("", max_length=10_000)


class SleepParams(BaseModel):
    seconds: float = Field(ge=0, le=60)
    n: int = 0


class Empty(BaseModel):
    n: int = 0


async def echo(params: EchoParams, ctx: CommandContext) -> dict[str, Any]:
    return {"n": params.n, "text": params.text}


async def sleep(params: SleepParams, ctx: CommandContext) -> dict[str, Any]:
    await asyncio.sleep(params.seconds)
    return {"n": params.n, "slept": params.seconds}


def _down() -> bool:
    flag = os.environ.get("ECHO_DOWN_FILE")
    return bool(flag) and Path(flag).exists()


async def needs_dependency(params: Empty, ctx: CommandContext) -> dict[str, Any]:
    if _down():
        raise DependencyUnavailable("the echo dependency is down")
    return {"n": params.n, "attempt": ctx.attempt}


async def fail(params: Empty, ctx: CommandContext) -> None:
    raise HandlerError("this action always refuses")


async def boom(params: Empty, ctx: CommandContext) -> None:
    raise RuntimeError("unexpected")


def blocking_echo(params: EchoParams, ctx: CommandContext) -> dict[str, Any]:
    return {"n": params.n}


class BurnParams(BaseModel):
    seconds: float = Field(ge=0, le=600)
    pid_file: str = ""
    signal: int = 0
    n: int = 0


def burn(params: BurnParams, ctx: Any) -> dict[str, Any]:
    """Burn CPU in pure Python for ``seconds`` (registered as a process and a thread handler).

    Writes its pid to ``pid_file`` first (so a test can watch the process or thread it runs
    in), sends itself ``signal`` when non-zero (a worker that dies), and returns where it ran.
    """
    if params.pid_file:
        Path(params.pid_file).write_text(str(os.getpid()))
    if params.signal:
        os.kill(os.getpid(), params.signal)
    end = time.monotonic() + params.seconds
    spins = 0
    while time.monotonic() < end:
        spins += 1
    return {"n": params.n, "pid": os.getpid(), "key": ctx.key, "has_kernel": hasattr(ctx, "kernel")}


@hookimpl
def corec_register_actions(register: Any) -> None:
    register("echo", echo, EchoParams)
    register("sleep", sleep, SleepParams)
    register("needs_dependency", needs_dependency, Empty)
    register("fail", fail, Empty)
    register("boom", boom, Empty)
    register("blocking_echo", blocking_echo, EchoParams, blocking=True)
    register("burn", burn, BurnParams, blocking="process")
    register("burn_thread", burn, BurnParams, blocking=True)
