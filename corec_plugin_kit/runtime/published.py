"""Circuit breaker states, published in Redis for other processes to read.

A breaker lives in one worker process. So that ``corec-kit manager stats``, the ``health``
action and an operator on another host see it, each worker writes its breakers to one hash,
``<stream_in>:breakers`` (``{corec}:commands:breakers`` for ``{corec}:commands``: the same hash
tag, so the key sits with the deployment's streams): one field per consumer, holding JSON
``{"at": <unix time>, "breakers": {processor: {"state", "failures"}}}``. A worker writes its
field when a breaker changes state and every few seconds while it runs, and deletes it when it
stops. A field not refreshed for :data:`STALE_S` seconds belongs to a worker that died: readers
leave it out.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..envelopes import as_text as _s

if TYPE_CHECKING:
    from ..config import KernelConfig
    from .breaker import CircuitBreaker
    from .connection import RedisClient

#: How often a running worker refreshes its field (seconds).
REFRESH_S = 5.0
#: A field older than this is a dead worker's.
STALE_S = 3 * REFRESH_S
#: Worst first: a processor's state over all consumers is the worst of theirs.
_SEVERITY = {"open": 2, "half_open": 1, "closed": 0}


def breakers_key(cfg: KernelConfig) -> str:
    """The hash the workers of this deployment publish their breakers in."""
    return f"{cfg.stream_in}:breakers"


def snapshot(breakers: dict[str, CircuitBreaker]) -> dict[str, dict[str, Any]]:
    """What a worker publishes about its breakers."""
    return {
        name: {"state": breaker.current(), "failures": breaker.failures}
        for name, breaker in sorted(breakers.items())
    }


async def publish(redis: RedisClient, key: str, consumer: str, states: dict[str, Any]) -> None:
    """Write this consumer's field (``at`` = now)."""
    value = orjson.dumps({"at": round(time.time(), 3), "breakers": states})
    await redis.hset(key, consumer, value)


async def withdraw(redis: RedisClient, key: str, consumer: str) -> None:
    await redis.hdel(key, consumer)


async def read(
    redis: RedisClient, key: str, *, now: float | None = None
) -> dict[str, dict[str, Any]]:
    """The live consumers' breakers: ``{consumer: {processor: {"state", "failures"}}}``."""
    now = time.time() if now is None else now
    out: dict[str, dict[str, Any]] = {}
    for consumer, raw in (await redis.hgetall(key)).items():
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            value = orjson.loads(raw)
            if now - float(value["at"]) <= STALE_S and isinstance(value["breakers"], dict):
                out[_s(consumer)] = value["breakers"]
    return out


def merged(by_consumer: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each processor's worst state over the consumers (``open`` if any worker has it open)."""
    out: dict[str, str] = {}
    for breakers in by_consumer.values():
        for name, info in breakers.items():
            state = str(info.get("state", "closed")) if isinstance(info, dict) else "closed"
            if _SEVERITY.get(state, 0) >= _SEVERITY.get(out.get(name, "closed"), 0):
                out[name] = state
    return dict(sorted(out.items()))
