"""``RecordStore.warm``: what ``corec-kit run`` opens before its first command, so that
command does not wait for it (threads and connections), and that a store works after it."""

from __future__ import annotations

import shutil
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest

from corec_plugin_kit.storage import PostgresStore, Record, SQLiteStore


def sqlite_threads(known: set[int] | None = None) -> dict[int, str]:
    """SQLite's lane threads alive now, by ident, but those in ``known`` (another test's
    store in this process may not have let its threads go yet)."""
    lanes = {"corec-sqlite-writer", "corec-sqlite-lookup"}
    return {
        thread.ident: name
        for thread in threading.enumerate()
        if (name := thread.name.rsplit("_", 1)[0]) in lanes
        and thread.ident is not None
        and thread.ident not in (known or set())
    }


async def written_and_found(store: SQLiteStore | PostgresStore) -> bool:
    now = datetime.now(timezone.utc)
    await store.write_batch([Record("k1", "echo", "p", "ok", {"n": 1}, {"n": 1}, finished_at=now)])
    return set(await store.find_ok(["k1", "k2"])) == {"k1"}


async def test_sqlite_opens_its_writer_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "corec.db")
    others = set(sqlite_threads())
    try:
        await store.open()
        assert sqlite_threads(others) == {}  # opened on first use, unless warmed
        await store.warm()
        # The look-up thread takes only reads over INLINE_KEYS keys: left to first use.
        assert sorted(sqlite_threads(others).values()) == ["corec-sqlite-writer"]
        assert await written_and_found(store)
        assert sorted(sqlite_threads(others).values()) == ["corec-sqlite-writer"]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgresql_opens_a_second_connection(corec_postgres_schema_url: str) -> None:
    name = f"corec-warm-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(corec_postgres_schema_url, server_settings={"application_name": name})
    watcher = await asyncpg.connect(corec_postgres_schema_url)

    async def connections() -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        return int(await watcher.fetchval(query, name))

    try:
        await store.open()
        assert await connections() == 1  # the pool's min_size
        await store.warm()
        assert await connections() == 2
        assert await written_and_found(store)
        assert await connections() == 2  # the batch and the look-up found them open
    finally:
        await store.close()
        await watcher.close()


async def test_warming_a_store_whose_file_is_gone_does_not_raise(tmp_path: Path) -> None:
    # Best effort: the first batch then meets the outage and reports it the usual way.
    store = SQLiteStore(tmp_path / "db" / "corec.db")
    try:
        await store.open()
        shutil.rmtree(tmp_path / "db")
        (tmp_path / "db").write_text("a file where the folder was")
        await store.warm()
    finally:
        await store.close()
