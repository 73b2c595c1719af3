"""The worker's maintainer: what keeps a long run healthy, on a timer.

It renews the claims of long-running, parked and held entries (XCLAIM JUSTID, which does not
count a delivery), reclaims idle entries of dead consumers (XAUTOCLAIM, in ``reading``), probes
open circuit breakers with parked entries, updates the lag and pending gauges, trims the input
stream below the oldest entry any group still needs, removes dead consumers, purges old
records, and publishes the breakers and the process's figures (``runtime/published.py``,
``runtime/figures.py``) for other processes to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ResponseError

from ..envelopes import as_text as _s
from ..errors import DatabaseUnavailable
from . import figures, metrics, published
from .reading import id_key
from .state import WorkerState
from .transport import TRANSIENT_REDIS

if TYPE_CHECKING:
    from redis.typing import StreamIdT

log = logging.getLogger("corec_plugin_kit.worker")

#: How many ids one XCLAIM carries.
CLAIM_CHUNK = 500


def _chunk(ids: list[str], start: int) -> list[StreamIdT]:
    """:data:`CLAIM_CHUNK` of ``ids`` from ``start``, as redis-py's ``xclaim`` annotates them
    (its list is invariant: a ``list[str]`` is one, by a cast rather than a second copy)."""
    return cast("list[StreamIdT]", ids[start : start + CLAIM_CHUNK])


class Maintenance(WorkerState):
    """Claims, reclaims, breaker probes, gauges, trims, consumer pruning, record purges, the
    breakers and figures published."""

    _publishing: set[asyncio.Task[None]]

    async def _renew(self, ids: list[str]) -> None:
        """Reset the idle time of entries we still own (JUSTID: no delivery is counted)."""
        if not ids:
            return
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            for i in range(0, len(ids), CLAIM_CHUNK):
                await self.redis.xclaim(
                    self.stream, self.group, self.consumer, 0, _chunk(ids, i),
                    justid=True,
                )  # fmt: skip

    async def _release(self, ids: list[str]) -> None:
        """Make entries we cannot finish reclaimable at once by other consumers."""
        if not ids:
            return
        idle = self.cfg.claim_idle_ms + 1
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            for i in range(0, len(ids), CLAIM_CHUNK):
                await self.redis.xclaim(
                    self.stream, self.group, self.consumer, 0, _chunk(ids, i),
                    idle=idle, justid=True,
                )  # fmt: skip
            self.stats.released += len(ids)

    async def publish_breakers(self) -> None:
        """Write this worker's breaker states where other processes read them
        (``runtime/published.py``); a refusal (an ACL without it) costs nothing else."""
        if not self.breakers:
            return
        states = published.snapshot(self.breakers)
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            await published.publish(
                self.redis, published.breakers_key(self.cfg), self.consumer, states
            )

    async def withdraw_breakers(self) -> None:
        """This worker stops: its breakers are no one's now."""
        if self.streams.index != 0 or not self.breakers:
            return
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            await published.withdraw(self.redis, published.breakers_key(self.cfg), self.consumer)

    async def publish_figures(self) -> None:
        """Write this process's figures where other processes read them
        (``runtime/figures.py``), with the key's expiry; a refusal (an ACL without it) or an
        unreachable Redis costs nothing else: the next period writes them again."""
        breakers = published.snapshot(self.breakers)
        value = figures.snapshot(self.kernel, self.consumer, breakers)
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            await figures.publish(self.redis, figures.workers_key(self.cfg), value)

    async def withdraw_figures(self) -> None:
        """This worker stops: its figures are no one's."""
        if self.streams.index != 0 or not self.cfg.publish_figures:
            return
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            await figures.withdraw(self.redis, figures.workers_key(self.cfg), self.consumer)

    def _breaker_changed(self) -> None:
        task = asyncio.ensure_future(self.publish_breakers())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    def _retry_parked(self) -> None:
        for processor, queue in self.parked.items():
            breaker = self.breaker(processor)
            while queue and breaker.allow():
                entry = queue.popleft()
                self._parked_ids.discard(entry.entry_id)
                entry.taken_at = time.monotonic()
                entry.admitted = True
                self._spawn(entry)
                if breaker.current() != "closed":
                    break  # one probe at a time while half-open

    async def _update_gauges(self) -> None:
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            for group in await self.redis.xinfo_groups(self.stream):
                if _s(group.get("name")) == self.group:
                    metrics.PENDING.labels(self.stream, self.group).set(group.get("pending") or 0)
                    lag = group.get("lag")
                    if lag is not None:
                        metrics.LAG.labels(self.stream, self.group).set(lag)

    async def trim_input(self) -> None:
        """XTRIM MINID ~ below the oldest entry that any group has pending or not yet read."""
        if not self.cfg.trim_stream_in:
            return
        keep: list[str] = []
        for group in await self.redis.xinfo_groups(self.stream):
            keep.append(_s(group["last-delivered-id"]))
            if group.get("pending"):
                summary = await self.redis.xpending(self.stream, group["name"])
                if summary.get("min"):
                    keep.append(_s(summary["min"]))
        if keep:
            await self.redis.xtrim(self.stream, minid=min(keep, key=id_key), approximate=True)

    async def _prune_consumers(self, idle_ms: int) -> None:
        """Remove consumers of dead workers: idle past the bound and owning nothing."""
        from .consumers import prune_consumers

        removed = await prune_consumers(
            self.redis, self.stream, self.group, idle_ms, keep=self.consumer
        )
        if removed:
            log.info("removed %d dead consumers from %r: %s",
                     len(removed), self.group, ", ".join(removed[:20]))  # fmt: skip

    async def _purge(self, days: float) -> None:
        """Delete records older than ``records_retention_days`` (in batches, by the store)."""
        if self.store is None:
            return
        try:
            removed = await self.store.purge(timedelta(days=days))
        except DatabaseUnavailable as exc:
            log.warning("record purge skipped: %s", exc)
            return
        if removed:
            log.info("purged %d records older than %g days", removed, days)

    def _held_ids(self, now: float, renew_every: float) -> list[str]:
        """Entries whose claim needs renewing: running long, parked, or held while the
        database or Redis is away."""
        ids = [e.entry_id for e in self.inflight.values() if now - e.taken_at > renew_every]
        ids += [e.entry_id for q in self.parked.values() for e in q]
        ids += self._committing_ids
        return ids

    def _periodic_tasks(self) -> list[tuple[float, Callable[[], Awaitable[Any]]]]:
        """The periodic tasks, in the order they run, with their periods (seconds). Each looks
        its method up when it runs (as a direct call would), not when the list is made."""
        cfg = self.cfg
        tasks: list[tuple[float, Callable[[], Awaitable[Any]]]] = []
        if not self.burst:
            tasks.append((max(0.05, cfg.claim_idle_ms / 2000), lambda: self.reclaim()))
        tasks.append((5.0, lambda: self._update_gauges()))
        if self.streams.index == 0:  # the partitions of a process share their breakers
            tasks.append((published.REFRESH_S, lambda: self.publish_breakers()))
            if cfg.publish_figures:  # and their tallies, which are the process's
                tasks.append((figures.FIGURES_S, lambda: self.publish_figures()))
        tasks.append((cfg.trim_interval_s, lambda: self.trim_input()))
        idle = cfg.dead_consumer_idle_ms
        if idle is not None:
            tasks.append((min(300, idle / 2000), lambda: self._prune_consumers(idle)))
        retention = cfg.records_retention_days
        if self.store is not None and retention and self.streams.index == 0:
            # Purge expired records at start, then every hour (or half the retention if shorter);
            # the records are shared by the partitions: the first partition's worker purges.
            tasks.append((min(3600.0, retention * 43_200), lambda: self._purge(retention)))
        return tasks

    async def _maintain(self) -> None:
        renew_every = max(0.05, self.cfg.claim_idle_ms / 3000)
        tasks = self._periodic_tasks()
        last = [0.0] * len(tasks)
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(renew_every, 1.0))
            if self._stopping.is_set():
                return
            now = time.monotonic()
            try:
                await self._renew(self._held_ids(now, renew_every))
                self._retry_parked()
                for i, (period, task) in enumerate(tasks):
                    if now - last[i] >= period:
                        last[i] = now
                        await task()
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    continue  # the reader re-creates the group
                log.warning("maintenance: %s", exc)
            except TRANSIENT_REDIS as exc:
                log.debug("maintenance: Redis unreachable (%s)", exc)
