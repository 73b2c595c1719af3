"""PostgreSQL back-end (asyncpg pool), as the original CoreC guide keeps its records.

JSON fields are JSONB, timestamps ``timestamptz``. A batch is one statement and one round trip
(see :data:`WRITE_METHODS`; ``benchmarks/bench_storage.py`` measures them). Outages are
mapped to :class:`~corec_plugin_kit.errors.DatabaseUnavailable`; the pool reconnects on the
next call, and a connection found dead (server restarted) is replaced and the write retried
once at once, which is safe because the upsert is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import asyncpg

from ..errors import ConfigError, DatabaseUnavailable
from ..redaction import redact, redact_url
from ._base import Record, dumps_batch
from ._schema import COLUMNS
from ._sql import POSTGRES, Row, json_row
from ._store import SQLStore

log = logging.getLogger("corec_plugin_kit.storage")

T = TypeVar("T")
WriteMethod = Literal["json", "executemany", "unnest", "copy"]
#: How :meth:`PostgresStore.write_batch` sends a batch. All four are one transaction:
#: ``json`` (default): one INSERT .. SELECT FROM jsonb_array_elements($1::jsonb) ON CONFLICT, the
#: batch encoded by orjson as one string: one statement, one round trip, and the least client
#: CPU (a fifth of ``unnest``'s, and no more server CPU); a batch holding a value that needs
#: care (a NUL character, an integer beyond 64 bits) goes as ``unnest`` does;
#: ``unnest``: one INSERT .. SELECT FROM unnest($1::text[], ...) ON CONFLICT, one array per
#: column; ``executemany``: the upsert once per record, pipelined (asyncpg sends them in one
#: go); ``copy``: BEGIN, CREATE TEMP TABLE IF NOT EXISTS, COPY into it, INSERT .. SELECT
#: upsert, COMMIT: five round trips. Figures in docs/storage.md.
WRITE_METHODS: tuple[WriteMethod, ...] = ("json", "unnest", "executemany", "copy")

_INSERT_JSON = POSTGRES.upsert_json_values()
_INSERT_UNNEST = POSTGRES.upsert_arrays()
_STAGE = "corec_commands_stage"
_CREATE_STAGE, _INSERT_STAGE = POSTGRES.upsert_staged(_STAGE)

# SQLSTATE classes that mean the server cannot serve us now rather than a bad statement:
# 08 connection exception, 53 insufficient resources (too many connections, disk full),
# 57 operator intervention (shutdown, starting up, cancelled), 28 auth, 3D no such database.
_OUTAGE_CLASSES = ("08", "53", "57", "28", "3D")
# ...and the states that mean this connection died while the server may be fine again now.
_LOST_STATES = ("08003", "08006", "57P01", "57P02")


def display_url(url: str) -> str:
    """The URL with its password (userinfo or ``?password=``...) replaced by ``***``."""
    return redact_url(url)


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


class PostgresStore(SQLStore[Any]):
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
    sql = POSTGRES

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: Any = None,
        server_settings: dict[str, str] | None = None,
        min_size: int = 1,
        max_size: int = 4,
        write_method: WriteMethod = "json",
        connect_timeout: float = 5.0,
        command_timeout: float = 60.0,
    ) -> None:
        if write_method not in WRITE_METHODS:
            raise ValueError(f"write_method must be one of {WRITE_METHODS}")
        if url is None and pool is None:
            raise ValueError("PostgresStore needs a url or an existing pool")
        super().__init__()
        self.url = url or ""
        self.url_display = display_url(url) if url else "the given asyncpg pool"
        self.server_settings = dict(server_settings or {})
        self.min_size = min_size
        self.max_size = max_size
        self.write_method: WriteMethod = write_method
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
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
                try:
                    self._pool = await asyncpg.create_pool(
                        self.url,
                        min_size=self.min_size,
                        max_size=self.max_size,
                        timeout=self.connect_timeout,
                        command_timeout=self.command_timeout,
                        server_settings=self.server_settings or None,
                        reset=_keep_session,
                    )
                except asyncpg.exceptions.ClientConfigurationError as exc:
                    # e.g. sslmode=verify-full without a root certificate: nothing to retry.
                    first = redact(str(exc)).splitlines()[0]
                    raise ConfigError(f"kernel.database_url: {first}") from None
        return self._pool

    async def _run(self, work: Callable[[Any], Awaitable[T]], *, write: bool = False) -> T:
        """Run ``work(connection)``; map outages, and retry once on a connection found dead.

        Each statement is its own transaction (``write`` changes nothing here).
        """
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
                if attempt == 1 and _lost(exc):
                    continue
                raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def open(self) -> None:
        await self._run(lambda conn: asyncio.sleep(0))

    async def warm(self) -> None:
        """A second pooled connection (the pool opens one): the worker looks records up while
        it writes others, and its first batch waited for that connection to open."""
        held: list[Any] = []
        try:
            pool = await self._get_pool()
            for _ in range(min(2, pool.get_max_size())):
                held.append(await pool.acquire(timeout=self.connect_timeout))
        except Exception as exc:  # noqa: BLE001 - best effort: the first batch opens the rest
            log.debug("could not open a second PostgreSQL connection ahead: %s", redact(str(exc)))
        finally:
            for conn in held:
                await pool.release(conn)

    async def _migrate(self) -> None:
        """Create or migrate the schema (once per store; called by the first operation)."""
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await self._migrate_on(conn)
        self._migrated = True

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

    @staticmethod
    async def _fetch(conn: Any, sql: str, args: Sequence[Any]) -> list[Any]:
        rows: list[Any] = await conn.fetch(sql, *args)
        return rows

    @staticmethod
    async def _execute(conn: Any, sql: str, args: Sequence[Any]) -> int:
        status: str = await conn.execute(sql, *args)  # "DELETE 5", "CREATE INDEX"...
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    async def _send(self, records: list[Record], now: datetime) -> None:
        if self.write_method == "json":
            batch = dumps_batch([json_row(record, now) for record in records])
            if batch is not None:
                await self._run(lambda conn: conn.execute(_INSERT_JSON, batch), write=True)
                return
        row = self.sql.row
        rows = [row(record, now) for record in records]
        await self._run(lambda conn: self._write_rows(conn, rows), write=True)

    async def _lookup(self, statements: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        async def read(conn: Any) -> list[Any]:
            return [row for sql, args in statements for row in await self._fetch(conn, sql, args)]

        return await self._run(read)

    async def _write_rows(self, conn: Any, rows: list[Row]) -> None:
        if self.write_method in ("json", "unnest"):
            columns = [list(column) for column in zip(*rows, strict=True)]
            await conn.execute(_INSERT_UNNEST, *columns)
        elif self.write_method == "executemany":
            await conn.executemany(self.sql.upsert, rows)  # atomic since asyncpg 0.22
        else:
            async with conn.transaction():
                await conn.execute(_CREATE_STAGE)
                await conn.copy_records_to_table(_STAGE, records=rows, columns=COLUMNS)
                await conn.execute(_INSERT_STAGE)
