"""The stream worker: XREADGROUP -> dispatch -> record -> XADD result + XACK in one MULTI.

Three loops share one event loop:

* the **reader** takes at most ``concurrency`` entries at a time (``batch_size`` per
  XREADGROUP), parses each (an invalid one is answered at once) and, with records on, looks
  the batch's command keys up in one query: a key that already has an ``ok`` record is
  answered from it (``"replayed": true``), the rest start one task each;
* the **committer** collects finished entries and, per batch, writes their records (one round
  trip), then sends one MULTI with the result XADDs, the dead-letter XADDs and one XACK. An
  entry is acknowledged only after its record and result are durable; if the database or
  Redis is down the batch is held (its claims renewed) and retried with capped backoff;
* the **maintainer** reclaims idle entries of dead consumers (XAUTOCLAIM), renews the claims
  of long-running and parked entries (XCLAIM JUSTID, which does not count a delivery), probes
  open circuit breakers with parked entries, updates lag/pending metrics and trims the input
  stream below the oldest entry any group still needs.

Delivery is at-least-once: a worker that dies leaves its entries pending, and another worker
reclaims them after ``claim_idle_ms``. An entry whose ``max_deliveries``-th delivery fails goes
to the dead-letter stream (XADD there before the XACK, in the same MULTI). What an entry
contains is confined to it: a result that cannot be encoded, a record the database refuses, a
reply stream Redis refuses each turn into that entry's error result or dead letter
(docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..envelopes import as_text as _s
from ..envelopes import codex_data, dumps, parse_fields
from ..errors import (
    CorecError,
    DatabaseUnavailable,
    DeadLettered,
    InvalidCommand,
    StreamGone,
    UnknownAction,
)
from ..storage import Record, refuses_content
from . import metrics
from .breaker import STATE_VALUE, CircuitBreaker

if TYPE_CHECKING:
    from ..kernel import Kernel

log = logging.getLogger("corec_plugin_kit.worker")

TRANSIENT_REDIS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
# Errors that mean the command itself can never succeed: answered and dead-lettered at once.
NEVER_SUCCEEDS = ("invalid_command", "unknown_action", "invalid_params")

if sys.version_info >= (3, 11):
    _timeout_ctx = asyncio.timeout
else:  # pragma: no cover - 3.10 only
    from contextlib import asynccontextmanager

    from async_timeout import timeout as _async_timeout

    @asynccontextmanager
    async def _timeout_ctx(seconds: float) -> Any:
        # As on 3.11+: the builtin TimeoutError (an OSError), which the worker treats as a
        # transient Redis failure (reconnect, retry), where 3.10 raises asyncio.TimeoutError.
        try:
            async with _async_timeout(seconds):
                yield
        except asyncio.TimeoutError:
            raise TimeoutError(f"no reply from Redis within {seconds:g}s") from None


if sys.version_info >= (3, 12):

    def _start(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        # Eager start: a handler that never suspends finishes without a trip through the loop.
        # The loop is passed explicitly: without it the task looks the loop up through the
        # policy, which under uvloop.run() has none and fails at the first command.
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:  # pragma: no cover - version dependent

    def _start(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        return loop.create_task(coro)


_pack: Callable[[tuple[Any, ...]], bytes]
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])

    def _pack(command: tuple[Any, ...]) -> bytes:
        out = [b"*%d\r\n" % len(command)]
        for arg in command:
            if not isinstance(arg, bytes):
                arg = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(out)


@dataclass(slots=True)
class Entry:
    """One stream entry this worker owns (in flight, parked, or waiting to be committed)."""

    entry_id: str
    fields: dict[Any, Any]
    deliveries: int = 1
    taken_at: float = field(default_factory=time.monotonic)
    processor: str | None = None
    # filled when finished:
    envelope: dict[str, Any] | None = None
    reply_to: str | None = None
    ack: bool = False
    dead: bool = False
    error_wire: dict[str, Any] | None = None
    params: Any = None
    task: asyncio.Task[Any] | None = None
    timed_out: bool = False
    admitted: bool = False  # the breaker already let it in (a parked entry being retried)
    command: dict[str, Any] | None = None  # parsed once, when taken (what parsed, if refused)
    key: str = ""  # the command key: the envelope's ``id``, else the entry id
    payload: bytes = b""  # the result envelope as JSON, encoded when answered
    data: bytes | None = None  # codex's response JSON: only for commands sent as `data`
    record: bool = True  # False: answered from an existing record, nothing to write


@dataclass
class WorkerStats:
    """Counts of one worker run (printed by ``corec-kit run``)."""

    processed: int = 0
    ok: int = 0
    errors: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    released: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Worker:
    """Consume ``kernel.settings.kernel.stream_in`` with one consumer of the group.

    :param kernel: a built :class:`~corec_plugin_kit.kernel.Kernel` (its dispatcher is used).
    :param redis: a ``redis.asyncio.Redis`` with ``decode_responses=False``.
    :param store: the record store (``None`` = records off).
    :param burst: exit once no new or reclaimable entry is left.
    :param max_commands: stop after acknowledging this many entries.
    :param reconnect: called (sync) before retrying after a Redis connection error, e.g. to
        restart the embedded server.
    """

    def __init__(
        self,
        kernel: Kernel,
        redis: Any,
        store: Any = None,
        *,
        burst: bool = False,
        max_commands: int | None = None,
        concurrency: int | None = None,
        consumer: str | None = None,
        reconnect: Any = None,
        clock: Any = time.monotonic,
    ) -> None:
        cfg = kernel.settings.kernel
        self.kernel = kernel
        self.cfg = cfg
        self.redis = redis
        self.store = store
        self.burst = burst
        self.max_commands = max_commands
        self.concurrency = concurrency or cfg.concurrency
        self.batch_size = cfg.batch_size
        self.stream = cfg.stream_in
        self.group = cfg.group
        self.consumer = consumer or cfg.consumer_name()
        self.reconnect = reconnect
        self.clock = clock
        self.stats = WorkerStats()
        self.dispatcher = kernel.dispatcher
        self.metrics = metrics.Recorder(set(kernel.routing), self)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.parked: dict[str, deque[Entry]] = {}
        self._parked_ids: set[str] = set()
        self._committing_ids: set[str] = set()  # finished, being recorded and acknowledged
        # Command keys of the entries this worker owns, and entries with the same key that
        # wait for the first to finish (then they are looked up again: answered from its
        # record when it succeeded). Only with records on.
        self._keys: dict[str, Entry] = {}
        self._followers: dict[str, list[Entry]] = {}
        self._reply_pattern = re.compile(cfg.reply_to_pattern) if cfg.reply_to_pattern else None
        self._refused_replies = {cfg.stream_in, cfg.dead_letter_stream}
        self.inflight: dict[str, Entry] = {}  # entry id -> entry being handled
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done: list[Entry] = []
        self._done_event = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._committing = 0
        self._acked = 0
        self._recreated: deque[float] = deque(maxlen=5)
        self._maxlen = cfg.stream_maxlen
        self._read_task: asyncio.Task[Any] | None = None
        self._loop: Any = None  # set by run()
        self._grace_deadline: float | None = None  # set when shutdown starts

    # ------------------------------------------------------------------ helpers

    def breaker(self, processor: str) -> CircuitBreaker:
        breaker = self.breakers.get(processor)
        if breaker is None:
            cb = self.cfg.circuit_breaker
            gauge = metrics.CIRCUIT.labels(processor)
            gauge.set(0)

            def changed(state: str, processor: str = processor) -> None:
                gauge.set(STATE_VALUE[state])
                log.warning("circuit breaker of %r is now %s", processor, state)

            breaker = CircuitBreaker(
                cb.max_failures, cb.reset_timeout, clock=self.clock, on_change=changed
            )
            self.breakers[processor] = breaker
        return breaker

    @property
    def parked_count(self) -> int:
        return sum(len(q) for q in self.parked.values())

    def stop(self) -> None:
        """Stop reading at once; in-flight entries get ``shutdown_grace_s`` to finish."""
        if not self._stopping.is_set():
            log.info("stopping: no new reads; finishing %d in flight", len(self.inflight))
            self._stopping.set()
            self._room.set()
            self._done_event.set()

    async def _backoff(self, attempt: int, what: str, exc: BaseException) -> None:
        delay = min(5.0, 0.05 * (2 ** min(attempt, 10))) * (0.5 + random.random() / 2)  # noqa: S311
        log.warning("%s failed (%s: %s); retrying in %.2fs", what, type(exc).__name__, exc, delay)
        if self.reconnect is not None and isinstance(exc, TRANSIENT_REDIS):
            with contextlib.suppress(Exception):
                self.reconnect()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # ------------------------------------------------------------------ group

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

    # ------------------------------------------------------------------ reading

    def _take(self, raw: list[Any], deliveries: dict[str, int] | None = None) -> int:
        taken = 0
        fresh: list[Entry] = []
        for entry_id, fields in raw:
            eid = _s(entry_id)
            if eid in self.inflight or eid in self._parked_ids or eid in self._committing_ids:
                continue
            if fields is None:
                continue
            entry = Entry(eid, fields, (deliveries or {}).get(eid, 1))
            taken += 1
            if self._parse(entry):
                fresh.append(entry)
        self._queue(fresh)
        return taken

    def _parse(self, entry: Entry) -> bool:
        """Parse the entry's command; an invalid one is answered at once (False)."""
        self.inflight[entry.entry_id] = entry
        try:
            command = parse_fields(entry.fields, self.cfg.max_payload_bytes)
            entry.key = command.get("id") or entry.entry_id
            entry.command = command
            self._check_reply_to(command.get("reply_to"))
        except CorecError as exc:
            partial = entry.command = entry.command or exc.command
            if partial is not None and exc.command is partial:
                try:  # the envelope is fine, the params are not: answer where it asks
                    self._check_reply_to(partial.get("reply_to"))
                    entry.reply_to = partial.get("reply_to")
                except InvalidCommand:
                    pass
            self._answer_invalid(entry, exc, time.perf_counter(), partial)
            return False
        entry.reply_to = command.get("reply_to")
        entry.params = command["params"]
        return True

    def _check_reply_to(self, name: str | None) -> None:
        """The reply stream rules (docs/protocol.md): bounded length, never the input or the
        dead-letter stream, and matching ``reply_to_pattern`` when one is configured."""
        if name is None:
            return
        limit = self.cfg.reply_to_max_length
        if len(name) > limit:
            raise InvalidCommand(
                f"`reply_to` is {len(name)} characters, over reply_to_max_length={limit}"
            )
        if name in self._refused_replies:
            raise InvalidCommand(
                f"`reply_to` may not name the input or dead-letter stream ({name!r})"
            )
        pattern = self._reply_pattern
        if pattern is not None and pattern.fullmatch(name) is None:
            raise InvalidCommand(
                f"`reply_to` {name[:100]!r} does not match kernel.reply_to_pattern "
                f"({pattern.pattern!r})"
            )

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
            task = self._loop.create_task(self._admit(leaders))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _admit(self, entries: list[Entry]) -> None:
        """Answer the entries whose key already has an ``ok`` record from it; run the rest."""
        attempt = 0
        while True:
            try:
                found = await self.store.find_ok([entry.key for entry in entries])
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
        envelope = {
            "id": entry.key,
            "action": record.action,
            "status": "ok",
            "result": record.result,
            "error": None,
            "processor": record.processor,
            "attempt": entry.deliveries,
            "duration_ms": 0.0,
            "entry_id": entry.entry_id,
            "replayed": True,
        }
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

    def _spawn(self, entry: Entry) -> None:
        self.inflight[entry.entry_id] = entry
        entry.timed_out = False
        task = entry.task = _start(self._loop, self._handle(entry))
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
        resp = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: last_id}, count=room, block=block
        )
        if not resp:
            return []
        return list(resp[0][1])

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = await self.redis.xpending_range(
            self.stream, self.group, min=min(ids, key=_id_key), max=max(ids, key=_id_key),
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

    # ------------------------------------------------------------------ handling

    async def _handle(self, entry: Entry) -> None:
        try:
            await self._handle_inner(entry)
        except asyncio.CancelledError:
            # Shutdown past the grace period: the entry stays pending for another consumer.
            self.inflight.pop(entry.entry_id, None)
            self._release_key(entry)
            raise
        except Exception as exc:  # pragma: no cover - a kit bug: answer, dead-letter, go on
            log.exception("worker failed on entry %s; dead-lettering it", entry.entry_id)
            from ..errors import HandlerError

            error = HandlerError(
                f"internal error in the worker: {type(exc).__name__}: {exc} (please report it)"
            )
            self._answer_invalid(entry, error, time.perf_counter(), entry.command)

    async def _handle_inner(self, entry: Entry) -> None:
        start = time.perf_counter()
        command = entry.command
        assert command is not None  # parsed when taken
        action = command["action"]
        spec = self.dispatcher.routing.get(action)
        if spec is None:
            self._answer_invalid(entry, UnknownAction(action), start, command)
            return
        entry.processor = spec.processor
        breaker = self.breaker(spec.processor)
        admitted, entry.admitted = entry.admitted, False
        if not admitted and not breaker.allow():
            self._park(entry)
            return
        # One timer per command (cheaper than a timeout context): it cancels the task.
        timer = self._loop.call_later(self.dispatcher.timeout_for(spec), self._timed_out, entry)
        try:
            envelope, error = await self.dispatcher.dispatch(
                command, entry_id=entry.entry_id, attempt=entry.deliveries, timeout=False
            )
        except asyncio.CancelledError:
            if not entry.timed_out:
                raise
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            error = self.dispatcher.timeout_error(spec)
            envelope = {
                "id": entry.key,
                "action": action,
                "status": "error",
                "result": None,
                "error": error.to_wire(),
                "processor": spec.processor,
                "attempt": entry.deliveries,
                "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                "entry_id": entry.entry_id,
            }
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        if error is None:
            breaker.success()
            self._answer(entry, envelope)
            self.metrics.finished(spec.processor, action, "ok", seconds)
            return
        if not error.transient:
            breaker.release()
            self._answer(entry, envelope, dead=error.wire_type in NEVER_SUCCEEDS)
            self.metrics.finished(spec.processor, action, error.wire_type, seconds)
            return
        breaker.failure()
        self.metrics.finished(spec.processor, action, error.wire_type, seconds)
        if breaker.current() != "closed":
            # The processor's dependency looks down: hold the entry (its claim renewed, its
            # delivery count untouched) and never dead-letter it for that.
            self._park(entry)
        elif entry.deliveries >= self.cfg.max_deliveries:
            self._dead_letter(entry, envelope, error)
        else:
            self.stats.retried += 1
            self._finish(entry)  # not acked: redelivered after claim_idle_ms

    def _timed_out(self, entry: Entry) -> None:
        task = entry.task
        if task is not None and not task.done():
            entry.timed_out = True
            task.cancel()

    def _answer_invalid(
        self,
        entry: Entry,
        exc: CorecError,
        start: float,
        command: dict[str, Any] | None = None,
    ) -> None:
        envelope = {
            "id": (command or {}).get("id") or entry.entry_id,
            # From the raw field when the command did not parse: made safe to record.
            "action": (command or {}).get("action")
            or _s(entry.fields.get(b"action", b""))[:100].replace("\x00", "\ufffd"),
            "status": "error",
            "result": None,
            "error": exc.to_wire(),
            "processor": None,
            "attempt": entry.deliveries,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            "entry_id": entry.entry_id,
        }
        action = str(envelope["action"])
        self.metrics.finished(None, action, exc.wire_type, time.perf_counter() - start)
        self._answer(entry, envelope, dead=True)

    def _answer(self, entry: Entry, envelope: dict[str, Any], *, dead: bool = False) -> None:
        self._set_answer(entry, envelope, dead=dead)
        self._finish(entry)

    def _set_answer(self, entry: Entry, envelope: dict[str, Any], *, dead: bool = False) -> None:
        """Encode the result once, here: what cannot be encoded is confined to this entry.

        A command that came in codex's ``data`` form also gets codex's response as ``data``.
        """
        codex = _codex(entry)
        try:
            entry.payload = dumps(envelope)
            entry.data = codex_data(envelope) if codex else None
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            envelope = _unencodable(envelope, exc)
            entry.payload = dumps(envelope)
            entry.data = codex_data(envelope) if codex else None
        entry.envelope = envelope
        entry.ack = True
        entry.dead = dead
        if dead:
            entry.error_wire = envelope["error"]

    def _dead_letter(self, entry: Entry, envelope: dict[str, Any], error: CorecError) -> None:
        dead = DeadLettered(
            f"{envelope['action']!r} failed {entry.deliveries} times "
            f"(max_deliveries={self.cfg.max_deliveries}); last error: {error.message}",
            details={"last_error": error.to_wire(), "deliveries": entry.deliveries},
        )
        envelope = {**envelope, "error": dead.to_wire()}
        self._answer(entry, envelope, dead=True)

    def _park(self, entry: Entry) -> None:
        # The entry keeps its command key while parked: same-key entries wait behind it.
        self.inflight.pop(entry.entry_id, None)
        self.parked.setdefault(entry.processor or "", deque()).append(entry)
        self._parked_ids.add(entry.entry_id)
        self._room.set()

    def _finish(self, entry: Entry) -> None:
        self._done.append(entry)
        self._done_event.set()
        # A handler slot is free: the reader may go on while the committer records this one.
        self._room.set()

    # ------------------------------------------------------------------ committing

    def _record(self, entry: Entry, now: datetime) -> Any:
        env = entry.envelope
        assert env is not None
        return Record(
            command_key=env["id"],
            action=env["action"],
            processor=env["processor"],
            status=env["status"],
            params=entry.params,
            result=env["result"],
            error=env["error"],
            deliveries=entry.deliveries,
            created_at=None,
            finished_at=now,
            duration_ms=env["duration_ms"],
        )

    async def _commit(self, batch: list[Entry]) -> bool:
        """Record, then MULTI(result XADDs, dead-letter XADDs, XACK). True once durable."""
        acked = [e for e in batch if e.ack]
        if not acked:
            return True
        if self.store is not None and not await self._write_records(acked):
            return False
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
        if failed:
            await self._undeliverable(failed)
        return True

    async def _write_records(self, acked: list[Entry]) -> bool:
        """Write the batch's records; False when shutdown cut the wait for the database short.

        An outage, or a refusal that is not about the records' content (permissions, a
        schema changed under us...), holds the batch: claims renewed, retried with backoff,
        nothing acknowledged. A refusal of content (see :func:`refuses_content`) is narrowed
        down by writing the records one at a time: each record refused alone is its entry's
        dead letter, and the rest of the batch commits.
        """
        now = datetime.now(timezone.utc)
        entries = [e for e in acked if e.record]
        attempt = 0
        while entries:
            try:
                await self.store.write_batch([self._record(e, now) for e in entries])
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
        if len(entries) > 1:
            log.warning("the database refused a batch of %d records; writing them one by one",
                        len(entries))  # fmt: skip
        held: list[Entry] = []
        for entry in entries:
            try:
                await self.store.write_batch([self._record(entry, now)])
            except Exception as exc:  # noqa: BLE001 - classified below
                if refuses_content(exc):
                    await self._unrecordable(entry, exc, now)
                else:
                    held.append(entry)
        # Whatever failed for another reason (an outage that began meanwhile) is retried.
        return await self._write_records(held) if held else True

    async def _unrecordable(self, entry: Entry, exc: Exception, now: datetime) -> None:
        """The database refuses this entry's record: dead-letter it, keep a bare record."""
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
        failed = {**env, "status": "error", "result": None, "error": dead.to_wire()}
        self._set_answer(entry, failed, dead=True)
        bare = self._record(entry, now)
        bare.params = None
        with contextlib.suppress(DatabaseUnavailable, Exception):
            await self.store.write_batch([bare])

    def _give_up(self) -> bool:
        """During shutdown past the grace period, stop retrying (entries stay pending)."""
        deadline = self._grace_deadline
        return deadline is not None and time.monotonic() > deadline

    async def _multi(self, acked: list[Entry]) -> list[tuple[Entry, Exception]]:
        """One MULTI: dead-letter XADDs, result XADDs, one XACK, EXEC.

        Packed with hiredis in one buffer and sent on a pooled connection: redis-py's pipeline
        packs each argument in Python, which was a third of the loop's time. Returns the
        entries whose result could not be written (their reply stream is not a stream, say);
        everything else in the transaction, the XACK included, took effect.
        """
        trim: tuple[Any, ...] = ("MAXLEN", "~", self._maxlen) if self._maxlen else ()
        default_reply = self.cfg.stream_out
        now = datetime.now(timezone.utc).isoformat()
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        owners: list[Entry | None] = []  # per queued command: the entry whose result it is
        for entry in acked:
            env = entry.envelope
            assert env is not None
            if entry.dead:
                commands.append(
                    (
                        "XADD",
                        self.cfg.dead_letter_stream,
                        *trim,
                        "*",
                        *self._dead_fields(entry, now),
                    )
                )
                owners.append(None)
                self.metrics.dead_letter(env["action"])
            xadd: tuple[Any, ...] = (
                "XADD", entry.reply_to or default_reply, *trim, "*",
                "id", env["id"], "action", env["action"], "status", env["status"],
                "payload", entry.payload,
            )  # fmt: skip
            if entry.data is not None:
                xadd += ("data", entry.data)
            commands.append(xadd)
            owners.append(entry)
        commands.append(("XACK", self.stream, self.group, *[e.entry_id for e in acked]))
        commands.append(("EXEC",))
        replies = await self._send_transaction(commands)
        failed: list[tuple[Entry, Exception]] = []
        for owner, reply in zip(owners, replies, strict=False):
            if isinstance(reply, Exception):
                if owner is None:
                    log.error("dead-letter stream %r refused an entry: %s",
                              self.cfg.dead_letter_stream, reply)  # fmt: skip
                else:
                    failed.append((owner, reply))
        ack = replies[-1] if replies else None
        if isinstance(ack, Exception):
            # NOGROUP: the group was deleted; the reader re-creates it. Results are written.
            log.warning("XACK failed: %s", ack)
        return failed

    def _dead_fields(self, entry: Entry, now: str) -> list[Any]:
        env = entry.envelope
        assert env is not None
        fields = dict(entry.fields)
        fields.update(
            {
                b"error": dumps(entry.error_wire or env["error"]),
                b"deliveries": str(entry.deliveries),
                b"last_consumer": self.consumer,
                b"failed_at": now,
                b"entry_id": entry.entry_id,
            }
        )
        return [item for pair in fields.items() for item in pair]

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
            fields = self._dead_fields(entry, now)
            self.metrics.dead_letter(env["action"])
            for attempt in range(1, 6):
                try:
                    await self.redis.execute_command(
                        "XADD", self.cfg.dead_letter_stream, "*", *fields
                    )
                    break
                except TRANSIENT_REDIS as err:
                    if self._give_up():
                        return
                    await self._backoff(attempt, "dead-lettering an undeliverable result", err)
                except ResponseError as err:
                    log.error("dead-letter stream %r refused an entry: %s",
                              self.cfg.dead_letter_stream, err)  # fmt: skip
                    break

    async def _send_transaction(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send MULTI ... EXEC packed; returns EXEC's replies (errors as exception objects)."""
        pack = _pack
        data = b"".join([pack(command) for command in commands])
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        # redis-py wraps each read in a timeout context; read the already-buffered +QUEUED
        # replies through its parser directly when it has one, under one timeout for all.
        parser = getattr(conn, "_parser", None)
        read = getattr(parser, "read_response", None) or conn.read_response
        try:
            await conn.send_packed_command(data, check_health=False)
            async with _timeout_ctx(60):
                queued_error: Exception | None = None
                for _ in range(len(commands) - 1):
                    reply = await read()  # +OK, then +QUEUED per command
                    if isinstance(reply, Exception) and queued_error is None:
                        queued_error = reply
                replies = await read()
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if isinstance(replies, Exception):
            raise queued_error or replies  # EXECABORT: nothing took effect
        if replies is None:
            raise ResponseError("EXEC aborted the transaction")
        return list(replies)

    async def _commit_loop(self) -> None:
        while True:
            if not self._done:
                if self._stopping.is_set() and not self.inflight:
                    return  # shutting down and nothing left to commit
                await self._done_event.wait()
                self._done_event.clear()
                continue
            batch, self._done = self._done, []
            self._committing = len(batch)
            for entry in batch:
                self.inflight.pop(entry.entry_id, None)
            self._committing_ids = {entry.entry_id for entry in batch if entry.ack}
            try:
                durable = await self._commit(batch)
            finally:
                self._committing = 0
                self._committing_ids = set()
                for entry in batch:
                    self._release_key(entry)
            if durable:
                for entry in batch:
                    if not entry.ack:
                        continue
                    self.stats.processed += 1
                    if entry.dead:
                        self.stats.dead_lettered += 1
                    if entry.envelope and entry.envelope["status"] == "ok":
                        self.stats.ok += 1
                    else:
                        self.stats.errors += 1
                self._acked += sum(1 for e in batch if e.ack)
                if self.max_commands is not None and self._acked >= self.max_commands:
                    self.stop()
            self._room.set()

    # ------------------------------------------------------------------ maintenance

    async def _renew(self, ids: list[str]) -> None:
        """Reset the idle time of entries we still own (JUSTID: no delivery is counted)."""
        if not ids:
            return
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            for i in range(0, len(ids), 500):
                await self.redis.xclaim(
                    self.stream, self.group, self.consumer, 0, ids[i : i + 500], justid=True
                )

    async def _release(self, ids: list[str]) -> None:
        """Make entries we cannot finish reclaimable at once by other consumers."""
        if not ids:
            return
        idle = self.cfg.claim_idle_ms + 1
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            for i in range(0, len(ids), 500):
                await self.redis.xclaim(
                    self.stream, self.group, self.consumer, 0, ids[i : i + 500],
                    idle=idle, justid=True,
                )  # fmt: skip
            self.stats.released += len(ids)

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
            await self.redis.xtrim(self.stream, minid=min(keep, key=_id_key), approximate=True)

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
        from datetime import timedelta

        try:
            removed = await self.store.purge(timedelta(days=days))
        except DatabaseUnavailable as exc:
            log.warning("record purge skipped: %s", exc)
            return
        if removed:
            log.info("purged %d records older than %g days", removed, days)

    async def _maintain(self) -> None:
        renew_every = max(0.05, self.cfg.claim_idle_ms / 3000)
        reclaim_every = max(0.05, self.cfg.claim_idle_ms / 2000)
        last_reclaim = last_gauges = last_trim = last_purge = last_prune = 0.0
        retention = self.cfg.records_retention_days
        # Purge expired records at start, then every hour (or half the retention if shorter).
        purge_every = min(3600.0, retention * 43_200) if retention else None
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(renew_every, 1.0))
            if self._stopping.is_set():
                return
            now = time.monotonic()
            try:
                old = [e.entry_id for e in self.inflight.values() if now - e.taken_at > renew_every]
                old += [e.entry_id for q in self.parked.values() for e in q]
                old += self._committing_ids  # held while the database or Redis is away
                await self._renew(old)
                self._retry_parked()
                if not self.burst and now - last_reclaim >= reclaim_every:
                    last_reclaim = now
                    await self.reclaim()
                if now - last_gauges >= 5:
                    last_gauges = now
                    await self._update_gauges()
                if now - last_trim >= self.cfg.trim_interval_s:
                    last_trim = now
                    await self.trim_input()
                prune_idle = self.cfg.dead_consumer_idle_ms
                if prune_idle is not None and now - last_prune >= min(300, prune_idle / 2000):
                    last_prune = now
                    await self._prune_consumers(prune_idle)
                if self.store is not None and purge_every and now - last_purge >= purge_every:
                    last_purge = now
                    await self._purge(retention or 0)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    continue  # the reader re-creates the group
                log.warning("maintenance: %s", exc)
            except TRANSIENT_REDIS as exc:
                log.debug("maintenance: Redis unreachable (%s)", exc)

    # ------------------------------------------------------------------ run

    async def run(self, *, install_signals: bool = False) -> WorkerStats:
        """Run until stopped (or drained, in burst mode); returns the counts."""
        loop = self._loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        await self.ensure_group()
        committer = asyncio.ensure_future(self._commit_loop())
        maintainer = asyncio.ensure_future(self._maintain())
        try:
            await self.drain_own_pending()
            self._read_task = asyncio.ensure_future(self._read_loop())
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait(
                {self._read_task, stop_wait, committer}, return_when=asyncio.FIRST_COMPLETED
            )
            stop_wait.cancel()
            if committer in done:
                committer.result()  # re-raise a commit failure
            if self._read_task in done:
                self._read_task.result()  # re-raise a typed stop (StreamGone...)
            else:
                # Stop requested while XREADGROUP may be blocking: abandon the read. What it
                # might have delivered is released below, with everything else not finished.
                self._read_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, *TRANSIENT_REDIS):
                    await self._read_task
        finally:
            self._stopping.set()
            await self._shutdown(committer, maintainer)
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return self.stats

    async def _shutdown(self, committer: asyncio.Task[Any], maintainer: asyncio.Task[Any]) -> None:
        grace = self.cfg.shutdown_grace_s
        self._grace_deadline = time.monotonic() + grace
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        # Entries waiting behind a same-key entry that is parked never started: hand them back.
        for followers in self._followers.values():
            for follower in followers:
                self.inflight.pop(follower.entry_id, None)
        self._followers.clear()
        self._done_event.set()
        try:
            await asyncio.wait_for(committer, timeout=max(0.1, grace) + 5)
        except (asyncio.TimeoutError, TimeoutError):
            committer.cancel()
        except Exception:
            log.debug("committer ended with an error", exc_info=True)
        maintainer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await maintainer
        # Whatever we still own (cancelled, parked, delivered by an abandoned read) is handed
        # back: made reclaimable at once, its delivery count untouched.
        with contextlib.suppress(*TRANSIENT_REDIS, ResponseError):
            mine = await self.redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=100_000,
                consumername=self.consumer,
            )  # fmt: skip
            ids = [_s(row["message_id"]) for row in mine]
            if ids:
                await self._release(ids)
            else:
                await self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
            await self.trim_input()


def _codex(entry: Entry) -> bool:
    """Did this entry's command come in codex's ``data`` form? (parse_fields says so, also for
    one it refused.)"""
    command = entry.command
    return command is not None and command.get("wire") == "codex"


def _unencodable(envelope: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """The envelope of a command whose result (or error details) cannot be encoded as JSON."""
    from ..errors import HandlerError

    error = HandlerError(
        f"the result of {str(envelope.get('action'))[:100]!r} cannot be encoded as JSON "
        f"({exc}); return JSON values (str, int within 64 bits, float, bool, None, list, dict)"
    )
    return {**envelope, "status": "error", "result": None, "error": error.to_wire()}


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
