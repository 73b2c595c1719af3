"""Helpers of the runtime tests (a uniquely named module: every test folder has a conftest)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

TESTS = Path(__file__).resolve().parent.parent


def payload(action: str, params: dict[str, Any], **extra: Any) -> dict[bytes, bytes]:
    return {b"payload": orjson.dumps({"action": action, "params": params, **extra})}


def flat(action: str, params: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {"action": action, "params": orjson.dumps(params), **extra}


async def results(redis: Any, stream: str) -> dict[str, dict[str, Any]]:
    """Every result on ``stream`` by command id (asserting no id appears twice)."""
    out: dict[str, dict[str, Any]] = {}
    for _eid, fields in await redis.xrange(stream):
        body = orjson.loads(fields[b"payload"])
        assert body["id"] not in out, f"duplicate result for {body['id']}"
        assert fields[b"id"].decode() == body["id"]
        assert fields[b"status"].decode() == body["status"]
        out[body["id"]] = body
    return out


async def pending(redis: Any, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


def subprocess_env(streams: dict[str, Any], **kernel: Any) -> dict[str, str]:
    """Environment for a ``corec-kit`` subprocess that loads echo_proc on these streams."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["COREC_PLUGINS"] = "echo_proc"
    env["COREC_LOAD_PROCESSORS"] = "echo_proc"
    settings = {"records": False, "metrics_port": 0, "block_ms": 100, **streams, **kernel}
    for key, value in settings.items():
        env[f"COREC_KERNEL__{key.upper()}"] = (
            orjson.dumps(value).decode() if not isinstance(value, str) else value
        )
    return env


Sender = Callable[..., Any]
