"""SQLite back-end: the embedded default, one file under ``state_dir``.

One aiosqlite connection per store, in autocommit mode, with WAL so readers (``corec-kit
history``, other workers) never block the writer. Every write on it is an explicit ``BEGIN
IMMEDIATE`` transaction: taking the write lock up front makes a second process wait
(``busy_timeout``) instead of failing with SQLITE_BUSY when it would upgrade a read lock. An
asyncio lock keeps this store's own tasks from interleaving statements inside one another's
transaction on the shared connection.

The worker's two hot calls go around it, each to a thread of its own with its own connection
(:class:`_Lane`): ``write_batch`` sends a batch as multi-row ``INSERT .. VALUES`` statements
of a few sizes (:func:`row_chunks`: a batch of up to 64 or of 256 is one statement, 300 are
two), so ``sqlite3`` keeps every statement it needs prepared. One statement is a transaction
by itself and takes the write lock when it starts, as ``BEGIN IMMEDIATE`` does; several run in
one ``BEGIN IMMEDIATE`` transaction. ``find_ok`` reads while a commit waits for fsync. One hop
to the thread and a few statements per batch: ``sqlite3`` gives the GIL back around every
statement it steps, and beside a busy event loop each time it takes it back costs up to a
switch interval (0.5 ms while a worker runs), so per-row statements crawled (measured in
benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from ..errors import DatabaseUnavailable
from ._base import Record
from ._sql import SQLITE
from ._store import SQLStore

T = TypeVar("T")

#: A look-up of at most this many keys runs on the event loop's thread (see
#: :meth:`SQLiteStore._read_inline`); a larger one, on its own thread, in parallel with the loop.
#: One read of the default ``batch_size`` (256) fits: a look-up of 256 keys takes about 0.1 ms
#: of the loop (p99 0.4 ms, 100,000 rows), where the thread's GIL hand-offs cost the loop more
#: (SQLite records drained 8 % faster than with 32 here: median of seven pairs,
#: benchmarks/README.md).
INLINE_KEYS = 256

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
        self._writer = _Lane(self, "corec-sqlite-writer")
        # In WAL mode the look-ups read while the writer commits (and waits for fsync), so
        # reading the next batch never queues behind a commit.
        self._looker = _Lane(self, "corec-sqlite-lookup")
        self._inline: sqlite3.Connection | None = None
        self._texts: dict[int, str] = {}  # upsert_rows(count), by count

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
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, write: bool = False
    ) -> T:
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

    async def _send(self, records: list[Record], now: datetime) -> None:
        row = self.sql.row
        values = [value for record in records for value in row(record, now)]
        await self._writer.run(lambda conn: self._upsert(conn, values, len(records)))

    def _upsert(self, conn: sqlite3.Connection, values: list[Any], count: int) -> None:
        """In the writer's thread: ``count`` rows (``values``, row after row) in the
        statements :func:`row_chunks` sizes, in one transaction when there are several."""
        sizes = row_chunks(count, max_rows(conn))
        if len(sizes) == 1:
            conn.execute(self._rows_sql(count), values).close()
            return
        width = self.sql.row_width
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = 0
            for size in sizes:
                part = values[start * width : (start + size) * width]
                conn.execute(self._rows_sql(size), part).close()
                start += size
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _rows_sql(self, count: int) -> str:
        text = self._texts.get(count)
        if text is None:
            text = self._texts[count] = self.sql.upsert_rows(count)
        return text

    async def _lookup(self, statements: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        def read(conn: sqlite3.Connection) -> list[Any]:
            return [row for sql, args in statements for row in conn.execute(sql, args)]

        if sum(len(args) for _, args in statements) <= INLINE_KEYS:
            rows = self._read_inline(read)
            if rows is not None:
                return rows
        return await self._looker.run(read)

    def _read_inline(self, read: Callable[[sqlite3.Connection], list[Any]]) -> list[Any] | None:
        """A small look-up on the event loop's own thread: an indexed read of a few keys takes
        tens of microseconds, where a hop to a thread and back took a millisecond at the
        median under load (and a switch interval at worst). Never waits: a connection that
        fails or meets a lock (busy timeout 0) is dropped and ``None`` sends the look-up to
        its thread, which waits and maps outages."""
        try:
            if self._inline is None:
                self._inline = self._connect_sync(busy_timeout_s=0)
            return read(self._inline)
        except (sqlite3.Error, DatabaseUnavailable):
            conn, self._inline = self._inline, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            return None

    async def open(self) -> None:
        # BEGIN IMMEDIATE serialises workers that start together.
        await self._run(self._migrate_on, write=True)

    async def warm(self) -> None:
        """The writer's thread and connection, and the event loop's own reading connection:
        each first command waited a few milliseconds for them. The look-up thread is left to
        open on first use: it takes only reads over :data:`INLINE_KEYS` keys and fallbacks."""
        with contextlib.suppress(DatabaseUnavailable):
            await self._writer.run(_no_rows)
        self._read_inline(_no_rows)

    async def schema_version(self) -> int | None:
        if not self.path.exists():
            return None  # connecting would create the file
        return await super().schema_version()

    async def server_version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    async def close(self) -> None:
        await self._writer.close()
        await self._looker.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._conn is not None:
            await self._conn.close()
        self._conn = None

    def _connect_sync(self, busy_timeout_s: float | None = None) -> sqlite3.Connection:
        """A plain ``sqlite3`` connection for a :class:`_Lane` (its own thread uses it alone).

        :meth:`open` has already made the file and put it in WAL mode, which the file keeps.
        """
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None,
                timeout=self.busy_timeout_s if busy_timeout_s is None else busy_timeout_s,
                check_same_thread=False, cached_statements=CACHED_STATEMENTS,
            )  # fmt: skip
        except (OSError, sqlite3.Error) as exc:
            raise self._unavailable(exc) from exc
        try:
            conn.execute("PRAGMA synchronous = FULL")  # as the main connection: see there
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable(exc) from exc
        return conn


def _no_rows(conn: sqlite3.Connection) -> list[Any]:
    """A call that only opens the connection it is given (:meth:`SQLiteStore.warm`)."""
    return []


def max_rows(conn: sqlite3.Connection) -> int:
    """Rows one statement can take as parameters on ``conn`` (SQLite's bound-parameter
    limit: 32766 since 3.32, 999 before; 250,000 in some builds)."""
    if sys.version_info >= (3, 11):
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    else:
        limit = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
    return max(1, limit // SQLITE.row_width)


#: The most rows one statement of a batch takes (see :func:`row_chunks`).
CHUNK_ROWS = 256
#: Statements of up to this many rows are sent at their exact size (see :func:`row_chunks`).
EXACT_ROWS = 64
#: Prepared statements each writer connection keeps (``sqlite3``'s default is 128): the
#: :data:`EXACT_ROWS` exact sizes and the larger powers of two, with room to spare.
CACHED_STATEMENTS = 256


def row_chunks(count: int, most: int) -> list[int]:
    """The statement sizes a batch of ``count`` rows goes in, none over ``most`` (what the
    parameter limit allows) or :data:`CHUNK_ROWS`, largest first: sizes of up to
    :data:`EXACT_ROWS` as they are, larger ones as powers of two (300: 256, 44; 255: 128,
    64, 63). So a small batch is one statement and a large one a few, from a set of texts
    ``sqlite3`` keeps prepared: a statement of a size not seen lately is prepared again, about
    a quarter of the writer's work on a batch of hundreds (benchmarks/README.md)."""
    if count <= min(most, EXACT_ROWS):
        return [count]
    top = 1 << (min(most, CHUNK_ROWS).bit_length() - 1)
    sizes = [top] * (count // top)
    rest = count % top
    while rest > EXACT_ROWS:
        part = 1 << (rest.bit_length() - 1)
        sizes.append(part)
        rest -= part
    if rest:
        sizes.append(rest)
    return sizes


class _Lane:
    """A thread of its own with its own ``sqlite3`` connection: one hop per call.

    The connection is opened on first use and dropped after an outage (a locked, missing or
    unreadable file...), so the next call opens a fresh one.
    """

    def __init__(self, store: SQLiteStore, name: str) -> None:
        self.store = store
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """In the lane's thread."""
        if self._conn is None:
            self._conn = self.store._connect_sync()
        try:
            return work(self._conn)
        except sqlite3.DatabaseError as exc:  # OperationalError is one
            if any(text in str(exc).lower() for text in _UNAVAILABLE):
                self._drop()
                raise self.store._unavailable(exc) from exc
            raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, work)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(pool, self._drop)
            pool.shutdown(wait=False)
