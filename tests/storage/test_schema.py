"""Schema versioning: created at open, migrated from an older version, a newer one refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from storage_helpers import rec

from corec_plugin_kit.errors import ConfigError
from corec_plugin_kit.storage import SCHEMA_VERSION, RecordStore, SchemaTooNew


async def _sql(store: Any, statement: str) -> Any:
    """Run raw SQL on the store's own database (test-only back door)."""
    if store.backend == "sqlite":
        async with store._using(write=True) as conn, conn.execute(statement) as cursor:
            return await cursor.fetchall()
    return await store._run(lambda conn: conn.fetch(statement))


async def _indexes(store: Any) -> set[str]:
    if store.backend == "sqlite":
        rows = await _sql(store, "SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        rows = await _sql(
            store, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
    return {row[0] for row in rows}


async def test_open_creates_the_current_schema_once(new_store: Callable[..., Any]) -> None:
    first = new_store()
    assert await first.schema_version() is None  # nothing created before open
    await first.open()
    assert await first.schema_version() == SCHEMA_VERSION
    second = new_store()
    await second.open()  # a second worker starting: no error, no second version row
    rows = await _sql(second, "SELECT version FROM corec_schema_version ORDER BY version")
    assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert {
        "corec_commands_action_status_finished",
        "corec_commands_finished",
    } <= await _indexes(second)


async def test_older_schema_is_migrated_and_keeps_its_rows(new_store: Callable[..., Any]) -> None:
    v1 = new_store()
    v1.migrations = v1.migrations[:1]  # the code as it was at schema v1
    await v1.open()
    await v1.write_batch([rec("kept")])
    assert await v1.schema_version() == 1
    assert "corec_commands_finished" not in await _indexes(v1)
    await v1.close()

    current = new_store()
    await current.open()
    assert await current.schema_version() == SCHEMA_VERSION
    assert "corec_commands_finished" in await _indexes(current)
    stored = await current.get("kept")
    assert stored is not None
    assert stored.status == "ok"


async def test_newer_schema_is_refused(new_store: Callable[..., Any]) -> None:
    store: RecordStore = new_store()
    await store.open()
    await _sql(store, "INSERT INTO corec_schema_version (version, applied_at) "
               "VALUES (99, CURRENT_TIMESTAMP)")  # fmt: skip
    await store.close()
    with pytest.raises(SchemaTooNew) as info:
        await new_store().open()
    assert isinstance(info.value, ConfigError)  # exit code 3, one line
    assert (info.value.found, info.value.known) == (99, SCHEMA_VERSION)
    assert "upgrade corec-plugin-kit" in info.value.message
