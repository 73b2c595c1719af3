"""The worker's committer: records first, then one MULTI per batch.

Per batch: the records are written (one round trip), then one transaction sends each entry's
dead letter (if any) and result, and one XACK for the batch. An entry is acknowledged only after
its record and result are durable; with records on, one batch's records are written while the
previous batch's transaction is on its way. If the database or Redis is down the batch is held (its
claims renewed) and retried with capped backoff. What an entry contains is confined to it: a
record the database refuses, a reply stream Redis refuses each become that entry's dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ..envelopes import dead_letter_args, failed_envelope
from ..errors import DatabaseUnavailable, DeadLettered
from ..partitions import StreamSet, stream_sets
from ..storage import Record, refuses_content
from . import metrics
from .state import Entry, WorkerState
from .transport import TRANSIENT_REDIS, pack_result, send_transaction, slot_of, xadd_head

if TYPE_CHECKING:
    from ..config import KernelConfig

log = logging.getLogger("corec_plugin_kit.worker")


@dataclass(frozen=True, slots=True)
class CommitLayout:
    """Where a batch's results, dead letters and acknowledgement go (pure: no I/O)."""

    stream: str
    group: str
    consumer: str
    stream_out: str
    dead_letter_stream: str
    trim: tuple[Any, ...]  # MAXLEN ~ n for every XADD, or nothing
    #: On a Redis Cluster, the hash slot of ``stream``: a transaction holds only keys of one
    #: slot, so XADDs to streams of other slots are sent on their own, before it.
    slot: int | None = None
    #: ``XADD stream_out [MAXLEN ~ n] *``, packed once (:func:`~.transport.xadd_head`);
    #: ``None`` on a cluster where ``stream_out`` is in another slot than ``stream``.
    out_head: tuple[int, bytes] | None = None

    @classmethod
    def of(
        cls,
        cfg: KernelConfig,
        consumer: str,
        *,
        cluster: bool = False,
        streams: StreamSet | None = None,
    ) -> CommitLayout:
        """The layout of one worker: ``streams`` is its partition's (default: the first)."""
        trim = ("MAXLEN", "~", cfg.stream_maxlen) if cfg.stream_maxlen else ()
        own = streams or stream_sets(cfg)[0]
        slot = slot_of(own.stream_in) if cluster else None
        apart = cluster and slot_of(own.stream_out) != slot  # its results go on their own
        return cls(
            own.stream_in, cfg.group, consumer, own.stream_out, own.dead_letter_stream, trim, slot,
            None if apart else xadd_head(own.stream_out, trim),
        )  # fmt: skip

    def dead_letter(self, entry: Entry, failed_at: str) -> list[Any]:
        """The XADD arguments of ``entry``'s dead letter (its fields, and why it failed)."""
        env = entry.envelope
        assert env is not None
        return dead_letter_args(
            entry.fields, entry.error_wire or env["error"], deliveries=entry.deliveries,
            consumer=self.consumer, failed_at=failed_at, entry_id=entry.entry_id,
        )  # fmt: skip

    def transaction(self, acked: list[Entry], failed_at: str) -> Layout:
        """MULTI, per entry its dead-letter XADD (if dead) and its result XADD (to
        ``reply_to`` or ``stream_out``), one XACK for all, EXEC. Also, per queued command,
        the entry whose result it writes (``None`` for a dead letter); and on a cluster the
        XADDs to other slots, with their entries, to send first. A result's XADD to
        ``stream_out`` comes packed (:func:`~.transport.pack_result`), the rest as tuples."""
        trim = self.trim
        commands: list[tuple[Any, ...] | bytes] = [("MULTI",)]
        owners: list[Entry | None] = []
        outside: list[tuple[tuple[Any, ...], Entry | None]] = []
        out_head = self.out_head
        for entry in acked:
            env = entry.envelope
            assert env is not None
            if entry.dead:
                dead = ("XADD", self.dead_letter_stream, *trim, "*",
                        *self.dead_letter(entry, failed_at))  # fmt: skip
                self._place(dead, None, commands, owners, outside)
            if entry.reply_to is None and out_head is not None:
                commands.append(pack_result(
                    out_head, env["id"], env["action"], env["status"], entry.payload, entry.data
                ))  # fmt: skip
                owners.append(entry)
                continue
            xadd: tuple[Any, ...] = (
                "XADD", entry.reply_to or self.stream_out, *trim, "*",
                "id", env["id"], "action", env["action"], "status", env["status"],
                "payload", entry.payload,
            )  # fmt: skip
            if entry.data is not None:
                xadd += ("data", entry.data)
            self._place(xadd, entry, commands, owners, outside)
        commands.append(("XACK", self.stream, self.group, *[e.entry_id for e in acked]))
        commands.append(("EXEC",))
        return commands, owners, outside

    def _place(
        self,
        command: tuple[Any, ...],
        owner: Entry | None,
        commands: list[tuple[Any, ...] | bytes],
        owners: list[Entry | None],
        outside: list[tuple[tuple[Any, ...], Entry | None]],
    ) -> None:
        if self.slot is not None and slot_of(command[1]) != self.slot:
            outside.append((command, owner))
        else:
            commands.append(command)
            owners.append(owner)


#: What :meth:`CommitLayout.transaction` returns.
Layout = tuple[
    list[tuple[Any, ...] | bytes], list[Entry | None], list[tuple[tuple[Any, ...], Entry | None]]
]


def record_of(entry: Entry, finished_at: datetime) -> Record:
    """The record of a finished entry, from its result envelope."""
    assert entry.envelope is not None
    return Record.from_result(
        entry.envelope, params=entry.params, deliveries=entry.deliveries, finished_at=finished_at
    )


class Committing(WorkerState):
    """Writes finished entries' records, results and dead letters, and acknowledges them."""

    async def _commit_loop(self) -> None:
        """Commit what finished, batch after batch, until stopped with nothing in flight.

        With records on, the commit is a pipeline of two steps: the records of a batch are
        written while the previous batch's transaction is on its way (:meth:`_send_after`);
        each transaction still waits for its own batch's records, and for the one before it.
        The pipeline is two batches deep, no more: when records are written faster than
        transactions are sent, taking a batch per write would queue transactions of an entry
        or two each behind one another, a backlog that never drains; waiting lets the next
        batch grow instead.
        """
        sending: asyncio.Task[None] | None = None  # the previous batch's transaction
        try:
            while True:
                if sending is not None and sending.done():
                    sending.result()  # re-raise a commit failure (it woke the loop)
                    sending = None
                if not self._done:
                    if self._stopping.is_set() and not self.inflight:
                        if sending is not None:
                            await sending
                        return  # shutting down and nothing left to commit
                    await self._done_event.wait()
                    self._done_event.clear()
                    continue
                batch, acked = self._take_batch()
                if self.store is None:
                    await self._send_after(batch, acked, None, True)
                    continue
                recorded = await self._write_records(acked) if acked else True
                previous = sending
                # Named: on 3.11 an unnamed task formats one ("Task-N") each batch.
                sending = self._loop.create_task(
                    self._send_after(batch, acked, previous, recorded), name="corec-send"
                )
                sending.add_done_callback(self._wake_on_failure)
                if previous is not None and not previous.done():
                    # Two batches deep: the next batch is taken once the transaction ahead
                    # of this one is done; what finishes meanwhile makes that batch larger.
                    await asyncio.wait((previous,))
        finally:
            if sending is not None and not sending.done():
                sending.cancel()  # the loop failed or was cancelled: so is its last send

    def _wake_on_failure(self, sending: asyncio.Task[None]) -> None:
        if not sending.cancelled() and sending.exception() is not None:
            self._done_event.set()

    def _take_batch(self) -> tuple[list[Entry], list[Entry]]:
        """Everything finished, now being committed; and those of it to acknowledge."""
        batch, self._done = self._done, []
        inflight, acked = self.inflight, []
        for entry in batch:
            inflight.pop(entry.entry_id, None)
            if entry.ack:
                acked.append(entry)
        self._committing += len(batch)
        self._committing_ids.update(entry.entry_id for entry in acked)
        return batch, acked

    async def _send_after(
        self,
        batch: list[Entry],
        acked: list[Entry],
        previous: asyncio.Task[None] | None,
        recorded: bool,
    ) -> None:
        """Once ``previous`` (the last batch's send) is done, send this batch's results and
        acknowledgement if its records are written (``recorded``); then let the entries go."""
        durable = False
        try:
            if previous is not None:
                await previous
            durable = recorded and (not acked or await self._send_results(acked))
        finally:
            self._committing -= len(batch)
            self._committing_ids.difference_update(entry.entry_id for entry in acked)
            if self._keys:  # command keys are tracked with records on only
                for entry in batch:
                    self._release_key(entry)
        if durable:
            self._count(batch)
        self._room.set()

    def _count(self, batch: list[Entry]) -> None:
        acked = [entry for entry in batch if entry.ack]
        for entry in acked:
            self.stats.processed += 1
            if entry.dead:
                self.stats.dead_lettered += 1
            if entry.envelope and entry.envelope["status"] == "ok":
                self.stats.ok += 1
            else:
                self.stats.errors += 1
        if self.budget is not None:
            self.budget.spend(len(acked))

    async def _send_results(self, acked: list[Entry]) -> bool:
        """MULTI(result XADDs, dead-letter XADDs, XACK), retried while Redis is away; True
        once durable, False when shutdown cut the retries short."""
        attempt = 0
        while True:
            try:
                failed = await self._multi(acked)
                break
            except TRANSIENT_REDIS as exc:
                attempt += 1
                if self._give_up():
                    return False
                await self._backoff(attempt, "committing results", exc)
                acked = await self._unsettled(acked)
                if not acked:
                    return True
        if failed:
            await self._undeliverable(failed)
        return True

    async def _unsettled(self, acked: list[Entry]) -> list[Entry]:
        """After a commit that failed with no answer: the entries it has not acknowledged.

        The connection may drop after the server ran the transaction but before its reply
        came back (a master killed mid-reply, whose replica got the transaction and took its
        place). Sending it again would answer those commands twice; an entry the group no
        longer lists as pending was acknowledged, by that same transaction, with its result.
        If Redis cannot tell, all are sent again (at-least-once, as ever).
        """
        layout = self.layout
        try:
            pipe = self.redis.pipeline(transaction=False)
            for entry in acked:
                pipe.xpending_range(layout.stream, layout.group, entry.entry_id, entry.entry_id, 1)
            replies = await pipe.execute(raise_on_error=False)
        except TRANSIENT_REDIS:
            return acked
        unsettled = [e for e, r in zip(acked, replies, strict=True) if not isinstance(r, list) or r]
        if len(unsettled) < len(acked):
            log.warning("%d of %d entries were committed before the connection dropped; "
                        "not sending their results again", len(acked) - len(unsettled),
                        len(acked))  # fmt: skip
        return unsettled

    async def _write_records(self, acked: list[Entry]) -> bool:
        """Write the batch's records; False when shutdown cut the wait for the database short.

        An outage, or a refusal that is not about the records' content (permissions, a
        schema changed under us...), holds the batch: claims renewed, retried with backoff,
        nothing acknowledged. A refusal of content (see :func:`refuses_content`) is narrowed
        down by writing the records one at a time: each record refused alone is its entry's
        dead letter, and the rest of the batch commits.
        """
        store = self.store
        assert store is not None
        now = datetime.now(timezone.utc)
        entries = [e for e in acked if e.record]
        attempt = 0
        while entries:
            try:
                await store.write_batch([record_of(e, now) for e in entries])
                return True
            except DatabaseUnavailable as exc:
                reason: BaseException = exc
            except Exception as exc:  # noqa: BLE001 - classified below; never stops the worker
                if refuses_content(exc):
                    return await self._write_one_by_one(entries, now)
                log.error("the database refused a batch of records (%s: %s); holding it",
                          type(exc).__name__, exc)  # fmt: skip
                reason = exc
            attempt += 1
            if self._give_up():
                return False
            await self._renew([e.entry_id for e in acked])
            await self._backoff(attempt, "writing records", reason)
        return True

    async def _write_one_by_one(self, entries: list[Entry], now: datetime) -> bool:
        store = self.store
        assert store is not None
        if len(entries) > 1:
            log.warning("the database refused a batch of %d records; writing them one by one",
                        len(entries))  # fmt: skip
        held: list[Entry] = []
        for entry in entries:
            try:
                await store.write_batch([record_of(entry, now)])
            except Exception as exc:  # noqa: BLE001 - classified below
                if refuses_content(exc):
                    await self._unrecordable(entry, exc, now)
                else:
                    held.append(entry)
        # Whatever failed for another reason (an outage that began meanwhile) is retried.
        return await self._write_records(held) if held else True

    async def _unrecordable(self, entry: Entry, exc: Exception, now: datetime) -> None:
        """The database refuses this entry's record: dead-letter it, keep a bare record."""
        store = self.store
        assert store is not None
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("the record of %s cannot be written (%s); dead-lettering it",
                    entry.entry_id, reason)  # fmt: skip
        env = entry.envelope
        assert env is not None
        ran = "ran and succeeded" if env["status"] == "ok" else "failed"
        dead = DeadLettered(
            f"the command {ran}, but its record cannot be written: {reason}",
            details={"record_error": reason, "status": env["status"]},
        )
        self._set_answer(entry, failed_envelope(env, dead), dead=True)
        bare = record_of(entry, now)
        bare.params = None
        with contextlib.suppress(DatabaseUnavailable, Exception):
            await store.write_batch([bare])

    async def _multi(self, acked: list[Entry]) -> list[tuple[Entry, Exception]]:
        """Send the batch's transaction (:meth:`CommitLayout.transaction`).

        Returns the entries whose result could not be written (their reply stream is not a
        stream, say); everything else in the transaction, the XACK included, took effect. On
        a cluster, XADDs to other slots go first, each on its own: a crash between them and
        the transaction leaves the entry pending (redelivered; at-least-once, as ever).
        """
        now = datetime.now(timezone.utc).isoformat()
        commands, owners, outside = self.layout.transaction(acked, now)
        for entry in acked:
            if entry.dead and entry.envelope is not None:  # an acked entry has its envelope
                self.metrics.dead_letter(entry.envelope["action"])
        failed: list[tuple[Entry, Exception]] = []
        for command, owner in outside:
            try:
                await self.redis.execute_command(*command)
            except ResponseError as exc:
                self._refused(owner, exc, failed)
        wanted = self.cfg.min_replicas_ack
        if wanted:
            wait = (wanted, self.cfg.min_replicas_timeout_ms)
            *replies, replicas = await send_transaction(self.redis, self.stream, commands, wait)
            if isinstance(replicas, Exception) or int(replicas) < wanted:
                metrics.REPLICATION_SHORT.inc()
                log.warning("a commit reached %s of %d replicas within %d ms (min_replicas_ack)",
                            replicas, wanted, wait[1])  # fmt: skip
        else:
            replies = await send_transaction(self.redis, self.stream, commands)
        for owner, reply in zip(owners, replies, strict=False):
            if isinstance(reply, Exception):
                self._refused(owner, reply, failed)
        ack = replies[-1] if replies else None
        if isinstance(ack, Exception):
            # NOGROUP: the group was deleted; the reader re-creates it. Results are written.
            log.warning("XACK failed: %s", ack)
        return failed

    def _refused(
        self, owner: Entry | None, exc: Exception, failed: list[tuple[Entry, Exception]]
    ) -> None:
        if owner is None:
            log.error("dead-letter stream %r refused an entry: %s",
                      self.layout.dead_letter_stream, exc)  # fmt: skip
        else:
            failed.append((owner, exc))

    async def _undeliverable(self, failed: list[tuple[Entry, Exception]]) -> None:
        """Results Redis refused (already acknowledged): dead-letter each, with the reason."""
        now = datetime.now(timezone.utc).isoformat()
        for entry, exc in failed:
            env = entry.envelope
            assert env is not None
            if entry.dead:  # its dead letter went out in the same MULTI: that is its answer
                log.warning("the result of %s cannot be written to %r (%s); it is dead-lettered",
                            entry.entry_id, entry.reply_to, exc)  # fmt: skip
                continue
            log.warning("the result of %s cannot be written to %r (%s); dead-lettering it",
                        entry.entry_id, entry.reply_to, exc)  # fmt: skip
            dead = DeadLettered(
                f"the reply stream {str(entry.reply_to)[:100]!r} cannot be written: {exc}",
                details={"reply_to": str(entry.reply_to)[:200], "result": env},
            )
            entry.error_wire = dead.to_wire()
            entry.dead = True
            self.metrics.dead_letter(env["action"])
            await self._send_dead_letter(self.layout.dead_letter(entry, now))

    async def _send_dead_letter(self, fields: list[Any]) -> None:
        for attempt in range(1, 6):
            try:
                await self.redis.execute_command(
                    "XADD", self.layout.dead_letter_stream, "*", *fields
                )
                return
            except TRANSIENT_REDIS as err:
                if self._give_up():
                    return
                await self._backoff(attempt, "dead-lettering an undeliverable result", err)
            except ResponseError as err:
                log.error("dead-letter stream %r refused an entry: %s",
                          self.layout.dead_letter_stream, err)  # fmt: skip
                return
