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
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger("corec_plugin_kit.worker")

# KEYS[1] the action's key; ARGV[1] the spacing, ARGV[2] the burst tolerance, in µs.
# Returns how long to wait (µs) before the reserved slot.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local spacing = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local ttl = math.floor((tat + spacing - now) / 1000) + 1000
redis.call('SET', KEYS[1], tat + spacing, 'PX', ttl)
return wait
"""


def rate_key(stream_in: str, action: str) -> str:
    return f"{stream_in}:rate:{action}"


class RateLimiter:
    """Reserves slots of rate-limited actions for one worker process."""

    def __init__(self, redis: Any, stream_in: str) -> None:
        self.redis = redis
        self.stream_in = stream_in
        self._script = redis.register_script(_RESERVE)
        self._warned = False
        # One reservation in flight per action: a burst of waiting commands must not take
        # every pooled connection (the batch commit needs one).
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, action: str, rate: float, burst: int = 1) -> float:
        """Wait for the action's next slot; the seconds waited."""
        spacing = max(1, round(1_000_000 / rate))
        lock = self._locks.get(action)
        if lock is None:
            lock = self._locks[action] = asyncio.Lock()
        try:
            async with lock:
                waited_us = int(
                    await self._script(
                        keys=[rate_key(self.stream_in, action)],
                        args=[spacing, (burst - 1) * spacing],
                    )
                )
        except RedisError as exc:
            if not self._warned:
                self._warned = True
                log.warning("rate limit of %r not applied: %s: %s (logged once)",
                            action, type(exc).__name__, exc)  # fmt: skip
            return 0.0
        if waited_us <= 0:
            return 0.0
        await asyncio.sleep(waited_us / 1_000_000)
        return waited_us / 1_000_000
