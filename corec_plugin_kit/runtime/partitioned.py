"""One process, every partition: a :class:`~.worker.Worker` per partition, on one event loop.

With ``kernel.partitions = P`` (``corec_plugin_kit/partitions.py``) a process runs P workers,
one per partition's input stream, with the same consumer name in each partition's group.
They share the process's Redis client, record store, processors and circuit breakers (a
processor that fails opens its breaker for every partition), and ``--max-commands`` counts
their acknowledgements together. Each reads with its own XREADGROUP: a blocking read holds its
connection until entries come or ``block_ms`` passes, so reads of different partitions wait in
parallel on their own connections rather than in one pipeline, where the first idle partition
would hold up the rest.

``concurrency`` applies per partition (each worker has its own in-flight limit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..partitions import stream_sets
from . import published
from .breaker import CircuitBreaker
from .state import AckBudget, WorkerStats
from .worker import Worker, schedule_reload, signal_handlers

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..storage import RecordStore
    from .connection import RedisClient


class WorkerSet:
    """The workers of every partition, run and stopped together (``kernel.runtime``'s view)."""

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
    ) -> None:
        cfg = kernel.settings.kernel
        self.kernel = kernel
        self.consumer = consumer or cfg.consumer_name()
        self.breakers: dict[str, CircuitBreaker] = {}
        budget = AckBudget(max_commands) if max_commands is not None else None
        self.workers = []
        for streams in stream_sets(cfg):
            worker = Worker(
                kernel, redis, store, burst=burst, concurrency=concurrency,
                consumer=self.consumer, reconnect=reconnect, streams=streams,
                breakers=self.breakers, budget=budget,
            )  # fmt: skip
            self.workers.append(worker)
        self.concurrency = self.workers[0].concurrency

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def breaker_states(self) -> dict[str, str]:
        return {name: breaker.current() for name, breaker in self.breakers.items()}

    def breaker_figures(self) -> dict[str, dict[str, Any]]:
        return published.snapshot(self.breakers)

    def counts(self) -> dict[str, int]:
        return self._sum().as_dict()

    def _sum(self) -> WorkerStats:
        total = WorkerStats()
        for worker in self.workers:
            for name, value in worker.stats.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total

    async def run(self, *, install_signals: bool = False) -> WorkerStats:
        """Run every partition's worker until all stop; the first failure stops the others
        and is raised once they finished."""
        with signal_handlers(self, install_signals):
            tasks = [asyncio.ensure_future(worker.run()) for worker in self.workers]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                if any(task.exception() is not None for task in done):
                    self.stop()
                await asyncio.wait(tasks)
                for task in tasks:
                    task.result()  # the first failure, in partition order
            finally:
                for task in tasks:
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await task
        return self._sum()

    def request_reload(self) -> None:
        """``SIGHUP``: load the processors installed since start, for every partition."""
        schedule_reload(self.kernel, [worker.metrics for worker in self.workers])


def make_worker(
    kernel: Kernel, redis: RedisClient, store: RecordStore | None = None, **kw: Any
) -> Worker | WorkerSet:
    """The runtime for this kernel's config: one :class:`~.worker.Worker`, or a
    :class:`WorkerSet` when ``kernel.partitions`` > 1. Both run with ``await x.run()``."""
    if kernel.settings.kernel.partitions > 1:
        return WorkerSet(kernel, redis, store, **kw)
    return Worker(kernel, redis, store, **kw)
