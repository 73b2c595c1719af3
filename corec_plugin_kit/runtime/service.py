"""Wiring for ``corec-kit run``: Redis, the record store, metrics, processors, the worker."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..partitions import stream_sets
from .connection import RedisHandle

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .partitioned import WorkerSet
    from .worker import Worker, WorkerStats

log = logging.getLogger("corec_plugin_kit.runtime")


async def open_records(kernel: Kernel) -> Any:
    """The opened record store, or ``None`` when ``kernel.records`` is off."""
    cfg = kernel.settings.kernel
    if not cfg.records:
        return None
    from ..storage import open_store

    store = open_store(cfg)
    await store.open()
    await store.warm()
    return store


def database_display(kernel: Kernel) -> str:
    """Where records go, for the start-up line (no password)."""
    from ..redaction import redact_url

    cfg = kernel.settings.kernel
    if not cfg.records:
        return "off"
    if cfg.database_url is None:
        return f"sqlite:///{cfg.state_dir / 'corec.db'}"
    return redact_url(cfg.database_url.get_secret_value())


def startup_line(
    kernel: Kernel,
    *,
    redis: str,
    consumer: str,
    concurrency: int,
    metrics: str,
    workers: int | str = 1,
) -> str:
    """What ``corec-kit run`` says when it starts: what it reads, where it writes, with what."""
    cfg = kernel.settings.kernel
    infos = kernel.processors.infos.values()
    loaded = ", ".join(sorted(i.name for i in infos if i.status == "loaded")) or "none"
    failed = ", ".join(sorted(i.name for i in infos if i.status == "failed")) or "none"
    sets = stream_sets(cfg)
    streams = "; ".join(
        f"{s.stream_in} -> {s.stream_out} (dead letters {s.dead_letter_stream})" for s in sets
    )
    if len(sets) > 1:
        streams = f"{len(sets)} partitions [{streams}]"
    return (
        f"corec-kit run: {streams}, group {cfg.group}, consumer {consumer}; Redis {redis};"
        f" records {database_display(kernel)}; metrics {metrics}; processors {loaded}"
        f" (failed: {failed}); concurrency {concurrency}; workers {workers}"
    )


def metrics_display(port: int, addr: str) -> str:
    return f"http://{addr}:{port}/metrics" if port else "off"


def _write_snapshot(folder: Path, worker: Any) -> None:
    """Under ``--workers``: this worker's metrics and counts, for the supervisor (one file per
    process, so a restarted worker's predecessor keeps its own)."""
    from . import metrics

    path = folder / f"{worker.consumer}-{os.getpid()}.json"
    metrics.write_snapshot(path, {"stats": worker.counts()})


async def _write_snapshots(folder: Path, worker: Any) -> None:
    while True:
        _write_snapshot(folder, worker)
        await asyncio.sleep(1.0)


def _log_startup(kernel: Kernel, handle: RedisHandle, worker: Any, *, supervised: bool) -> None:
    cfg = kernel.settings.kernel
    shown = metrics_display(cfg.metrics_port, cfg.metrics_addr)
    line = startup_line(
        kernel, redis=handle.display, consumer=worker.consumer, concurrency=worker.concurrency,
        metrics="served by the supervisor" if supervised else shown,
        workers="one of the supervisor's" if supervised else 1,
    )  # fmt: skip
    log.info("%s", line)


async def run_worker(
    kernel: Kernel,
    *,
    burst: bool = False,
    max_commands: int | None = None,
    concurrency: int | None = None,
    consumer: str | None = None,
    install_signals: bool = False,
    metrics_snapshot: Path | None = None,
) -> WorkerStats:
    """Connect everything, run one worker until it stops, release everything.

    ``metrics_snapshot``: a folder where this worker writes its metrics for a supervisor
    (``--workers``) instead of serving them itself.
    """
    from ..redaction import install_log_redaction
    from . import metrics
    from .partitioned import make_worker

    # The worker's loggers exist now: their lines (outage warnings quote exception texts, which
    # may quote a URL) get the password redacted, whoever configured the handlers.
    install_log_redaction()
    cfg = kernel.settings.kernel
    handle = RedisHandle(cfg)
    redis = await handle.connect()
    store = None
    server = None
    try:
        store = await open_records(kernel)
        kernel.redis, kernel.store = redis, store
        if metrics_snapshot is None:
            server = metrics.serve(cfg.metrics_port, cfg.metrics_addr)
        async with kernel:
            worker = make_worker(
                kernel,
                redis,
                store,
                burst=burst,
                max_commands=max_commands,
                concurrency=concurrency,
                consumer=consumer,
                reconnect=handle.ensure_server,
            )
            kernel.runtime = worker
            return await _run_started(kernel, handle, worker, install_signals, metrics_snapshot)
    finally:
        await _release(kernel, server, store, handle)


async def _run_started(
    kernel: Kernel,
    handle: RedisHandle,
    worker: Worker | WorkerSet,
    install_signals: bool,
    metrics_snapshot: Path | None,
) -> WorkerStats:
    """Log the start-up line, run ``worker`` until it stops, write its last snapshot."""
    from .worker import signal_handlers

    snapshots: asyncio.Task[None] | None = None
    # The start-up line tells a supervisor or a script that the worker is up: from then on
    # SIGHUP and SIGTERM are handled (by default SIGHUP would end the process).
    with signal_handlers(worker, install_signals):
        _log_startup(kernel, handle, worker, supervised=metrics_snapshot is not None)
        thresholds = _settle_heap()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if metrics_snapshot is not None:
            snapshots = asyncio.ensure_future(_write_snapshots(metrics_snapshot, worker))
        try:
            stats = await worker.run()
        finally:
            # The process may go on (tests, an embedding app): it gets its own settings back.
            gc.set_threshold(*thresholds)
            sys.setswitchinterval(interval)
            if snapshots is not None:
                snapshots.cancel()
    if metrics_snapshot is not None:
        _write_snapshot(metrics_snapshot, worker)
    return stats


#: The garbage collector's young-generation threshold while a worker runs (Python's default
#: is 700). A command allocates some tens of containers, most of them gone by its commit; a
#: collection every 700 allocations traced the same in-flight entries over and over. 10,000
#: took 3.7 % off the worker's instructions per command (benchmarks/bench_instructions.py,
#: records off) and 8 % off its L1 data-cache misses; the young generation stays a few MiB.
YOUNG_GC_THRESHOLD = 10_000


#: The interpreter's thread switch interval while a worker runs (Python's default is 5 ms). A
#: thread that wants the GIL waits that long for the running one to give it up; SQLite's
#: writer thread takes the GIL back after every statement it steps, while the event loop's
#: thread is busy with the next batch, and waited a whole interval: 9 to 11 ms per batch
#: of 256-512 records at the median, 3.8 ms with 0.5 ms (benchmarks/README.md).
SWITCH_INTERVAL_S = 0.0005


def _settle_heap() -> tuple[int, int, int]:
    """Before the first read: what start-up made (modules, processors, settings) lives as long
    as the worker, so move it out of the garbage collector's sight (:func:`gc.freeze`); and
    collect the young generation less often. Returns the thresholds to restore."""
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *before[1:])
    return before


async def _release(kernel: Kernel, server: Any, store: Any, handle: RedisHandle) -> None:
    """Take the runtime off the kernel; stop the metrics server; close the store and Redis."""
    kernel.runtime = None
    kernel.redis = kernel.store = None
    if server is not None:
        server.shutdown()
        server.server_close()
    if store is not None:
        await store.close()
    await handle.close()
