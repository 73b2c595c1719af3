"""The consumers of a group: list them, and remove the dead ones.

A worker killed with SIGKILL (OOM, lost host) never removes its consumer: it stays in the group
forever (its pending entries are reclaimed by the others, its name is not). :func:`prune_consumers`
removes consumers idle longer than a bound that own **no** pending entry.

Why it cannot drop work: XGROUP DELCONSUMER deletes the consumer's pending entries with it, so
the choice (``pending == 0``, idle past the bound, not ``keep``) and the deletion run together
in one Lua script: Redis runs nothing else in between, so no XREADGROUP/XCLAIM can hand the
consumer an entry after it was checked. Where scripts are refused (ACL without ``@scripting``)
the same check is repeated with XPENDING right before each DELCONSUMER; what remains there is the
round trip between that XPENDING and the DELCONSUMER, during which a consumer idle for the whole
bound would have to read or claim an entry at that very moment.

What remains either way is not a loss: a live worker that owns nothing may be removed when it
looks idle past the bound (stopped with SIGSTOP, frozen VM, partitioned from Redis, or, before
Redis 7.2, simply waiting on a quiet stream: there an XREADGROUP that delivers nothing does not
reset ``idle``). Its blocked or next XREADGROUP creates its consumer again, and it owned nothing
to lose. A busy worker renews the claims it holds every ``claim_idle_ms / 3`` and reads every
``block_ms``, so use a bound large compared with both: the default ``dead_consumer_idle_ms`` is
one hour.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ..envelopes import as_text as _s

if TYPE_CHECKING:
    from .connection import RedisClient

log = logging.getLogger(__name__)

# KEYS[1] stream; ARGV[1] group, ARGV[2] idle_ms, ARGV[3] the consumer to keep.
# XINFO CONSUMERS and the DELCONSUMERs run atomically: no consumer gains an entry in between.
_PRUNE_SCRIPT = """
local idle_ms = tonumber(ARGV[2])
local removed = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for i = 1, #row, 2 do c[row[i]] = row[i + 1] end
  local inactive = tonumber(c['inactive'] or -1)
  if c['name'] ~= ARGV[3] and tonumber(c['pending']) == 0 and tonumber(c['idle']) > idle_ms
      and (inactive < 0 or inactive > idle_ms) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    removed[#removed + 1] = c['name']
  end
end
return removed
"""


def _gone(exc: ResponseError) -> bool:
    """No stream or no group: nothing to list or prune."""
    text = str(exc)
    return "NOGROUP" in text or "no such key" in text.lower()


async def list_consumers(redis: RedisClient, stream: str, group: str) -> list[dict[str, Any]]:
    """XINFO CONSUMERS as ``{name, pending, idle_ms, inactive_ms}`` (``inactive_ms`` is None
    before Redis 7.2 and -1 for a consumer that never read or claimed anything)."""
    try:
        rows = await redis.xinfo_consumers(stream, group)
    except ResponseError as exc:
        if _gone(exc):
            return []
        raise
    out = []
    for row in rows:
        info = {_s(k): v for k, v in row.items()}
        inactive = info.get("inactive")
        out.append(
            {
                "name": _s(info["name"]),
                "pending": int(info.get("pending") or 0),
                "idle_ms": int(info.get("idle") or 0),
                "inactive_ms": None if inactive is None else int(inactive),
            }
        )
    return out


def is_dead(consumer: dict[str, Any], idle_ms: int, keep: str) -> bool:
    """What :func:`prune_consumers` removes, for one row of :func:`list_consumers`."""
    inactive = consumer["inactive_ms"]
    return (
        consumer["name"] != keep
        and consumer["pending"] == 0
        and consumer["idle_ms"] > idle_ms
        and (inactive is None or inactive < 0 or inactive > idle_ms)
    )


async def prune_consumers(
    redis: RedisClient, stream: str, group: str, idle_ms: int, *, keep: str
) -> list[str]:
    """Remove the consumers of ``group`` on ``stream`` idle longer than ``idle_ms`` that own no
    pending entry, never ``keep`` (the caller's own consumer); return the removed names.

    Idle is XINFO CONSUMERS ``idle`` (time since the last read or claim attempt); on Redis 7.2+
    ``inactive`` (since the last successful one) must be past the bound too. A missing stream or
    group removes nothing. See the module docstring for why no pending entry can be dropped.
    """
    if idle_ms < 0:
        raise ValueError("idle_ms must be >= 0")
    try:
        removed = await redis.eval(_PRUNE_SCRIPT, 1, stream, group, idle_ms, keep)
    except ResponseError as exc:
        if _gone(exc):
            return []
        # Scripting refused (ACL, disabled EVAL): the same checks, one round trip apart.
        log.debug("consumer prune script refused (%s); checking each consumer", exc)
        return await _prune_checked(redis, stream, group, idle_ms, keep=keep)
    return [_s(name) for name in removed or []]


async def _prune_checked(
    redis: RedisClient, stream: str, group: str, idle_ms: int, *, keep: str
) -> list[str]:
    """Without scripting: XINFO, then for each candidate XPENDING again right before
    DELCONSUMER (the window between those two is the one described in the module docstring)."""
    removed: list[str] = []
    for consumer in await list_consumers(redis, stream, group):
        if not is_dead(consumer, idle_ms, keep):
            continue
        name = consumer["name"]
        try:
            owned = await redis.xpending_range(
                stream, group, min="-", max="+", count=1, consumername=name
            )
            if owned:
                continue  # it read or claimed something since XINFO: alive after all
            dropped = await redis.xgroup_delconsumer(stream, group, name)
        except ResponseError as exc:
            if _gone(exc):
                break
            raise
        if dropped:
            # The window was hit: those entries are out of the PEL (never redelivered).
            log.error(
                "consumer %s gained %d pending entries while being removed from %s/%s",
                name, dropped, stream, group,
            )  # fmt: skip
        removed.append(name)
    return removed
