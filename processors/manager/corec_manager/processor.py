"""The manager processor: operational actions, answered from the kernel's own state."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corec_plugin_kit import CommandContext, InvalidParams, api, hookimpl

from . import __version__

_STARTED = time.time()


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    echo: Any = Field(None, description="returned unchanged in the result")


class DescribeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, description="the action to describe")


async def ping(params: PingParams, ctx: CommandContext) -> dict[str, Any]:
    """Answer pong (liveness of the routing path)."""
    return {"pong": True, "echo": params.echo, "key": ctx.key, "time": time.time()}


async def list_processors(params: NoParams, ctx: CommandContext) -> list[dict[str, Any]]:
    """List processors with their status, version and actions."""
    return api.processor_infos(ctx.kernel)


async def describe_action(params: DescribeParams, ctx: CommandContext) -> dict[str, Any]:
    """Describe an action: its processor and the JSON Schema of its params."""
    described = api.describe_action(ctx.kernel, params.action)
    if described is None:
        # The command itself is routed; what is wrong is the param it carries.
        raise InvalidParams(
            f"no action {params.action!r} is routed (run `corec-kit actions` to list them)",
            details=[{"loc": "action", "msg": "unknown action", "type": "unknown_action"}],
        )
    return described


async def health(params: NoParams, ctx: CommandContext) -> dict[str, Any]:
    """Report process, processors, Redis and records health."""
    kernel = ctx.kernel
    infos = api.processor_infos(kernel)
    report: dict[str, Any] = {
        "status": "ok",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "manager_version": __version__,
        "uptime_s": round(time.time() - _STARTED, 3),
        "processors": {
            "loaded": sorted(i["name"] for i in infos if i["status"] == "loaded"),
            "failed": sorted(i["name"] for i in infos if i["status"] == "failed"),
            "disabled": sorted(i["name"] for i in infos if i["status"] == "disabled"),
        },
        "actions": len(api.action_names(kernel)),
    }
    if report["processors"]["failed"]:
        report["status"] = "degraded"
    if kernel.redis is not None:
        try:
            await kernel.redis.ping()
            report["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            report["redis"] = f"unreachable: {type(exc).__name__}: {exc}"
            report["status"] = "degraded"
    else:
        report["redis"] = "not connected (in-process dispatch)"
    if kernel.redis is not None and report["redis"] == "ok":
        await _breakers(kernel, report)
    if kernel.store is not None:
        try:
            ok = bool(await kernel.store.ping())
        except Exception:  # noqa: BLE001 - reported, not raised
            ok = False
        report["records"] = "ok" if ok else "unreachable"
        if not ok:
            report["status"] = "degraded"
    else:
        report["records"] = "off"
    return report


async def _breakers(kernel: Any, report: dict[str, Any]) -> None:
    """The deployment's circuit breakers (each processor's worst state over the running
    workers); one open makes the status ``degraded``."""
    try:
        report["breakers"] = (await api.published_breakers(kernel))["breakers"]
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report["breakers"] = f"unknown: {type(exc).__name__}: {exc}"
        return
    if "open" in report["breakers"].values():
        report["status"] = "degraded"


@hookimpl
def corec_register_actions(register: Any) -> None:
    register("ping", ping, PingParams)
    register("list_processors", list_processors, NoParams)
    register("describe_action", describe_action, DescribeParams)
    register("health", health, NoParams)
    from .operations import register_operations

    register_operations(register)


@hookimpl
def corec_cli(group: Any) -> None:
    from .cli import add_cli

    add_cli(group)
