"""Storage test fixtures.

The database fixtures are the kit's own (``corec_plugin_kit.storage.testing``), imported here
too so this folder works whether or not ``corec_plugin_kit.testing`` re-exports them yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from corec_plugin_kit.storage import PostgresStore, RecordStore, SQLiteStore
from corec_plugin_kit.storage.testing import (  # noqa: F401 - fixtures, used by name
    corec_postgres_schema_url,
    corec_postgres_store,
    corec_postgres_url,
    corec_sqlite_store,
    corec_store,
)


@pytest.fixture
async def made_stores() -> AsyncIterator[list[RecordStore]]:
    """Stores a test made itself; all closed after it."""
    made: list[RecordStore] = []
    yield made
    for store in made:
        await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_store(
    request: pytest.FixtureRequest, tmp_path: Path, made_stores: list[RecordStore]
) -> Callable[..., RecordStore]:
    """``new_store()``: unopened stores on one fresh, empty database of each back-end.

    PostgreSQL stores get their schema through the URL (``?search_path=``), the path users take.
    """
    if request.param == "sqlite":

        def make(**kwargs: Any) -> RecordStore:
            made_stores.append(SQLiteStore(tmp_path / "fresh" / "corec.db", **kwargs))
            return made_stores[-1]

        return make
    url = request.getfixturevalue("corec_postgres_schema_url")

    def make_pg(**kwargs: Any) -> RecordStore:
        made_stores.append(PostgresStore(url, **kwargs))
        return made_stores[-1]

    return make_pg
