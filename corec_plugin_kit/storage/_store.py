"""The record operations of both SQL back-ends, once: :class:`SQLStore`.

Every operation is written here against the primitives a back-end provides: run some work on
a connection (:meth:`SQLStore._run`, :meth:`SQLStore._bare`), fetch rows, execute a statement,
send a batch of records (:meth:`SQLStore._send`) and run the worker's look-up
(:meth:`SQLStore._lookup`). The SQL text comes from the
back-end's :class:`~._sql.Statements`; connections, transactions and the mapping of driver
errors stay in the back-end modules.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Generic, TypeVar

from ._base import Record, RecordStore, SchemaTooNew, coalesce, cutoff
from ._schema import SCHEMA_VERSION, VERSION_TABLE
from ._sql import Statements

C = TypeVar("C")  # a back-end's connection
T = TypeVar("T")


class SQLStore(RecordStore, Generic[C]):
    """A :class:`RecordStore` over SQL: the operations, given a back-end's connections."""

    #: The back-end's SQL dialect, compiled.
    sql: ClassVar[Statements]

    def __init__(self) -> None:
        #: (version, statements) to apply; tests cut it to play an older corec-plugin-kit.
        self.migrations: Sequence[tuple[int, Sequence[str]]] = self.sql.migrations

    # ------------------------------------------------------------------ back-end primitives

    @abc.abstractmethod
    async def _run(self, work: Callable[[C], Awaitable[T]], *, write: bool = False) -> T:
        """``work(connection)`` on a usable schema, outages mapped to ``DatabaseUnavailable``.

        ``write``: inside one write transaction.
        """

    @abc.abstractmethod
    async def _bare(self, work: Callable[[C], Awaitable[T]]) -> T:
        """Like :meth:`_run`, without creating or migrating anything first."""

    @staticmethod
    @abc.abstractmethod
    async def _fetch(conn: C, sql: str, args: Sequence[Any]) -> Sequence[Any]:
        """Every row ``sql`` selects."""

    @staticmethod
    @abc.abstractmethod
    async def _execute(conn: C, sql: str, args: Sequence[Any]) -> int:
        """Run ``sql``; the number of rows it changed."""

    @abc.abstractmethod
    async def _send(self, records: list[Record], now: datetime) -> None:
        """Upsert ``records`` (one per key) all or nothing; ``now``: the default
        ``created_at`` (rows in :data:`~._schema.COLUMNS` order: ``self.sql.row``)."""

    @abc.abstractmethod
    async def _lookup(self, statements: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        """The rows the worker's look-up ``statements`` select (it must not queue behind a
        commit)."""

    # ------------------------------------------------------------------ schema

    async def _migrate_on(self, conn: C) -> None:
        """Create or migrate the schema, inside the caller's transaction.

        All pending versions in one transaction: a half-migrated database is never left behind.
        """
        sql = self.sql
        if sql.migration_lock is not None:
            await self._execute(conn, sql.migration_lock, ())
        await self._execute(conn, sql.create_version_table, ())
        current = await self._max_version(conn) or 0
        known = max(max(version for version, _ in self.migrations), SCHEMA_VERSION)
        if current > known:
            raise SchemaTooNew(current, known, self.url_display)
        for version, statements in self.migrations:
            if version <= current:
                continue
            for statement in statements:
                await self._execute(conn, statement, ())
            await self._execute(conn, sql.record_version, (version,))

    async def _max_version(self, conn: C) -> int | None:
        rows = await self._fetch(conn, self.sql.max_version, ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def _version(self, conn: C) -> int | None:
        rows = await self._fetch(conn, self.sql.table_exists, (VERSION_TABLE,))
        if not rows or rows[0][0] is None:
            return None
        return await self._max_version(conn)

    async def schema_version(self) -> int | None:
        return await self._bare(self._version)

    async def ping(self) -> bool:
        try:
            await self._bare(lambda conn: self._fetch(conn, "SELECT 1", ()))
            return True
        except Exception:  # noqa: BLE001 - ping reports, never raises
            return False

    # ------------------------------------------------------------------ records

    async def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        await self._send(coalesce(records), datetime.now(timezone.utc))

    async def _select(self, sql: str, args: Sequence[Any]) -> list[Record]:
        record = self.sql.record
        return [record(row) for row in await self._run(lambda c: self._fetch(c, sql, args))]

    async def get(self, key: str) -> Record | None:
        found = await self._select(self.sql.get, (key,))
        return found[0] if found else None

    async def find_ok(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        record = self.sql.record
        rows = await self._lookup(self.sql.find_ok(list(dict.fromkeys(keys))))
        return {row[0]: record(row) for row in rows}

    async def query(
        self,
        *,
        action: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Record]:
        return await self._select(*self.sql.query(action, status, since, limit, until=until))

    async def counts(self) -> dict[str, dict[str, int]]:
        sql = self.sql.counts
        out: dict[str, dict[str, int]] = {}
        for action, status, n in await self._run(lambda conn: self._fetch(conn, sql, ())):
            out.setdefault(action, {})[status] = int(n)
        return out

    async def purge(self, older_than: timedelta, batch_size: int = 1000) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        sql, args = self.sql.purge, self.sql.purge_args(cutoff(older_than), batch_size)
        total = 0
        while True:
            deleted = await self._run(lambda conn: self._execute(conn, sql, args), write=True)
            total += deleted
            if deleted < batch_size:
                return total
            await asyncio.sleep(0)  # let the worker's writes in between batches
