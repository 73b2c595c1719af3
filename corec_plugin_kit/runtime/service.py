"""Wiring for ``corec-kit run``: Redis, the record store, metrics, processors, the worker."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .connection import RedisHandle

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .worker import WorkerStats

log = logging.getLogger("corec_plugin_kit.runtime")


async def open_records(kernel: Kernel) -> Any:
    """The opened record store, or ``None`` when ``kernel.records`` is off."""
    cfg = kernel.settings.kernel
    if not cfg.records:
        return None
    from ..storage import open_store

    store = open_store(cfg)
    await store.open()
    return store


async def run_worker(
    kernel: Kernel,
    *,
    burst: bool = False,
    max_commands: int | None = None,
    concurrency: int | None = None,
    consumer: str | None = None,
    install_signals: bool = False,
) -> WorkerStats:
    """Connect everything, run one worker until it stops, release everything."""
    from ..redaction import install_log_redaction
    from . import metrics
    from .worker import Worker

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
        server = metrics.serve(cfg.metrics_port, cfg.metrics_addr)
        async with kernel:
            worker = Worker(
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
            return await worker.run(install_signals=install_signals)
    finally:
        kernel.runtime = None
        kernel.redis = kernel.store = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if store is not None:
            await store.close()
        await handle.close()
