"""Outages: the database unreachable is DatabaseUnavailable, and the store recovers after.

Faults here are real, none is mocked:
* PostgreSQL refusing connections: a closed port on 127.0.0.1 (nothing listens there);
* PostgreSQL restarted under a live pool: a throwaway cluster of our own (initdb + pg_ctl in a
  temporary folder, as the ``postgres`` OS user, on a free port) stopped and started again; the
  machine's shared server is never stopped;
* connections killed server-side: ``pg_terminate_backend`` on our own connections only;
* SQLite unavailable: another connection holds the write lock longer than ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shared_helpers import free_port
from storage_helpers import rec, total

from corec_plugin_kit.errors import DatabaseUnavailable
from corec_plugin_kit.runtime.testing import require_service
from corec_plugin_kit.storage import PostgresStore, SQLiteStore

PG_BIN = Path("/usr/lib/postgresql")


async def test_closed_port_is_database_unavailable() -> None:
    # Nothing listens on this port: connection refused, as when PostgreSQL is down.
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/test"
    store = PostgresStore(url, connect_timeout=2)
    try:
        assert "s3cret" not in store.url_display
        with pytest.raises(DatabaseUnavailable) as info:
            await store.open()
        assert "s3cret" not in info.value.message
        assert "cannot be reached" in info.value.message
        with pytest.raises(DatabaseUnavailable):
            await store.write_batch([rec("k")])
        with pytest.raises(DatabaseUnavailable):
            await store.query()
        assert await store.ping() is False
    finally:
        await store.close()


@pytest.mark.postgres
async def test_killed_connections_are_replaced_transparently(corec_postgres_url: str) -> None:
    """A server restart kills pooled connections: the next write reconnects and succeeds."""
    import asyncpg

    schema, app = f"corec_test_{uuid.uuid4().hex[:12]}", f"corec-kill-{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(corec_postgres_url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    store = PostgresStore(
        corec_postgres_url,
        server_settings={"search_path": schema, "application_name": app},
        min_size=2,
    )
    try:
        await store.open()
        await store.write_batch([rec("before")])
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            app,
        )
        assert killed >= 1
        await store.write_batch([rec("after")])  # no DatabaseUnavailable: retried on a new one
        assert await total(store) == 2
    finally:
        await store.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


# ------------------------------------------------------------------ throwaway cluster


def _pg_bin() -> Path | None:
    versions = sorted(PG_BIN.glob("*/bin/initdb")) if PG_BIN.is_dir() else []
    return versions[-1].parent if versions else None


class Cluster:
    """A private PostgreSQL cluster in a temporary folder, run as the ``postgres`` OS user."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.data, self.port = bindir, root / "data", free_port()
        self.root = root

    def _as_postgres(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{argv[0]} failed: {done.stdout}{done.stderr}"

    def init(self) -> None:
        self._as_postgres(
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w", "-t", "30",
            "-l", str(self.root / "log"), "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bindir = _pg_bin()
    # A throwaway cluster needs the server binaries (and runuser when root): in CI their
    # absence fails the test, elsewhere it skips with the reason.
    require_service(
        bindir is not None,
        "initdb and pg_ctl (the PostgreSQL server binaries)",
        "are not installed",
    )
    require_service(
        os.geteuid() != 0 or shutil.which("runuser") is not None,
        "runuser (to run initdb and pg_ctl as the postgres user when root)",
        "is not installed",
    )
    assert bindir is not None
    # Not under tmp_path: pytest's base folder is private to root, the postgres user must
    # reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="corec-pgcluster-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    node = Cluster(bindir, root)
    node.init()
    node.start()
    try:
        yield node
    finally:
        subprocess.run(
            [*(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
             str(bindir / "pg_ctl"), "-D", str(node.data), "-m", "immediate", "stop"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
@pytest.mark.timeout(180)
async def test_real_restart_unavailable_then_recovers(cluster: Cluster) -> None:
    """Our own cluster is stopped under a live pool, then started again: nothing is lost."""
    store = PostgresStore(cluster.url, connect_timeout=3, min_size=2)
    try:
        await store.open()
        await store.write_batch([rec(f"a{i}") for i in range(100)])
        await asyncio.to_thread(cluster.stop)
        down = [rec(f"b{i}") for i in range(100)]
        for _ in range(3):  # every call while down fails typed, none hangs
            with pytest.raises(DatabaseUnavailable):
                await store.write_batch(down)
        assert await store.ping() is False
        await asyncio.to_thread(cluster.start)
        await store.write_batch(down)  # the same store, the same pool: reconnected
        assert await store.ping() is True
        assert await total(store) == 200
    finally:
        await store.close()


async def test_sqlite_locked_past_busy_timeout_then_recovers(tmp_path: Path) -> None:
    import sqlite3

    store = SQLiteStore(tmp_path / "corec.db", busy_timeout_s=0.2)
    await store.open()
    holder: Any = sqlite3.connect(tmp_path / "corec.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(DatabaseUnavailable) as info:
            await store.write_batch([rec("k")])
        assert "locked" in info.value.message
        holder.execute("ROLLBACK")
        await store.write_batch([rec("k")])
        assert await total(store) == 1
    finally:
        holder.close()
        await store.close()


async def test_sqlite_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = SQLiteStore(blocker / "sub" / "corec.db")
    with pytest.raises(DatabaseUnavailable):
        await store.open()
    assert await store.ping() is False
    await store.close()


async def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "corec.db").write_bytes(b"this is not sqlite" * 100)
    store = SQLiteStore(tmp_path / "corec.db")
    with pytest.raises(DatabaseUnavailable, match="not a database"):
        await store.open()
    await store.close()
