"""Fixtures of the CoreC tests: isolation, CoreC's PostgreSQL pool, a fresh v4 database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from corec_standins import forget_modules


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("COREC_"):
            monkeypatch.delenv(name)
    forget_modules("plugins", "src")
    yield tmp_path
    forget_modules("plugins", "src")


# --------------------------------------------------------------- PostgreSQL


@pytest.fixture
async def corec_db_pool(corec_postgres_schema_url: str) -> AsyncIterator[Any]:
    """CoreC's ``nucleus.db_pool``: an asyncpg pool (here on a fresh schema of the test DB)."""
    import asyncpg

    pool = await asyncpg.create_pool(corec_postgres_schema_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def fresh_database(corec_postgres_url: str) -> AsyncIterator[dict[str, Any]]:
    """A fresh database, given as CoreC v4's db_config (host, port, database, user, password)."""
    from urllib.parse import urlsplit

    import asyncpg

    name = f"corec_v4_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(corec_postgres_url, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(corec_postgres_url)
    try:
        yield {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 5432,
            "database": name,
            "user": parts.username or "postgres",
            "password": parts.password or "",
        }
    finally:
        admin = await asyncpg.connect(corec_postgres_url, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
