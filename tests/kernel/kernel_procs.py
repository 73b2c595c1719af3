"""In-test processors: small objects with hookimpls, registered through ``corec_register``."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corec_plugin_kit import CommandContext, HandlerError, hookimpl


class Greet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    times: int = Field(1, ge=1, le=3)


class Sleep(BaseModel):
    seconds: float = 0.0


async def greet(params: Greet, ctx: CommandContext) -> dict[str, Any]:
    """Say hello."""
    return {"greeting": " ".join([f"hello {params.name}"] * params.times), "key": ctx.key}


async def slow(params: Sleep, ctx: CommandContext) -> dict[str, Any]:
    import asyncio

    await asyncio.sleep(params.seconds)
    return {"slept": params.seconds}


async def refuse(params: Sleep, ctx: CommandContext) -> None:
    raise HandlerError("refused on purpose", details={"why": "test"})


async def crash(params: Sleep, ctx: CommandContext) -> None:
    raise ZeroDivisionError("division by zero")


def blocking_sleep(params: Sleep, ctx: CommandContext) -> dict[str, Any]:
    time.sleep(params.seconds)
    return {"thread": threading.current_thread().name, "main": threading.main_thread().name}


def processor(**hooks: Any) -> type:
    """A processor (a class) whose attributes are the given hook implementations."""
    return type("InTestProcessor", (), {n: staticmethod(hookimpl(f)) for n, f in hooks.items()})


def greeter(action: str = "greet") -> type:
    def corec_register_actions(register: Any) -> None:
        register(action, greet, Greet)

    return processor(corec_register_actions=corec_register_actions)


def fake_distribution(
    site: Path, dist: str, module: str, ep_name: str, source: str, version: str = "1.0"
) -> None:
    """Write a module and a ``.dist-info`` with a ``corec.processors`` entry point into ``site``.

    importlib.metadata finds it exactly as it finds a pip-installed distribution once ``site``
    is on ``sys.path`` (no pip run needed for the fast in-process tests).
    """
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[corec.processors]\n{ep_name} = {module}\n")
