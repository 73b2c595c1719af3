"""Database fixtures for ``corec_plugin_kit.testing`` (imported there; not a plugin of its own).

* ``corec_postgres_url``: the test server (``COREC_TEST_POSTGRES_URL``, default
  ``postgresql://postgres@127.0.0.1:5432/test``); when it does not answer the test is skipped
  outside CI and fails in CI (``CI`` set);
* ``corec_sqlite_store``: an opened :class:`SQLiteStore` on a fresh file in ``tmp_path``;
* ``corec_postgres_store``: an opened :class:`PostgresStore` in a fresh schema of the test
  server (``search_path`` set to it), dropped after the test;
* ``corec_postgres_schema_url``: the same kind of fresh schema, as a ``database_url`` (the
  schema travels as ``?search_path=...``) for kernels and ``corec-kit`` subprocesses;
* ``corec_store``: parametrized over both back-ends, so one test body is the contract of both.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from ..runtime.testing import require_service

if TYPE_CHECKING:
    from ._base import RecordStore
    from ._postgres import PostgresStore
    from ._sqlite import SQLiteStore

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``postgres`` marker ``corec_store`` puts on its PostgreSQL case.

    Processor authors run with ``--strict-markers`` too; ``-m "not postgres"`` deselects the
    cases that need the server.
    """
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server")


@pytest.fixture(scope="session")
def corec_postgres_url() -> str:
    """URL of the test PostgreSQL server (checked once per session)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    url = os.environ.get("COREC_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)

    async def answers() -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        await conn.close()
        return True

    # A private loop in a thread: this may be first requested from inside a running loop (an
    # async fixture), and a session fixture must not borrow a test's loop anyway.
    with ThreadPoolExecutor(1) as pool:
        ok = pool.submit(asyncio.run, answers()).result()
    require_service(ok, f"PostgreSQL at {url}")
    return url


async def _execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _fresh_schema(url: str) -> AsyncIterator[str]:
    """A new, uniquely named schema on the server at ``url`` (its name), dropped on exit."""
    name = f"corec_test_{uuid.uuid4().hex[:12]}"
    await _execute(url, f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await _execute(url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def corec_postgres_schema_url(corec_postgres_url: str) -> AsyncIterator[str]:
    """A ``database_url`` whose tables land in a fresh schema, dropped after the test."""
    sep = "&" if "?" in corec_postgres_url else "?"
    async with _fresh_schema(corec_postgres_url) as name:
        yield f"{corec_postgres_url}{sep}search_path={name}"


@pytest.fixture
async def corec_sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An opened SQLite store on a fresh file (``tmp_path/records/corec.db``)."""
    from ._sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "records" / "corec.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def corec_postgres_store(corec_postgres_url: str) -> AsyncIterator[PostgresStore]:
    """An opened PostgreSQL store in a fresh schema (``search_path``), dropped afterwards."""
    from ._postgres import PostgresStore

    async with _fresh_schema(corec_postgres_url) as name:
        store = PostgresStore(corec_postgres_url, server_settings={"search_path": name})
        try:
            await store.open()
            yield store
        finally:
            await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def corec_store(request: pytest.FixtureRequest) -> RecordStore:
    """An opened store of each back-end in turn (the test runs once per back-end)."""
    name = "corec_sqlite_store" if request.param == "sqlite" else "corec_postgres_store"
    return cast("RecordStore", request.getfixturevalue(name))


__all__ = [
    "corec_postgres_schema_url",
    "corec_postgres_store",
    "corec_postgres_url",
    "corec_sqlite_store",
    "corec_store",
    "pytest_configure",
]
