"""SQLite back-end (aiosqlite): the embedded default, one file under ``state_dir``.

One connection per store, in autocommit mode, with WAL so readers (``corec-kit history``, other
workers) never block the writer. Every write is an explicit ``BEGIN IMMEDIATE`` transaction:
taking the write lock up front makes a second process wait (``busy_timeout``) instead of failing
with SQLITE_BUSY when it would upgrade a read lock. An asyncio lock keeps this store's own tasks
from interleaving statements inside one another's transaction on the shared connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from ..errors import DatabaseUnavailable
from ._sql import SQLITE, Row
from ._store import SQLStore

T = TypeVar("T")

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


class SQLiteStore(SQLStore[aiosqlite.Connection]):
    """Records in one SQLite file (created with its folders on :meth:`open`)."""

    backend = "sqlite"
    sql = SQLITE

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.url_display = f"sqlite:///{self.path}"
        self.busy_timeout_s = busy_timeout_s
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
            await self._enter_wal(conn)
            # FULL: a command is acknowledged only once its record is durable, power loss
            # included (NORMAL in WAL mode may lose the last commits on an OS crash).
            await conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            await conn.close()
            raise self._unavailable(exc) from exc
        return conn

    async def _enter_wal(self, conn: aiosqlite.Connection) -> None:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the file.

        On a new file, processes starting together race to switch it to WAL; SQLite answers
        the losers "database is locked" at once, without waiting ``busy_timeout``. So wait
        here, up to the same bound.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_timeout_s
        pause = 0.005
        while True:
            try:
                await conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

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

    async def _run(
        self,
        work: Callable[[aiosqlite.Connection], Awaitable[T]],
        *,
        write: bool = False,
        lookup: bool = False,
    ) -> T:
        if lookup:
            async with self._reading() as conn:
                return await work(conn)
        async with self._using(write=write) as conn:
            return await work(conn)

    async def _bare(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._using(write=False) as conn:
            return await work(conn)

    @staticmethod
    async def _fetch(conn: aiosqlite.Connection, sql: str, args: Sequence[Any]) -> list[Any]:
        async with conn.execute(sql, args) as cursor:
            return cast("list[Any]", await cursor.fetchall())

    @staticmethod
    async def _execute(conn: aiosqlite.Connection, sql: str, args: Sequence[Any]) -> int:
        cursor = await conn.execute(sql, args)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def _write_rows(self, conn: aiosqlite.Connection, rows: list[Row]) -> None:
        await conn.executemany(self.sql.upsert, rows)

    async def open(self) -> None:
        # BEGIN IMMEDIATE serialises workers that start together.
        await self._run(self._migrate_on, write=True)

    async def schema_version(self) -> int | None:
        if not self.path.exists():
            return None  # connecting would create the file
        return await super().schema_version()

    async def server_version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    async def close(self) -> None:
        for conn in (self._reader, self._conn):
            if conn is not None:
                await conn.close()
        self._reader = self._conn = None
