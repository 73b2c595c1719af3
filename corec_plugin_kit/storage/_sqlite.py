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

Small calls skip the hop: a look-up of up to :data:`INLINE_KEYS` keys and a batch of up to
:data:`INLINE_ROWS` records run on the event loop's own thread, on a connection that never
waits for a lock and never checkpoints (the writer's thread does that, every
:data:`CHECKPOINT_COMMITS` of the loop's commits). At a few thousand commands a second every batch
is that small, and the hop there and back cost more CPU than the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar, cast

import aiosqlite

from ..errors import DatabaseUnavailable
from ._base import Record, refuses_content
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
#: A batch of at most this many records is written on the event loop's thread (see
#: :meth:`SQLiteStore._write_inline`): one statement, whose commit waits for fsync (0.1 to
#: 0.3 ms on a local disk) with the GIL given back. The hop to the writer's thread and back
#: wakes two threads a batch; at 2,000 commands/s, where a batch is of one to three records,
#: the worker used 20 % less CPU without it and half the context switches (benchmarks/
#: README.md). Larger batches, a drain's, go to the writer's thread, in parallel with the loop.
INLINE_ROWS = 16
#: Inline writes slower than this on average (a slow or busy disk; the average weighs the
#: last write by :data:`INLINE_WEIGHT`, so one write the OS delayed does not count), or one
#: that fails (another process holds the write lock: the loop's connection never waits), send
#: the writes to the writer's thread for :data:`INLINE_PAUSE_S`: the loop must not wait on
#: the disk.
INLINE_SLOW_S = 0.005
INLINE_WEIGHT = 0.25
INLINE_PAUSE_S = 1.0
#: The loop's connection never checkpoints (``wal_autocheckpoint = 0``): a checkpoint copies
#: the WAL into the database and fsyncs it, milliseconds the loop would stall. After this many
#: of its commits (about 1,000 WAL pages, SQLite's own threshold, at one record a commit) a
#: ``PASSIVE`` checkpoint runs on the writer's thread instead.
CHECKPOINT_COMMITS = 200

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

log = logging.getLogger("corec_plugin_kit.storage")


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
        self._inline_paused_until = 0.0  # perf_counter() before which writes go to the thread
        self._inline_took = 0.0  # seconds an inline write takes, a moving average
        self._inline_commits = 0  # since the last checkpoint was started
        self._checkpoint: asyncio.Future[None] | None = None
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
        count = len(records)
        if count <= INLINE_ROWS and self._write_inline(values, count):
            return
        await self._writer.run(lambda conn: self._upsert(conn, values, count))

    def _write_inline(self, values: list[Any], count: int) -> bool:
        """Write a small batch on the event loop's thread (:data:`INLINE_ROWS`); False when it
        is not written there, and so goes to the writer's thread.

        One statement, a transaction by itself (all or nothing), on the connection the small
        look-ups use. It never waits: with a busy timeout of 0 a lock held elsewhere fails it
        at once. A record the database refuses for its content raises, as on the thread.
        After another failure (the connection is dropped) or while writes take longer than
        :data:`INLINE_SLOW_S` on average, writes go for :data:`INLINE_PAUSE_S` to the writer's
        thread, which waits for locks and maps outages. Writing there after a failure here is
        safe: the upsert is idempotent.
        """
        start = perf_counter()
        if start < self._inline_paused_until:
            return False
        try:
            conn = self._inline
            if conn is None:
                conn = self._inline = self._connect_inline()
            conn.execute(self._rows_sql(count), values).close()
        except Exception as exc:  # the writer's thread tries again, and raises
            if refuses_content(exc):
                raise  # what a record holds: refused on any connection; this one is fine
            self._inline_paused_until = perf_counter() + INLINE_PAUSE_S
            self._drop_inline()
            return False
        end = perf_counter()
        took = self._inline_took = (
            self._inline_took + (end - start - self._inline_took) * INLINE_WEIGHT
        )
        if took > INLINE_SLOW_S:
            self._inline_paused_until = end + INLINE_PAUSE_S
            self._inline_took = 0.0  # measured afresh after the pause
        self._inline_commits += 1
        if self._inline_commits >= CHECKPOINT_COMMITS:
            self._checkpoint_soon()
        return True

    def _checkpoint_soon(self) -> None:
        """Start a ``PASSIVE`` checkpoint on the writer's thread, unless one is on its way."""
        self._inline_commits = 0
        if self._checkpoint is None or self._checkpoint.done():
            self._checkpoint = asyncio.ensure_future(self._writer.run(_checkpoint))
            self._checkpoint.add_done_callback(_checkpointed)

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
                self._inline = self._connect_inline()
            return read(self._inline)
        except (sqlite3.Error, DatabaseUnavailable):
            self._drop_inline()
            return None

    def _connect_inline(self) -> sqlite3.Connection:
        """The event loop's connection: it never waits for a lock, and never checkpoints."""
        conn = self._connect_sync(busy_timeout_s=0)
        try:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable(exc) from exc
        return conn

    def _drop_inline(self) -> None:
        conn, self._inline = self._inline, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

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
        checkpoint, self._checkpoint = self._checkpoint, None
        if checkpoint is not None:
            with contextlib.suppress(Exception):
                await checkpoint
        await self._writer.close()
        await self._looker.close()
        self._drop_inline()
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


def _checkpoint(conn: sqlite3.Connection) -> None:
    """On the writer's thread: copy the WAL into the database (``PASSIVE``: it waits for
    nobody, and writers go on meanwhile). A run that could not take every page (commits came
    in during it) is followed by up to two more, short ones: SQLite starts the WAL over only
    once all of it is in the database, else the file keeps growing."""
    for _ in range(3):
        busy, pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if not busy and done >= pages:
            return


def _checkpointed(checkpoint: asyncio.Future[None]) -> None:
    """A checkpoint that failed is left to the next one (or to SQLite, at the last close)."""
    if not checkpoint.cancelled() and (exc := checkpoint.exception()) is not None:
        log.debug("SQLite checkpoint on the writer's thread failed: %s", exc)


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
