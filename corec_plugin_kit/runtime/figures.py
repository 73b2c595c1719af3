"""Each worker's figures, published in Redis so that every host's tools see every worker.

A worker process's figures are its own tallies (``runtime/metrics.py``: commands by outcome
and the duration histogram of each action), its commands in flight, its breakers and the
processors it runs. ``corec-kit manager stats`` and the operations console read them from one
hash, ``<stream_in>:workers`` (``{corec}:commands:workers`` for ``{corec}:commands``: the same
hash tag as the streams), one field per consumer, holding JSON::

    {"at", "consumer", "host", "pid", "version", "started", "processed", "in_flight",
     "partitions", "breakers": {processor: {"state", "failures"}},
     "processors": {name: version or null},
     "actions": {action: {"processor", "outcomes": {outcome: n}, "buckets": [n, ...], "sum"}}}

The partition-0 worker of each process writes its field every :data:`FIGURES_S` seconds
(``kernel.publish_figures``), together with a PEXPIRE of :data:`STALE_S`, so the hash vanishes
once every worker is gone, and deletes it when it stops. A field not refreshed for
:data:`STALE_S` is a dead worker's: readers leave it out, and delete it past :data:`FORGET_S`.

The figures are read from the tallies every few seconds; nothing is added to the work of a
command.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ResponseError

from .. import __version__
from ..envelopes import as_text as _s
from . import metrics

if TYPE_CHECKING:
    from ..config import KernelConfig
    from ..kernel import Kernel
    from .connection import RedisClient

#: How often a running worker writes its figures (seconds).
FIGURES_S = 2.0
#: A field older than this is a dead worker's; the key expires this long after the last write.
STALE_S = 3 * FIGURES_S
#: A dead worker's field older than this is deleted by the readers that come across it.
FORGET_S = 3600.0
#: The upper bounds (seconds) of the duration buckets; ``buckets`` has one more, for +Inf.
BUCKETS = metrics.BUCKETS
#: When this process loaded the worker (its start, give or take the imports).
STARTED = time.time()
_HOST = socket.gethostname()


def workers_key(cfg: KernelConfig) -> str:
    """The hash the workers of this deployment publish their figures in."""
    return f"{cfg.stream_in}:workers"


def actions() -> dict[str, dict[str, Any]]:
    """This process's tallies by action: its processor, its outcomes, its duration buckets
    (not cumulative, the last one +Inf) and the sum of its durations (seconds)."""
    out: dict[str, dict[str, Any]] = {}

    def of(processor: str, action: str) -> dict[str, Any]:
        empty = {"processor": processor, "outcomes": {}, "buckets": [0] * (len(BUCKETS) + 1)}
        return out.setdefault(action, {**empty, "sum": 0.0})

    for (processor, action, outcome), count in list(metrics._counts.items()):
        outcomes = of(processor, action)["outcomes"]
        outcomes[outcome] = outcomes.get(outcome, 0) + int(count)
    for (processor, action), tally in list(metrics._histograms.items()):
        figures = of(processor, action)
        pairs = zip(figures["buckets"], tally[:-1], strict=True)
        figures["buckets"] = [have + int(more) for have, more in pairs]
        figures["sum"] = round(figures["sum"] + tally[-1], 6)
    return {action: out[action] for action in sorted(out)}


def snapshot(kernel: Kernel, consumer: str, breakers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """This process's figures, as its worker ``consumer`` publishes them (``breakers`` as
    :func:`.published.snapshot` and ``RuntimeView.breaker_figures`` give them)."""
    by_action = actions()
    processed = sum(sum(a["outcomes"].values()) for a in by_action.values())
    loaded = {
        info.name: info.version
        for info in kernel.processors.infos.values()
        if info.status == "loaded"
    }
    return {
        "at": round(time.time(), 3),
        "consumer": consumer,
        "host": _HOST,
        "pid": os.getpid(),
        "version": __version__,
        "started": round(STARTED, 3),
        "processed": processed,
        "in_flight": sum(len(worker.inflight) for worker in list(metrics._workers)),
        "partitions": kernel.settings.kernel.partitions,
        "breakers": breakers,
        "processors": dict(sorted(loaded.items())),
        "actions": by_action,
    }


def runtime_snapshot(kernel: Kernel) -> dict[str, Any] | None:
    """The figures of the worker running this kernel in this process, as they are now
    (``None`` when none runs it)."""
    runtime = kernel.runtime
    if runtime is None:
        return None
    return snapshot(kernel, runtime.consumer, runtime.breaker_figures())


async def publish(redis: RedisClient, key: str, figures: dict[str, Any]) -> None:
    """Write one worker's field and push the key's expiry :data:`STALE_S` away, in one MULTI."""
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, figures["consumer"], orjson.dumps(figures))
    pipe.pexpire(key, int(STALE_S * 1000))
    await pipe.execute()


async def withdraw(redis: RedisClient, key: str, consumer: str) -> None:
    """This worker stops: its figures are no one's."""
    await redis.hdel(key, consumer)


async def read(
    redis: RedisClient, key: str, *, now: float | None = None
) -> dict[str, dict[str, Any]]:
    """The live workers' figures by consumer. Fields older than :data:`FORGET_S` (workers
    killed long ago, kept alive by the others' writes) are deleted, if this user may."""
    now = time.time() if now is None else now
    out: dict[str, dict[str, Any]] = {}
    forget: list[Any] = []
    for consumer, raw in (await redis.hgetall(key)).items():
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, KeyError):
            value = orjson.loads(raw)
            age = now - float(value["at"])  # not a dict, no "at": TypeError, KeyError
            if age <= STALE_S:
                out[_s(consumer)] = value
            elif age > FORGET_S:
                forget.append(consumer)
    if forget:
        with contextlib.suppress(ResponseError):  # NOPERM: a reader without HDEL
            await redis.hdel(key, *forget)
    return out


def compact(figures: dict[str, Any]) -> dict[str, Any]:
    """The few figures ``stats`` lists per worker."""
    fields = ("consumer", "host", "pid", "version", "started", "at", "processed", "in_flight")
    return {name: figures.get(name) for name in fields}
