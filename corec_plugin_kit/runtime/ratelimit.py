"""Rate limits of actions, shared by every worker of a deployment (``rate_limit`` in an
action's policy: ``corec_plugin_kit/policies.py``).

One Redis key per limited action, ``<stream_in>:rate:<action>`` (the streams' hash tag, so on a
cluster it sits with them), holds the time the next command may start (GCRA, the generic cell
rate algorithm, in microseconds of the Redis server's clock). A worker about to run a command
of the action reserves the next slot in one atomic script and waits until it comes: commands
are spaced ``1 / rate_limit`` seconds apart across all workers, ``rate_burst`` of them may run
back to back after a quiet spell. A reservation never refuses: a command waits its turn (and
holds its worker's concurrency while it does, which slows the reading down to the limit).

When the script cannot run (Redis away, a user without ``EVALSHA``), the command runs without
waiting and a warning is logged once: a limit is not worth losing commands over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from .connection import RedisClient

log = logging.getLogger("corec_plugin_kit.worker")

# KEYS[1] the action's key; ARGV[1] the spacing, ARGV[2] the burst tolerance (µs), ARGV[3] how
# many slots to reserve. Returns when the first may start, in µs from now (negative: at once);
# the others follow one spacing apart.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local spacing = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local after = tat + count * spacing
redis.call('SET', KEYS[1], after, 'PX', math.floor((after - now) / 1000) + 1000)
return tat - tolerance - now
"""


def rate_key(stream_in: str, action: str) -> str:
    return f"{stream_in}:rate:{action}"


class RateLimiter:
    """Reserves slots of rate-limited actions for one worker process.

    Commands of one action that wait at the same moment share one round trip: a single task
    per action reserves a slot for every command queued since its last call (so a burst of
    waiting commands never takes every pooled connection, which the batch commit needs, and
    the limiter itself does not cap the rate at one round trip per command).
    """

    def __init__(self, redis: RedisClient, stream_in: str) -> None:
        self.redis = redis
        self.stream_in = stream_in
        self._script = redis.register_script(_RESERVE)
        self._warned = False
        self._queued: dict[str, list[asyncio.Future[float]]] = {}
        self._reserving: dict[str, asyncio.Task[None]] = {}

    async def wait(self, action: str, rate: float, burst: int = 1) -> float:
        """Wait for the action's next slot; the seconds waited."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(action, []).append(future)
        if action not in self._reserving:
            spacing = max(1, round(1_000_000 / rate))
            task = asyncio.ensure_future(self._reserve(action, spacing, (burst - 1) * spacing))
            self._reserving[action] = task
        pause = await future
        if pause > 0:
            await asyncio.sleep(pause)
        return pause

    async def _reserve(self, action: str, spacing: int, tolerance: int) -> None:
        """Reserve slots for the queued commands of ``action`` until none is left."""
        try:
            while self._queued.get(action):
                waiting, self._queued[action] = self._queued[action], []
                try:
                    first = int(
                        await self._script(
                            keys=[rate_key(self.stream_in, action)],
                            args=[spacing, tolerance, len(waiting)],
                        )
                    )
                except RedisError as exc:
                    if not self._warned:
                        self._warned = True
                        log.warning("rate limit of %r not applied: %s: %s (logged once)",
                                    action, type(exc).__name__, exc)  # fmt: skip
                    first = -(10**12)  # run at once
                for index, future in enumerate(waiting):
                    if not future.done():  # its command may have been cancelled meanwhile
                        future.set_result(max(0, first + index * spacing) / 1_000_000)
        finally:
            del self._reserving[action]
