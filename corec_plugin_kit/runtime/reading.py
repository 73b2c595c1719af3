"""The worker's reader: XREADGROUP and XAUTOCLAIM, parsing, and record look-ups.

It takes at most ``concurrency`` entries at a time (``batch_size`` per read), parses each (an
invalid one is answered at once) and, with records on, looks the batch's command keys up in one
query: a key that already has an ``ok`` record is answered from it (``"replayed": true``), the
rest start one task each (``handling``). Entries with the same command key run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from redis.exceptions import ResponseError

from ..envelopes import as_text as _s
from ..envelopes import result_envelope
from ..errors import DatabaseUnavailable, StreamGone
from . import metrics
from .policy import parse_entry
from .state import Entry, WorkerState
from .transport import TRANSIENT_REDIS, read_group

log = logging.getLogger("corec_plugin_kit.worker")


class Reading(WorkerState):
    """Reads and claims entries, and starts their commands."""

    _recreated: deque[float]
    _read_task: asyncio.Task[Any] | None

    # ------------------------------------------------------------------ the group

    async def ensure_group(self) -> None:
        """Create the group (MKSTREAM) from ``group_start_id``; an existing group is fine."""
        try:
            await self.redis.xgroup_create(
                self.stream, self.group, id=self.cfg.group_start_id, mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _recreate_group(self, exc: BaseException) -> None:
        now = self.clock()
        self._recreated.append(now)
        if len(self._recreated) == self._recreated.maxlen and now - self._recreated[0] < 60:
            raise StreamGone(
                f"the consumer group {self.group!r} on {self.stream!r} keeps vanishing "
                f"(NOGROUP 5 times in a minute: {exc}); check what deletes it, then restart"
            )
        log.warning("group %r on %r is gone (%s); re-creating it", self.group, self.stream, exc)
        await self.ensure_group()

    # ------------------------------------------------------------------ taking entries

    def _take(self, raw: list[Any], deliveries: dict[str, int] | None = None) -> int:
        taken = 0
        fresh: list[Entry] = []
        now = time.monotonic()
        counts = deliveries or {}
        for entry_id, fields in raw:
            eid = entry_id.decode() if type(entry_id) is bytes else _s(entry_id)  # ASCII ids
            if eid in self.inflight or eid in self._parked_ids or eid in self._committing_ids:
                continue
            if fields is None:
                continue
            if isinstance(fields, list):  # as read_group gives them: [field, value, ...]
                fields = (
                    {fields[0]: fields[1]}
                    if len(fields) == 2
                    else dict(zip(fields[::2], fields[1::2], strict=False))
                )
            entry = Entry(eid, fields, counts.get(eid, 1), now)
            taken += 1
            if self._parse(entry):
                fresh.append(entry)
        self._queue(fresh)
        return taken

    def _parse(self, entry: Entry) -> bool:
        """Parse the entry's command (:func:`~.policy.parse_entry`); an invalid one is answered
        at once (False)."""
        self.inflight[entry.entry_id] = entry
        command, entry.reply_to, error = parse_entry(
            entry.fields, self.reply_rules, self.cfg.max_payload_bytes
        )
        entry.command = command
        if error is not None:
            self._answer_invalid(entry, error, time.perf_counter(), command)
            return False
        assert command is not None  # parse_entry returns a command or an error
        entry.key = command.get("id") or entry.entry_id
        entry.params = command["params"]
        return True

    def _queue(self, entries: list[Entry]) -> None:
        """Start parsed entries; with records on, look their keys up first (one query)."""
        if not entries:
            return
        if self.store is None or not self.cfg.replay_finished:
            for entry in entries:
                self._spawn(entry)
            return
        leaders = []
        for entry in entries:
            owner = self._keys.get(entry.key)
            if owner is not None and owner is not entry:
                self._followers.setdefault(entry.key, []).append(entry)
            else:
                self._keys[entry.key] = entry
                leaders.append(entry)
        if leaders:
            task = self._loop.create_task(self._admit(leaders), name="corec-admit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _admit(self, entries: list[Entry]) -> None:
        """Answer the entries whose key already has an ``ok`` record from it; run the rest."""
        store = self.store
        assert store is not None  # _queue admits only with records on
        attempt = 0
        while True:
            try:
                found = await store.find_ok([entry.key for entry in entries])
                break
            except DatabaseUnavailable as exc:
                attempt += 1
                if self._stopping.is_set():
                    for entry in entries:  # handed back at shutdown, deliveries untouched
                        self.inflight.pop(entry.entry_id, None)
                        self._release_key(entry)
                    return
                await self._backoff(attempt, "looking up records", exc)
            except Exception:
                # A lookup that fails for another reason must not stop the work: the
                # commands run (at-least-once, as with records off).
                log.exception("record lookup failed; running %d commands as new", len(entries))
                found = {}
                break
        for entry in entries:
            record = found.get(entry.key)
            if record is None:
                self._spawn(entry)
            else:
                self._replay(entry, record)

    def _replay(self, entry: Entry, record: Any) -> None:
        """Answer a command that already succeeded from its record (``"replayed": true``)."""
        envelope = result_envelope(
            entry.key,
            record.action,
            result=record.result,
            processor=record.processor,
            attempt=entry.deliveries,
            entry_id=entry.entry_id,
            replayed=True,
        )
        entry.record = False
        self.metrics.finished(record.processor, record.action, "replayed", 0.0)
        self._answer(entry, envelope)

    def _release_key(self, entry: Entry) -> None:
        """The entry left this worker: entries waiting on its key are queued again."""
        if self._keys.get(entry.key) is entry:
            del self._keys[entry.key]
            followers = self._followers.pop(entry.key, None)
            if followers and self._stopping.is_set():
                for follower in followers:  # never started: handed back at shutdown
                    self.inflight.pop(follower.entry_id, None)
            elif followers:
                self._queue(followers)

    # ------------------------------------------------------------------ reading

    def _room_left(self) -> int:
        """How many entries to read now.

        ``concurrency`` bounds the handlers running; finished entries waiting for the committer
        do not count against it, so reading goes on while a commit is in flight and the next
        commit is larger. That backlog is bounded by ``4 x batch_size``.
        """
        backlog = self._committing + len(self._done)
        if backlog > 4 * self.batch_size:
            return 0  # the committer is behind: let it catch up before reading more
        running = len(self.inflight) - len(self._done)
        return max(0, min(self.batch_size, self.concurrency - running))

    async def _read(self, last_id: str, block: int | None) -> list[Any]:
        room = self._room_left()
        return await read_group(
            self.redis, self.group, self.consumer, self.stream, last_id, room, block
        )

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = await self.redis.xpending_range(
            self.stream, self.group, min=min(ids, key=id_key), max=max(ids, key=id_key),
            count=len(ids) * 2 + 10, consumername=self.consumer,
        )  # fmt: skip
        return {_s(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def drain_own_pending(self) -> None:
        """On start, handle what this consumer name already owns (ID 0), then read ``>``."""
        last = "0"
        while not self._stopping.is_set():
            while self._room_left() <= 0:
                self._room.clear()
                await self._room.wait()
            raw = await self._read(last, None)
            raw = [item for item in raw if item[1] is not None]
            if not raw:
                return
            last = _s(raw[-1][0])
            counts = await self._delivery_counts([_s(i) for i, _ in raw])
            self._take(raw, counts)

    async def reclaim(self) -> int:
        """XAUTOCLAIM entries idle longer than ``claim_idle_ms`` (from dead consumers)."""
        start: Any = "0-0"
        total = 0
        while not self._stopping.is_set():
            room = self._room_left()
            if room <= 0:
                break
            resp = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.cfg.claim_idle_ms,
                start_id=start, count=room,
            )  # fmt: skip
            # Redis >= 7 answers [next, entries, deleted ids]; 6.2 answers [next, entries].
            next_id, claimed = resp[0], resp[1]
            claimed = [item for item in claimed if item[1] is not None and item[0] is not None]
            if claimed:
                counts = await self._delivery_counts([_s(i) for i, _ in claimed])
                taken = self._take(claimed, counts)
                metrics.REDELIVERIES.inc(taken)
                self.stats.reclaimed += taken
                total += taken
            if _s(next_id) in ("0-0", "0"):
                break
            start = next_id
        return total

    async def _read_loop(self) -> None:
        block = None if self.burst else self.cfg.block_ms
        attempt = 0
        while not self._stopping.is_set():
            if self._room_left() <= 0 or self.parked_count >= 4 * self.batch_size:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                raw = await self._read(">", block)
                if not raw and self.burst:
                    raw_claimed = await self.reclaim()
                    if not raw_claimed:
                        if await self._burst_finished():
                            return
                        continue
                attempt = 0
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._recreate_group(exc)
                    continue
                raise
            except TRANSIENT_REDIS as exc:
                attempt += 1
                await self._backoff(attempt, "XREADGROUP", exc)
                continue
            if raw:
                metrics.READS.inc()
                self._take(raw)

    async def _burst_finished(self) -> bool:
        """Burst mode, nothing new to read: True when nothing is in flight either.

        While work is still in flight, wait for it and answer False so the reader looks once
        more (entries may have arrived meanwhile). Parked entries (an open breaker) and
        entries left for redelivery stay pending for a later run.
        """
        if self.inflight or self._committing or self._done:
            while (self.inflight or self._committing or self._done) and not self._stopping.is_set():
                self._room.clear()
                await self._room.wait()
            return False
        return True


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
