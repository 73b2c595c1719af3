"""The worker's outage warnings never print the database password (issue item 4).

The worker quotes exception texts in its warnings ("writing records failed (DatabaseUnavailable:
...)"); those messages name the database URL. Here a real worker writes records to a PostgreSQL
URL on a port nothing listens on, with the password in the userinfo and in ``?password=``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from runtime_helpers import payload
from shared_helpers import free_port

from corec_plugin_kit.runtime import service
from corec_plugin_kit.storage import PostgresStore

SECRET = "Hunter2-S3cr3t-Zq9"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://corec:{secret}@127.0.0.1:{port}/test",
        "postgresql://corec@127.0.0.1:{port}/test?password={secret}&search_path=x",
    ],
)
async def test_outage_warnings_do_not_print_the_password(
    echo_kernel: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
) -> None:
    port = free_port()
    database_url = url.format(secret=SECRET, port=port)
    kernel = echo_kernel(records=True, database_url=database_url, shutdown_grace_s=0.2)

    async def closed_port_store(_kernel: Any) -> PostgresStore:
        # Not opened: the database is down from the first write on, while the worker runs.
        return PostgresStore(database_url, connect_timeout=1)

    monkeypatch.setattr(service, "open_records", closed_port_store)
    caplog.set_level(logging.INFO)
    await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": 1}, id="s1"))
    task = asyncio.ensure_future(service.run_worker(kernel))
    try:
        for _ in range(400):
            if "records failed (DatabaseUnavailable" in caplog.text or task.done():
                break
            await asyncio.sleep(0.05)
        assert not task.done(), task.exception()
        assert "records failed (DatabaseUnavailable" in caplog.text, caplog.text
    finally:
        if kernel.runtime is not None:
            kernel.runtime.stop()
        await asyncio.wait_for(task, 30)
    assert SECRET not in caplog.text
    assert f"127.0.0.1:{port}/test" in caplog.text
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in (record.exc_text or "")
