"""The stream worker: XREADGROUP -> dispatch -> record -> XADD result + XACK in one MULTI.

:class:`Worker` runs three loops on one event loop, each in a module of its own:

* the **reader** (``runtime/reading.py``) takes at most ``concurrency`` entries at a time,
  parses each (``runtime/policy.py``; an invalid one is answered at once) and, with records on,
  answers commands that already succeeded from their record; the rest start one task each
  (``runtime/handling.py``: route, breaker, timer, handler, :func:`~.policy.settle`);
* the **committer** (``runtime/commit.py``) writes each batch's records (one round trip), then
  sends one MULTI with the result XADDs, the dead-letter XADDs and one XACK
  (``runtime/transport.py``). An entry is acknowledged only after its record and result are
  durable; if the database or Redis is down the batch is held and retried with backoff;
* the **maintainer** (``runtime/maintenance.py``) renews claims, reclaims dead consumers'
  entries, probes open circuit breakers, updates gauges, trims, prunes and purges.

This module holds the assembly and the lifecycle: start, signals, stop and the shutdown
within ``shutdown_grace_s``. Delivery is at-least-once: a worker that dies leaves its entries
pending, and another worker reclaims them after ``claim_idle_ms``; an entry whose
``max_deliveries``-th delivery fails goes to the dead-letter stream (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ..envelopes import as_text as _s
from ..partitions import StreamSet, stream_sets
from . import metrics, published
from .breaker import CircuitBreaker
from .commit import CommitLayout, Committing
from .handling import Handling
from .maintenance import Maintenance
from .policy import ReplyRules
from .reading import Reading
from .state import AckBudget, Entry, WorkerStats
from .transport import TRANSIENT_REDIS, is_cluster

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..storage import RecordStore
    from .connection import RedisClient

__all__ = ["TRANSIENT_REDIS", "Entry", "Worker", "WorkerStats"]

log = logging.getLogger("corec_plugin_kit.worker")


@contextlib.contextmanager
def signal_handlers(runtime: Any, install: bool) -> Iterator[None]:
    """While the block runs (when ``install``): SIGTERM and SIGINT call ``runtime.stop()``,
    SIGHUP ``runtime.request_reload()``."""
    if not install:
        yield
        return
    loop = asyncio.get_running_loop()
    handlers = {
        signal.SIGTERM: runtime.stop,
        signal.SIGINT: runtime.stop,
        signal.SIGHUP: runtime.request_reload,
    }
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)


_reloads: set[asyncio.Task[None]] = set()
_reload_lock: asyncio.Lock | None = None


def schedule_reload(kernel: Kernel, recorders: list[metrics.Recorder]) -> None:
    """Run :meth:`Kernel.reload <corec_plugin_kit.kernel.Kernel.reload>` in the background
    (one at a time), then let the metrics know the new actions; what it did is logged."""
    task = asyncio.ensure_future(_reload(kernel, recorders))
    _reloads.add(task)
    task.add_done_callback(_reloads.discard)


async def _reload(kernel: Kernel, recorders: list[metrics.Recorder]) -> None:
    global _reload_lock
    if _reload_lock is None:
        _reload_lock = asyncio.Lock()
    async with _reload_lock:
        try:
            added = await kernel.reload()
        except Exception as exc:  # noqa: BLE001 - a processor must not stop the worker
            log.error("SIGHUP: loading new processors failed: %s: %s", type(exc).__name__, exc)
            return
        for recorder in recorders:
            recorder.known = set(kernel.routing)
        if added:
            log.info("SIGHUP: loaded %s; %d actions routed", ", ".join(added), len(kernel.routing))
        else:
            log.info("SIGHUP: no new processor to load; %d actions routed", len(kernel.routing))


class Worker(Reading, Handling, Committing, Maintenance):
    """Consume ``kernel.settings.kernel.stream_in`` with one consumer of the group.

    :param kernel: a built :class:`~corec_plugin_kit.kernel.Kernel` (its dispatcher is used).
    :param redis: a ``redis.asyncio.Redis`` with ``decode_responses=False``.
    :param store: the record store (``None`` = records off).
    :param burst: exit once no new or reclaimable entry is left.
    :param max_commands: stop after acknowledging this many entries.
    :param reconnect: called (sync) before retrying after a Redis connection error, e.g. to
        restart the embedded server.
    :param streams: the partition this worker reads (default: the first, the only one unless
        ``kernel.partitions`` > 1); :class:`~.partitioned.WorkerSet` runs one per partition.
    :param breakers: circuit breakers shared with other workers of this process.
    :param budget: ``max_commands`` shared with other workers of this process.
    """

    def __init__(
        self,
        kernel: Kernel,
        redis: RedisClient,
        store: RecordStore | None = None,
        *,
        burst: bool = False,
        max_commands: int | None = None,
        concurrency: int | None = None,
        consumer: str | None = None,
        reconnect: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        streams: StreamSet | None = None,
        breakers: dict[str, CircuitBreaker] | None = None,
        budget: AckBudget | None = None,
    ) -> None:
        cfg = kernel.settings.kernel
        self.kernel = kernel
        self.cfg = cfg
        self.redis = redis
        self.store = store
        self.burst = burst
        if budget is None and max_commands is not None:
            budget = AckBudget(max_commands)
        self.budget = budget
        if budget is not None:
            budget.stops.append(self.stop)
        self.streams = streams or stream_sets(cfg)[0]
        self.concurrency = concurrency or cfg.concurrency
        self.batch_size = cfg.batch_size
        self.stream = self.streams.stream_in
        self.group = cfg.group
        self.consumer = consumer or cfg.consumer_name()
        self.reconnect = reconnect
        self.clock = clock
        self.stats = WorkerStats()
        self.dispatcher = kernel.dispatcher
        self.metrics = metrics.Recorder(set(kernel.routing), self)
        self.reply_rules = ReplyRules(cfg)
        self.layout = CommitLayout.of(
            cfg, self.consumer, cluster=is_cluster(redis), streams=self.streams
        )
        self.breakers = breakers if breakers is not None else {}
        self.parked = {}
        self._parked_ids = set()
        self._committing_ids = set()
        self._keys = {}
        self._followers = {}
        self.inflight = {}
        self._tasks = set()
        self._done = []
        self._done_event = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._committing = 0
        self._recreated = deque(maxlen=5)
        self._read_task = None
        self._publishing = set()
        self._grace_deadline = None  # set when shutdown starts

    def breaker_states(self) -> dict[str, str]:
        """Each processor's circuit breaker state (``kernel.runtime``'s view)."""
        return {name: breaker.current() for name, breaker in self.breakers.items()}

    def breaker_figures(self) -> dict[str, dict[str, Any]]:
        """Each processor's circuit breaker, state and failures, as it is published
        (``kernel.runtime``'s view)."""
        return published.snapshot(self.breakers)

    def counts(self) -> dict[str, int]:
        """The counts of this run so far."""
        return self.stats.as_dict()

    # ------------------------------------------------------------------ run

    async def run(self, *, install_signals: bool = False) -> WorkerStats:
        """Run until stopped (or drained, in burst mode); returns the counts."""
        self._loop = asyncio.get_running_loop()
        with signal_handlers(self, install_signals):
            await self.ensure_group()
            committer = asyncio.ensure_future(self._commit_loop())
            maintainer = asyncio.ensure_future(self._maintain())
            try:
                await self.drain_own_pending()
                await self._read_until_stopped(committer)
            finally:
                self._stopping.set()
                await self._shutdown(committer, maintainer)
        return self.stats

    def request_reload(self) -> None:
        """``SIGHUP``: load the processors installed since start, without stopping."""
        schedule_reload(self.kernel, [self.metrics])

    async def _read_until_stopped(self, committer: asyncio.Task[Any]) -> None:
        read_task = self._read_task = asyncio.ensure_future(self._read_loop())
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait(
            {read_task, stop_wait, committer}, return_when=asyncio.FIRST_COMPLETED
        )
        stop_wait.cancel()
        if committer in done:
            committer.result()  # re-raise a commit failure
        if read_task in done:
            read_task.result()  # re-raise a typed stop (StreamGone...)
        else:
            # Stop requested while XREADGROUP may be blocking: abandon the read. What it
            # might have delivered is released at shutdown, with everything else not finished.
            read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *TRANSIENT_REDIS):
                await read_task

    async def _shutdown(self, committer: asyncio.Task[Any], maintainer: asyncio.Task[Any]) -> None:
        grace = self.cfg.shutdown_grace_s
        self._grace_deadline = time.monotonic() + grace
        running = {task for task in self._tasks if not task.done()}
        running |= {e.task for e in self.inflight.values() if e.task and not e.task.done()}
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
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
        await self._hand_back()

    async def _hand_back(self) -> None:
        """Whatever we still own (cancelled, parked, delivered by an abandoned read) is handed
        back: made reclaimable at once, its delivery count untouched."""
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
        await self.withdraw_breakers()
        await self.withdraw_figures()
