"""PostgreSQL back-end (asyncpg pool), as the original CoreC guide keeps its records.

JSON fields are JSONB, timestamps ``timestamptz``. A batch is one statement and one round trip
(see :data:`WRITE_METHODS`; ``benchmarks/bench_storage.py`` measures the three). Outages are
mapped to :class:`~corec_plugin_kit.errors.DatabaseUnavailable`; the pool reconnects on the
next call, and a connection found dead (server restarted) is replaced and the write retried
once at once, which is safe because the upsert is idempotent.
"""

# Statements are composed from this module's constants (table and column names), never from
# input: every value goes through a placeholder.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

import asyncpg

from ..errors import DatabaseUnavailable
from ..redaction import redact, redact_url
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

T = TypeVar("T")
WriteMethod = Literal["executemany", "unnest", "copy"]
#: How :meth:`PostgresStore.write_batch` sends a batch. All three are one transaction:
#: ``unnest`` (default): one INSERT .. SELECT FROM unnest($1::text[], ...) ON CONFLICT: one
#: statement, one round trip; on localhost it and ``copy`` trade places within noise, and it is
#: the only one that stays one round trip over a network (figures in docs/storage.md);
#: ``executemany``: the upsert once per record, pipelined (asyncpg sends them in one go);
#: ``copy``: BEGIN, CREATE TEMP TABLE IF NOT EXISTS, COPY into it, INSERT .. SELECT upsert,
#: COMMIT: five round trips.
WRITE_METHODS: tuple[WriteMethod, ...] = ("unnest", "executemany", "copy")

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE {TABLE} (
                command_key text PRIMARY KEY,
                action text NOT NULL,
                processor text,
                status text NOT NULL,
                params jsonb,
                result jsonb,
                error jsonb,
                deliveries integer NOT NULL DEFAULT 1,
                created_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                duration_ms double precision
            )""",
            f"CREATE INDEX {TABLE}_action_status_finished ON {TABLE} (action, status, finished_at)",
        ),
    ),
    # v2: retention purges and `history --since` scan by time alone.
    (2, (f"CREATE INDEX {TABLE}_finished ON {TABLE} (finished_at)",)),
)

_TYPES = (
    "text", "text", "text", "text", "jsonb", "jsonb", "jsonb",
    "integer", "timestamptz", "timestamptz", "double precision",
)  # fmt: skip
_COLS = ", ".join(COLUMNS)
_UPSERT = f"ON CONFLICT (command_key) DO UPDATE SET {upsert_assignments('GREATEST')}"
_INSERT_ONE = (
    f"INSERT INTO {TABLE} AS c ({_COLS}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) {_UPSERT}"
)
# JSON travels as text[] and is cast per element on the server: asyncpg encodes a text array
# faster than a jsonb one, and the server parses the JSON either way.
_INSERT_UNNEST = (
    f"INSERT INTO {TABLE} AS c ({_COLS}) SELECT "
    + ", ".join(f"{c}::jsonb" if t == "jsonb" else c for c, t in zip(COLUMNS, _TYPES, strict=True))
    + " FROM unnest("
    + ", ".join(f"${i}::{'text' if t == 'jsonb' else t}[]" for i, t in enumerate(_TYPES, 1))
    + f") AS t({_COLS}) {_UPSERT}"
)
_STAGE = "corec_commands_stage"
_CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE {TABLE} INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS"
)
_INSERT_STAGE = f"INSERT INTO {TABLE} AS c ({_COLS}) SELECT {_COLS} FROM {_STAGE} {_UPSERT}"

# SQLSTATE classes that mean the server cannot serve us now rather than a bad statement:
# 08 connection exception, 53 insufficient resources (too many connections, disk full),
# 57 operator intervention (shutdown, starting up, cancelled), 28 auth, 3D no such database.
_OUTAGE_CLASSES = ("08", "53", "57", "28", "3D")
# ...and the states that mean this connection died while the server may be fine again now.
_LOST_STATES = ("08003", "08006", "57P01", "57P02")


def display_url(url: str) -> str:
    """The URL with its password (userinfo or ``?password=``...) replaced by ``***``."""
    return redact_url(url)


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
        utc(created(record, now)),
        utc(record.finished_at),
        record.duration_ms,
    )


def _record(row: Any) -> Record:
    return Record(
        command_key=row[0],
        action=row[1],
        processor=row[2],
        status=row[3],
        params=loads(row[4]),
        result=loads(row[5]),
        error=loads(row[6]),
        deliveries=row[7],
        created_at=row[8],
        finished_at=row[9],
        duration_ms=row[10],
    )


def _outage(exc: BaseException) -> bool:
    # Refused, reset, unreachable, timed out (asyncio's TimeoutError is no OSError before 3.11).
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _OUTAGE_CLASSES
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)  # "connection is closed", "pool is closing"
    return _half_dead(exc)


def _half_dead(exc: BaseException) -> bool:
    """A pooled connection the server killed while idle, its FATAL not yet read by asyncpg.

    The next statement on it fails with InternalClientError ("another operation is in
    progress"): the connection is unusable, the server may be fine.
    """
    return isinstance(exc, asyncpg.exceptions.InternalClientError)


def _lost(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection is closed" in str(exc)
    return _half_dead(exc) or getattr(exc, "sqlstate", None) in _LOST_STATES


async def _keep_session(conn: Any) -> None:
    """Pool ``reset`` hook: skip asyncpg's reset query on release (a second round trip per batch).

    asyncpg still rolls back a transaction left open. Nothing else needs resetting: the store
    never LISTENs, sets no session variables after connecting, and takes only transaction-level
    advisory locks.
    """


class PostgresStore(RecordStore):
    """Records in PostgreSQL through an asyncpg pool.

    :param url: a ``postgresql://`` or ``postgres://`` DSN (asyncpg's syntax; extra query
        parameters become server settings, e.g. ``?search_path=myschema``).
    :param server_settings: more session settings (the test fixtures set ``search_path``).
    :param write_method: one of :data:`WRITE_METHODS`.
    :param connect_timeout: seconds to wait for a connection before calling the DB down.
    :param command_timeout: seconds one statement may take before calling the DB down.
    :param pool: an existing asyncpg pool to use instead of opening one (``url`` may then be
        ``None``), e.g. CoreC's ``nucleus.db_pool``. The store does not own it: :meth:`close`
        leaves it open for its owner. ``server_settings``, sizes and timeouts then do not apply.
    """

    backend = "postgresql"

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: Any = None,
        server_settings: dict[str, str] | None = None,
        min_size: int = 1,
        max_size: int = 4,
        write_method: WriteMethod = "unnest",
        connect_timeout: float = 5.0,
        command_timeout: float = 60.0,
    ) -> None:
        if write_method not in WRITE_METHODS:
            raise ValueError(f"write_method must be one of {WRITE_METHODS}")
        if url is None and pool is None:
            raise ValueError("PostgresStore needs a url or an existing pool")
        self.url = url or ""
        self.url_display = display_url(url) if url else "the given asyncpg pool"
        self.server_settings = dict(server_settings or {})
        self.min_size = min_size
        self.max_size = max_size
        self.write_method: WriteMethod = write_method
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.migrations = MIGRATIONS
        self._pool: Any = pool
        self.owns_pool = pool is None
        self._pool_lock = asyncio.Lock()
        self._migrated = False

    # ------------------------------------------------------------------ connection

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        reason = redact(str(exc)) or type(exc).__name__  # asyncpg may quote the DSN
        return DatabaseUnavailable(
            f"PostgreSQL at {self.url_display} cannot be reached: {reason}; check that the "
            "server runs and kernel.database_url (COREC_DATABASE_URL) is right",
            details={"url": self.url_display, "exception": type(exc).__name__},
        )

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.connect_timeout,
                    command_timeout=self.command_timeout,
                    server_settings=self.server_settings or None,
                    reset=_keep_session,
                )
        return self._pool

    async def _run(self, work: Callable[[Any], Awaitable[T]], *, retry: bool = True) -> T:
        """Run ``work(connection)``; map outages, and retry once on a connection found dead."""
        for attempt in (1, 2):
            try:
                if not self._migrated:
                    await self._migrate()
                pool = await self._get_pool()
                async with pool.acquire() as conn:
                    return await work(conn)
            except Exception as exc:
                if not _outage(exc):
                    raise
                if self._pool is not None:
                    # Every idle connection of a restarted server is dead too: replace them
                    # all on next use instead of failing once per pooled connection.
                    await self._pool.expire_connections()
                if retry and attempt == 1 and _lost(exc):
                    continue
                raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def open(self) -> None:
        await self._run(lambda conn: asyncio.sleep(0))

    async def _migrate(self) -> None:
        """Create or migrate the schema (once per store; called by the first operation)."""
        pool = await self._get_pool()
        known = max(max(version for version, _ in self.migrations), SCHEMA_VERSION)
        async with pool.acquire() as conn, conn.transaction():
            # Workers that start together take turns; the lock is per schema so the
            # per-test schemas of the test suite do not wait for one another.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.corec_schema'))"
            )
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = await conn.fetchval(f"SELECT max(version) FROM {VERSION_TABLE}") or 0
            if current > known:
                raise SchemaTooNew(current, known, self.url_display)
            for version, statements in self.migrations:
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)", version)
        self._migrated = True

    async def schema_version(self) -> int | None:
        async def read(conn: Any) -> int | None:
            if await conn.fetchval("SELECT to_regclass($1)", VERSION_TABLE) is None:
                return None
            value = await conn.fetchval(f"SELECT max(version) FROM {VERSION_TABLE}")
            return int(value) if value is not None else None

        return await self._bare(read)

    async def server_version(self) -> str:
        """``PostgreSQL 15.20`` (without creating the schema; for ``corec-kit check``)."""

        async def read(conn: Any) -> str:
            version = conn.get_server_version()
            return f"PostgreSQL {version.major}.{version.minor}"

        return await self._bare(read)

    async def _bare(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Like :meth:`_run` without migrating first."""
        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                return await work(conn)
        except Exception as exc:
            if _outage(exc):
                raise self._unavailable(exc) from exc
            raise

    async def close(self) -> None:
        if not self.owns_pool:
            return  # someone else's pool: it stays open (and usable by this store) for them
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self.connect_timeout)
            except (asyncio.TimeoutError, OSError):
                pool.terminate()  # the server is gone: do not wait for goodbyes

    async def ping(self) -> bool:
        try:
            await self._bare(lambda conn: conn.fetchval("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - ping reports, never raises
            return False

    # ------------------------------------------------------------------ records

    async def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        now = datetime.now(timezone.utc)
        rows = [_row(record, now) for record in coalesce(records)]
        method = self.write_method

        async def write(conn: Any) -> None:
            if method == "unnest":
                columns = [list(column) for column in zip(*rows, strict=True)]
                await conn.execute(_INSERT_UNNEST, *columns)
            elif method == "executemany":
                await conn.executemany(_INSERT_ONE, rows)  # atomic since asyncpg 0.22
            else:
                async with conn.transaction():
                    await conn.execute(_CREATE_STAGE)
                    await conn.copy_records_to_table(_STAGE, records=rows, columns=COLUMNS)
                    await conn.execute(_INSERT_STAGE)

        await self._run(write)

    async def get(self, key: str) -> Record | None:
        sql = f"SELECT {_COLS} FROM {TABLE} WHERE command_key = $1"
        row = await self._run(lambda conn: conn.fetchrow(sql, key))
        return _record(row) if row is not None else None

    async def find_ok(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        sql = f"SELECT {_COLS} FROM {TABLE} WHERE status = 'ok' AND command_key = ANY($1::text[])"
        rows = await self._run(lambda conn: conn.fetch(sql, list(dict.fromkeys(keys))))
        return {row[0]: _record(row) for row in rows}

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
        for column, value in (("action", action), ("status", status)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if since is not None:
            args.append(utc(since))
            where.append(f"finished_at >= ${len(args)}")
        args.append(max(0, limit))
        sql = (
            f"SELECT {_COLS} FROM {TABLE}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY finished_at DESC NULLS LAST, command_key LIMIT ${len(args)}"
        )
        rows = await self._run(lambda conn: conn.fetch(sql, *args))
        return [_record(row) for row in rows]

    async def counts(self) -> dict[str, dict[str, int]]:
        sql = f"SELECT action, status, count(*) FROM {TABLE} GROUP BY action, status"
        out: dict[str, dict[str, int]] = {}
        for action, status, n in await self._run(lambda conn: conn.fetch(sql)):
            out.setdefault(action, {})[status] = int(n)
        return out

    async def purge(self, older_than: timedelta, batch_size: int = 1000) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        limit = cutoff(older_than)
        sql = (
            f"DELETE FROM {TABLE} WHERE command_key IN (SELECT command_key FROM {TABLE} "
            "WHERE finished_at < $1 OR (finished_at IS NULL AND created_at < $1) LIMIT $2)"
        )
        total = 0
        while True:
            status = await self._run(lambda conn: conn.execute(sql, limit, batch_size))
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch_size:
                return total
