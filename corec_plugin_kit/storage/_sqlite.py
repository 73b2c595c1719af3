"""SQLite back-end (aiosqlite): the embedded default, one file under ``state_dir``.

One connection per store, in autocommit mode, with WAL so readers (``corec-kit history``, other
workers) never block the writer. Every write is an explicit ``BEGIN IMMEDIATE`` transaction:
taking the write lock up front makes a second process wait (``busy_timeout``) instead of failing
with SQLITE_BUSY when it would upgrade a read lock. An asyncio lock keeps this store's own tasks
from interleaving statements inside one another's transaction on the shared connection.
"""

# Statements are composed from this module's constants (table and column names), never from
# input: every value goes through a placeholder.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import DatabaseUnavailable
from ._base import (
    COLUMNS,
    SCHEMA_VERSION,
    TABLE,
    VERSION_TABLE,
    Record,
    RecordStore,
    SchemaTooNew,
    coalesce,
    created,
    cutoff,
    dumps,
    loads,
    upsert_assignments,
    utc,
)

#: (version, statements): applied in order, each version in its own transaction.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE {TABLE} (
                command_key TEXT PRIMARY KEY NOT NULL,
                action TEXT NOT NULL,
                processor TEXT,
                status TEXT NOT NULL,
                params TEXT,
                result TEXT,
                error TEXT,
                deliveries INTEGER NOT NULL DEFAULT 1,
                created_at TEXT NOT NULL,
                finished_at TEXT,
                duration_ms REAL
            )""",
            f"CREATE INDEX {TABLE}_action_status_finished ON {TABLE} (action, status, finished_at)",
        ),
    ),
    # v2: retention purges and `history --since` scan by time alone.
    (2, (f"CREATE INDEX {TABLE}_finished ON {TABLE} (finished_at)",)),
)

# Errors that mean "the database cannot be used right now", as opposed to a bug in a statement.
_UNAVAILABLE = (
    "database is locked",
    "unable to open",
    "disk i/o error",
    "disk is full",
    "readonly database",
    "no such table",  # the file was deleted under us
    "not a database",  # database_url names some other file
    "malformed",
)

_INSERT = (
    f"INSERT INTO {TABLE} AS c ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)}) "
    f"ON CONFLICT (command_key) DO UPDATE SET {upsert_assignments('max')}"
)


@functools.lru_cache(maxsize=256)  # a batch's records share their timestamps
def _ts(value: datetime | None) -> str | None:
    """Fixed-width UTC ISO text, so that text order is time order in SQL comparisons."""
    aware = utc(value)
    return aware.isoformat(timespec="microseconds") if aware is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _row(record: Record, now: datetime) -> tuple[Any, ...]:
    return (
        record.command_key,
        record.action,
        record.processor,
        record.status,
        dumps(record.params),
        dumps(record.result),
        dumps(record.error),
        record.deliveries,
        _ts(created(record, now)),
        _ts(record.finished_at),
        record.duration_ms,
    )


def _record(row: Sequence[Any]) -> Record:
    return Record(
        command_key=row[0],
        action=row[1],
        processor=row[2],
        status=row[3],
        params=loads(row[4]),
        result=loads(row[5]),
        error=loads(row[6]),
        deliveries=row[7],
        created_at=_dt(row[8]),
        finished_at=_dt(row[9]),
        duration_ms=row[10],
    )


class SQLiteStore(RecordStore):
    """Records in one SQLite file (created with its folders on :meth:`open`)."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.url_display = f"sqlite:///{self.path}"
        self.busy_timeout_s = busy_timeout_s
        self.migrations = MIGRATIONS
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # A second connection for the worker's look-ups: in WAL mode it reads while the first
        # one commits (and waits for fsync), so reading the next batch never queues behind it.
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = asyncio.Lock()

    # ------------------------------------------------------------------ connection

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"SQLite database {self.path} cannot be used: {exc}; check the file, its folder's "
            "permissions and free disk space",
            details={"url": self.url_display},
        )

    async def _connect(self) -> aiosqlite.Connection:
        if self._conn is not None:
            return self._conn
        self._conn = await self._new_connection()
        return self._conn

    async def _new_connection(self) -> aiosqlite.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout_s
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._unavailable(exc) from exc
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a command is acknowledged only once its record is durable, power loss
            # included (NORMAL in WAL mode may lose the last commits on an OS crash).
            await conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            await conn.close()
            raise self._unavailable(exc) from exc
        return conn

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The read connection (opened after the writer, so the schema exists); maps outages."""
        async with self._reader_lock:
            if self._reader is None:
                async with self._lock:
                    await self._connect()  # the writer first: it creates the file
                self._reader = await self._new_connection()
            try:
                yield self._reader
            except sqlite3.DatabaseError as exc:
                if any(text in str(exc).lower() for text in _UNAVAILABLE):
                    raise self._unavailable(exc) from exc
                raise

    @asynccontextmanager
    async def _using(self, *, write: bool) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, inside a write transaction when ``write``; maps outages."""
        async with self._lock:
            conn = await self._connect()
            try:
                if write:
                    await conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error, ValueError):
                            await conn.rollback()
                        raise
                    await conn.commit()
                else:
                    yield conn
            except sqlite3.DatabaseError as exc:  # OperationalError is one
                if any(text in str(exc).lower() for text in _UNAVAILABLE):
                    raise self._unavailable(exc) from exc
                raise

    async def open(self) -> None:
        async with self._using(write=True) as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = await self._version(conn) or 0
            known = max(version for version, _ in self.migrations)
            if current > max(known, SCHEMA_VERSION):
                raise SchemaTooNew(current, max(known, SCHEMA_VERSION), self.url_display)
            # One transaction for all pending versions: BEGIN IMMEDIATE already serialises
            # workers that start together, and a half-migrated file is never left behind.
            for version, statements in self.migrations:
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (version, applied_at) "
                    "VALUES (?, strftime('%Y-%m-%dT%H:%M:%f', 'now'))",
                    (version,),
                )

    async def _version(self, conn: aiosqlite.Connection) -> int | None:
        async with conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
        ) as cursor:
            if await cursor.fetchone() is None:
                return None
        async with conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None and row[0] is not None else None

    async def schema_version(self) -> int | None:
        if not self.path.exists():
            return None
        async with self._using(write=False) as conn:
            return await self._version(conn)

    async def server_version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    async def close(self) -> None:
        for conn in (self._reader, self._conn):
            if conn is not None:
                await conn.close()
        self._reader = self._conn = None

    async def ping(self) -> bool:
        try:
            async with self._using(write=False) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - ping reports, never raises
            return False

    # ------------------------------------------------------------------ records

    async def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        now = datetime.now(timezone.utc)
        rows = [_row(record, now) for record in coalesce(records)]
        async with self._using(write=True) as conn:
            await conn.executemany(_INSERT, rows)

    async def get(self, key: str) -> Record | None:
        async with (
            self._using(write=False) as conn,
            conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE command_key = ?", (key,)
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return _record(row) if row is not None else None

    async def find_ok(self, keys: Sequence[str]) -> dict[str, Record]:
        out: dict[str, Record] = {}
        unique = list(dict.fromkeys(keys))
        async with self._reading() as conn:
            for i in range(0, len(unique), 500):  # under SQLite's bound-parameter limit
                chunk = unique[i : i + 500]
                sql = (
                    f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE status = 'ok' "
                    f"AND command_key IN ({', '.join('?' * len(chunk))})"
                )
                async with conn.execute(sql, chunk) as cursor:
                    for row in await cursor.fetchall():
                        out[row[0]] = _record(row)
        return out

    async def query(
        self,
        *,
        action: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Record]:
        where: list[str] = []
        args: list[Any] = []
        if action is not None:
            where.append("action = ?")
            args.append(action)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if since is not None:
            where.append("finished_at >= ?")
            args.append(_ts(since))
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            # SQLite sorts NULL lowest, so DESC puts unfinished rows last already (and NULLS
            # LAST would need SQLite 3.30).
            + " ORDER BY finished_at DESC, command_key LIMIT ?"
        )
        args.append(max(0, limit))
        async with self._using(write=False) as conn, conn.execute(sql, args) as cursor:
            rows = await cursor.fetchall()
        return [_record(row) for row in rows]

    async def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        async with (
            self._using(write=False) as conn,
            conn.execute(
                f"SELECT action, status, count(*) FROM {TABLE} GROUP BY action, status"
            ) as cursor,
        ):
            for action, status, n in await cursor.fetchall():
                out.setdefault(action, {})[status] = int(n)
        return out

    async def purge(self, older_than: timedelta, batch_size: int = 1000) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        limit = _ts(cutoff(older_than))
        total = 0
        while True:
            async with self._using(write=True) as conn:
                cursor = await conn.execute(
                    f"DELETE FROM {TABLE} WHERE rowid IN (SELECT rowid FROM {TABLE} "
                    "WHERE finished_at < ? OR (finished_at IS NULL AND created_at < ?) LIMIT ?)",
                    (limit, limit, batch_size),
                )
                deleted = cursor.rowcount
                await cursor.close()
            total += deleted
            if deleted < batch_size:
                return total
            await asyncio.sleep(0)  # let the worker's writes in between batches
