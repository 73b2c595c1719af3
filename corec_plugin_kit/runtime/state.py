"""The stream worker's state, shared by its parts.

:class:`Worker` (``runtime/worker.py``) is assembled from four parts, one concern each:
``reading`` (XREADGROUP, claims, record look-ups), ``handling`` (running a command and
answering it), ``committing`` (records, then one MULTI per batch) and ``maintenance`` (claims
renewed, dead consumers' entries reclaimed, trims, gauges, purges). :class:`WorkerState`
declares the state they share and the calls they make to each other, so each part can be read
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CorecError
from . import metrics
from .breaker import STATE_VALUE, CircuitBreaker
from .transport import TRANSIENT_REDIS

if TYPE_CHECKING:
    from ..config import KernelConfig
    from ..dispatch import Dispatcher
    from ..kernel import Kernel
    from ..partitions import StreamSet
    from ..storage import RecordStore
    from .commit import CommitLayout
    from .connection import RedisClient
    from .policy import ReplyRules
    from .ratelimit import RateLimiter

log = logging.getLogger("corec_plugin_kit.worker")


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
class AckBudget:
    """``--max-commands``: how many entries a run acknowledges before it stops (shared by the
    workers of one process's partitions, which each register their ``stop``)."""

    limit: int
    spent: int = 0
    stops: list[Callable[[], None]] = field(default_factory=list)

    def spend(self, count: int) -> None:
        self.spent += count
        if self.spent >= self.limit:
            for stop in self.stops:
                stop()


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


class WorkerState(ABC):
    """What the parts of a :class:`~corec_plugin_kit.runtime.worker.Worker` share."""

    kernel: Kernel
    cfg: KernelConfig
    #: ``decode_responses=False``; the tests' fault injections put stand-ins with its methods.
    redis: RedisClient
    store: RecordStore | None
    dispatcher: Dispatcher
    metrics: metrics.Recorder
    stats: WorkerStats
    burst: bool
    budget: AckBudget | None
    concurrency: int
    batch_size: int
    #: This worker's partition; ``stream`` is its ``stream_in``.
    streams: StreamSet
    stream: str
    group: str
    consumer: str
    reconnect: Callable[[], Any] | None
    clock: Callable[[], float]
    reply_rules: ReplyRules
    layout: CommitLayout
    breakers: dict[str, CircuitBreaker]
    #: Entries held while their processor's breaker is open, per processor.
    parked: dict[str, deque[Entry]]
    _parked_ids: set[str]
    #: Finished entries being recorded and acknowledged now.
    _committing_ids: set[str]
    #: Command keys of the entries this worker owns, and entries with the same key that wait
    #: for the first to finish (then looked up again). Only with records on.
    _keys: dict[str, Entry]
    _followers: dict[str, list[Entry]]
    #: Entry id -> entry being handled (or finished, not yet committed).
    inflight: dict[str, Entry]
    #: The record look-ups running (each handler's task is its entry's ``task``).
    _tasks: set[asyncio.Task[Any]]
    _done: list[Entry]
    _done_event: asyncio.Event
    _room: asyncio.Event
    _stopping: asyncio.Event
    _committing: int
    _loop: asyncio.AbstractEventLoop
    _grace_deadline: float | None
    _limiter: RateLimiter | None = None

    # ------------------------------------------------------------------ shared helpers

    def breaker(self, processor: str) -> CircuitBreaker:
        """The processor's circuit breaker (created on first use, its gauge kept current)."""
        breaker = self.breakers.get(processor)
        if breaker is None:
            cb = self.cfg.circuit_breaker
            gauge = metrics.CIRCUIT.labels(processor)
            gauge.set(0)

            def changed(state: str, processor: str = processor) -> None:
                gauge.set(STATE_VALUE[state])
                log.warning("circuit breaker of %r is now %s", processor, state)
                self._breaker_changed()

            breaker = CircuitBreaker(
                cb.max_failures, cb.reset_timeout, clock=self.clock, on_change=changed
            )
            self.breakers[processor] = breaker
            self._breaker_changed()
        return breaker

    def rate_limiter(self) -> RateLimiter:
        """The rate limits of actions (``runtime/ratelimit.py``), made on first use."""
        limiter = self._limiter
        if limiter is None:
            from .ratelimit import RateLimiter

            limiter = self._limiter = RateLimiter(self.redis, self.cfg.stream_in)
        return limiter

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

    def _give_up(self) -> bool:
        """During shutdown past the grace period, stop retrying (entries stay pending)."""
        deadline = self._grace_deadline
        return deadline is not None and time.monotonic() > deadline

    async def _backoff(self, attempt: int, what: str, exc: BaseException) -> None:
        """Wait before retrying ``what`` (capped exponential, jittered; cut short by stop)."""
        delay = min(5.0, 0.05 * (2 ** min(attempt, 10))) * (0.5 + random.random() / 2)  # noqa: S311
        log.warning("%s failed (%s: %s); retrying in %.2fs", what, type(exc).__name__, exc, delay)
        if self.reconnect is not None and isinstance(exc, TRANSIENT_REDIS):
            with contextlib.suppress(Exception):
                self.reconnect()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # ------------------------------------------------------------------ calls between parts

    @abstractmethod
    def _breaker_changed(self) -> None:
        """maintenance: a breaker changed state; publish the breakers for other processes."""

    @abstractmethod
    def _queue(self, entries: list[Entry]) -> None:
        """reading: start parsed entries (with records on, after one look-up)."""

    @abstractmethod
    def _release_key(self, entry: Entry) -> None:
        """reading: the entry left this worker; entries waiting on its key go on."""

    @abstractmethod
    async def reclaim(self) -> int:
        """reading: XAUTOCLAIM idle entries of dead consumers; how many were taken."""

    @abstractmethod
    def _spawn(self, entry: Entry) -> None:
        """handling: run the entry's command in a task of its own."""

    @abstractmethod
    def _answer(self, entry: Entry, envelope: dict[str, Any], *, dead: bool = False) -> None:
        """handling: the entry is finished with this result (dead-lettered too if ``dead``)."""

    @abstractmethod
    def _answer_invalid(
        self, entry: Entry, exc: CorecError, start: float, command: dict[str, Any] | None = None
    ) -> None:
        """handling: answer an entry that never reaches a handler, and dead-letter it."""

    @abstractmethod
    def _set_answer(self, entry: Entry, envelope: dict[str, Any], *, dead: bool = False) -> None:
        """handling: encode the entry's result (once)."""

    @abstractmethod
    async def _renew(self, ids: list[str]) -> None:
        """maintenance: reset the idle time of entries we still own."""

    @abstractmethod
    async def _release(self, ids: list[str]) -> None:
        """maintenance: make entries we cannot finish reclaimable at once."""
