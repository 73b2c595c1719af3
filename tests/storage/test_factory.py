"""From kernel.database_url to a store, and ``check_database`` for ``corec-kit check``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from shared_helpers import free_port

from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.errors import ConfigError
from corec_plugin_kit.storage import (
    SCHEMA_VERSION,
    PostgresStore,
    SQLiteStore,
    check_database,
    open_store,
)


def cfg(tmp_path: Path, url: str | None = None, **extra: Any) -> KernelConfig:
    return KernelConfig.model_validate({"state_dir": tmp_path / "state", "database_url": url})


def unvalidated(tmp_path: Path, url: str) -> KernelConfig:
    """A config holding a URL that KernelConfig refuses (as ``model_copy`` can build one): the
    factory still refuses it with a ConfigError of its own."""
    with pytest.raises(ValidationError):
        cfg(tmp_path, url)
    return cfg(tmp_path).model_copy(update={"database_url": SecretStr(url)})


def test_default_is_sqlite_in_state_dir(tmp_path: Path) -> None:
    store = open_store(cfg(tmp_path))
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "state" / "corec.db"
    assert not (tmp_path / "state").exists()  # building a store does no I/O


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path) -> None:
    relative = open_store(cfg(tmp_path, "sqlite:///data/records.db"))
    assert isinstance(relative, SQLiteStore)
    assert relative.path == Path("data/records.db")
    absolute = open_store(cfg(tmp_path, f"sqlite:///{tmp_path}/abs.db"))  # four slashes
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "abs.db"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_sqlite_url_without_file_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="names no file"):
        open_store(unvalidated(tmp_path, url))


@pytest.mark.parametrize(
    "url", ["postgresql://u:pw@db/x", "postgres://u:pw@db/x", "postgresql+asyncpg://u:pw@db/x"]
)
def test_postgres_urls(tmp_path: Path, url: str) -> None:
    store = open_store(cfg(tmp_path, url))
    assert isinstance(store, PostgresStore)
    assert store.url == "postgresql://u:pw@db/x"
    assert store.url_display == "postgresql://u:***@db/x"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "/path/to/file.db", "redis://h"])
def test_other_urls_say_what_is_accepted(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"accepted: sqlite:///.*postgresql://") as info:
        open_store(unvalidated(tmp_path, url))
    assert info.value.exit_code == 3


async def test_check_sqlite_before_first_run_creates_nothing(tmp_path: Path) -> None:
    ok, detail = await check_database(cfg(tmp_path))
    assert ok, detail
    assert "no schema yet" in detail
    assert not (tmp_path / "state" / "corec.db").exists()


async def test_check_sqlite_after_open(tmp_path: Path) -> None:
    store = open_store(cfg(tmp_path))
    await store.open()
    await store.close()
    ok, detail = await check_database(cfg(tmp_path))
    assert ok, detail
    assert detail.endswith(f"schema v{SCHEMA_VERSION}"), detail


async def test_check_bad_url_and_closed_port(tmp_path: Path) -> None:
    ok, detail = await check_database(unvalidated(tmp_path, "mysql://x"))
    assert not ok
    assert "accepted" in detail
    port = free_port()
    # A closed port: nothing listens there, the connection is refused.
    ok, detail = await check_database(cfg(tmp_path, f"postgresql://u:pw@127.0.0.1:{port}/x"))
    assert not ok
    assert "cannot be reached" in detail
    assert "pw" not in detail


@pytest.mark.postgres
async def test_check_postgres(tmp_path: Path, corec_postgres_schema_url: str) -> None:
    ok, detail = await check_database(cfg(tmp_path, corec_postgres_schema_url))
    assert ok, detail
    assert "PostgreSQL" in detail
    assert "no schema yet" in detail
    store = open_store(cfg(tmp_path, corec_postgres_schema_url))
    await store.open()
    await store.close()
    ok, detail = await check_database(cfg(tmp_path, corec_postgres_schema_url))
    assert ok, detail
    assert detail.endswith(f"schema v{SCHEMA_VERSION}"), detail


async def test_store_is_an_async_context_manager(tmp_path: Path) -> None:
    async with open_store(cfg(tmp_path)) as store:
        assert await store.ping()
    assert (tmp_path / "state" / "corec.db").exists()


def test_importing_storage_and_its_cli_loads_no_driver() -> None:
    """`corec-kit --help` and completion import cli.history: no driver may load with it."""
    code = (
        "import sys\n"
        # coverage, when it measures this child, keeps its data in sqlite3 itself
        "before = set(sys.modules)\n"
        "import corec_plugin_kit.cli.history, corec_plugin_kit.storage\n"
        "new = set(sys.modules) - before\n"
        "loaded = [m for m in ('asyncpg', 'aiosqlite', 'sqlite3') if m in new]\n"
        "print(','.join(loaded))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
