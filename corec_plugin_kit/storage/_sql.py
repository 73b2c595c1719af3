"""The one query builder and row mapping of both back-ends, parameterised by SQL dialect.

A :class:`Dialect` says how SQLite and PostgreSQL differ (placeholders, type names, the max
function, NULL ordering, how timestamps travel, array parameters...); :class:`Statements`
turns the logical schema (:mod:`._schema`) and each operation into that dialect's SQL text,
once, when this module is imported: no statement is composed per call on the write path.
Back-ends send the text and map errors; they compose none of it.
"""

# Statements are composed from the schema's constants (table and column names), never from
# input: every value goes through a placeholder.
# ruff: noqa: S608

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._base import Record, created, dumps, loads, utc
from ._schema import (
    COLUMNS,
    MIGRATIONS,
    RECORD_COLUMNS,
    TABLE,
    VERSION_TABLE,
    VERSION_TABLE_DEF,
    Column,
    CreateIndex,
    Kind,
    Step,
)

#: Keys per ``IN (...)`` list where there are no array parameters (SQLite's bound-parameter
#: limit is 999 before 3.32).
KEY_CHUNK = 500

Row = tuple[Any, ...]
#: A row selected in :data:`COLUMNS` order, as the drivers return it.
Selected = tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any, Any, Any]
RowWriter = Callable[[Record, datetime], Row]
RowReader = Callable[[Selected], Record]


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL of two databases, for the statements this package runs."""

    name: str
    #: Logical column type -> SQL type.
    types: Mapping[Kind, str]
    #: The current time, as a timestamp column stores it.
    now: str
    #: Whether ``DEFAULT now`` columns have the default in their DDL.
    now_default: bool
    #: Two-argument maximum (``max`` / ``GREATEST``).
    greatest: str
    #: ``$1, $2...`` (asyncpg) rather than ``?`` (sqlite3).
    numbered: bool
    #: Appended to ``ORDER BY finished_at DESC`` to put unfinished rows last.
    nulls_last: str
    #: The column a batched DELETE picks its rows by.
    row_id: str
    #: One parameter, a table name: a row whose first value is not NULL when the table exists.
    table_exists: str
    #: Run first in the migrating transaction so that workers starting together take turns.
    migration_lock: str | None
    #: Array parameters (``= ANY($1::text[])``, ``unnest``) rather than ``IN (?, ?...)`` lists.
    arrays: bool
    #: Python -> parameter for a timestamp.
    write_ts: Callable[[datetime | None], Any]
    #: Column value -> datetime; ``None`` when the driver returns aware datetimes already.
    read_ts: Callable[[Any], datetime | None] | None


# ------------------------------------------------------------------------------- row mapping


def row_writer(ts: Callable[[datetime | None], Any]) -> RowWriter:
    """``(record, now) -> parameters`` in :data:`COLUMNS` order (``now``: default created_at)."""

    def row(record: Record, now: datetime) -> Row:
        return (
            record.command_key,
            record.action,
            record.processor,
            record.status,
            dumps(record.params),
            dumps(record.result),
            dumps(record.error),
            record.deliveries,
            ts(created(record, now)),
            ts(record.finished_at),
            record.duration_ms,
        )

    return row


def json_row(record: Record, now: datetime) -> tuple[Any, ...]:
    """A record as :meth:`Statements.upsert_json_values` reads it (JSON columns as values,
    timestamps as aware datetimes): encode a batch of them with :func:`~._base.dumps_batch`."""
    return (
        record.command_key,
        record.action,
        record.processor,
        record.status,
        record.params,
        record.result,
        record.error,
        record.deliveries,
        utc(created(record, now)),
        utc(record.finished_at),
        record.duration_ms,
    )


def record_reader(ts: Callable[[Any], datetime | None] | None) -> RowReader:
    """``row -> Record`` for rows selected in :data:`COLUMNS` order (Record's field order)."""
    if ts is None:
        return lambda r: Record(*r[:4], loads(r[4]), loads(r[5]), loads(r[6]), *r[7:])
    convert = ts
    return lambda r: Record(
        *r[:4], loads(r[4]), loads(r[5]), loads(r[6]), r[7], convert(r[8]), convert(r[9]), r[10]
    )


# --------------------------------------------------------------------------------- statements


def upsert_assignments(greatest: str) -> str:
    """``SET`` list of the upsert: the SQL twin of :func:`~._base.merge` (``c`` = stored row).

    ``greatest`` is the two-argument max function of the dialect (GREATEST / max).
    """
    keep = "c.status = 'ok' AND excluded.status <> 'ok'"
    sets = [f"deliveries = {greatest}(c.deliveries, excluded.deliveries)"]
    for column in COLUMNS:
        if column in ("command_key", "deliveries", "created_at"):
            continue
        sets.append(f"{column} = CASE WHEN {keep} THEN c.{column} ELSE excluded.{column} END")
    return ", ".join(sets)


class Statements:
    """The SQL text of every operation in one dialect, plus its row mapping; built once."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.row: RowWriter = row_writer(dialect.write_ts)
        self.record: RowReader = record_reader(dialect.read_ts)
        p = self.param
        cols = ", ".join(COLUMNS)
        # The upsert around its rows (see upsert_from).
        self._insert = f"INSERT INTO {TABLE} AS c ({cols})"
        self._on_conflict = (
            f"ON CONFLICT (command_key) DO UPDATE SET {upsert_assignments(dialect.greatest)}"
        )
        select = f"SELECT {cols} FROM {TABLE}"
        # schema
        self.create_version_table = self.ddl(VERSION_TABLE_DEF)
        self.migrations = tuple(
            (version, tuple(self.ddl(step) for step in steps)) for version, steps in MIGRATIONS
        )
        self.table_exists = dialect.table_exists
        self.migration_lock = dialect.migration_lock
        self.max_version = f"SELECT max(version) FROM {VERSION_TABLE}"
        self.record_version = (
            f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES ({p(1)}, {dialect.now})"
        )
        # records
        self.upsert = self.upsert_from(f"VALUES ({', '.join(map(p, range(1, len(COLUMNS) + 1)))})")
        self.get = f"{select} WHERE command_key = {p(1)}"
        self._find_ok = f"{select} WHERE status = 'ok' AND command_key"
        self._find_ok_any = f"{self._find_ok} = ANY({p(1)}::text[])" if dialect.arrays else ""
        self._find_ok_in: dict[int, str] = {}
        #: Parameters per row of a record (:data:`~._schema.COLUMNS`).
        self.row_width = len(COLUMNS)
        self._row_places = f"({', '.join(['?'] * len(COLUMNS))})"
        self._queries = {
            flags: self._recent(select, flags)
            for flags in itertools.product((False, True), repeat=4)
        }
        self.counts = f"SELECT action, status, count(*) FROM {TABLE} GROUP BY action, status"
        self.purge = (
            f"DELETE FROM {TABLE} WHERE {dialect.row_id} IN (SELECT {dialect.row_id} FROM {TABLE} "
            f"WHERE finished_at < {p(1)} OR (finished_at IS NULL AND created_at < {p(2)}) "
            f"LIMIT {p(3)})"
        )

    def param(self, position: int) -> str:
        """Placeholder of the ``position``-th parameter (from 1)."""
        return f"${position}" if self.dialect.numbered else "?"

    # ------------------------------------------------------------------ schema

    def ddl(self, step: Step) -> str:
        """``CREATE TABLE`` / ``CREATE INDEX`` of one migration step."""
        if isinstance(step, CreateIndex):
            return f"CREATE INDEX {step.name} ON {step.table} ({', '.join(step.columns)})"
        exists = "IF NOT EXISTS " if step.if_not_exists else ""
        columns = ",\n    ".join(map(self._column, step.columns))
        return f"CREATE TABLE {exists}{step.table} (\n    {columns}\n)"

    def _column(self, column: Column) -> str:
        parts = [column.name, self.dialect.types[column.kind]]
        if column.primary_key:
            parts.append("PRIMARY KEY")
        if column.not_null:
            parts.append("NOT NULL")
        if column.default == "now":
            if self.dialect.now_default:
                parts.append(f"DEFAULT {self.dialect.now}")
        elif column.default is not None:
            parts.append(f"DEFAULT {column.default}")
        return " ".join(parts)

    # ------------------------------------------------------------------ writes

    def upsert_from(self, source: str) -> str:
        """Upsert of the rows ``source`` (``VALUES (...)`` or ``SELECT ...``) by the merge rule."""
        return f"{self._insert} {source} {self._on_conflict}"

    def upsert_arrays(self) -> str:
        """Upsert of a whole batch as one array parameter per column (``unnest``).

        JSON travels as ``text[]`` and is cast per element on the server: asyncpg encodes a
        text array faster than a jsonb one, and the server parses the JSON either way.
        """
        if not self.dialect.arrays:
            raise ValueError(f"{self.dialect.name} has no array parameters")
        types, json = self.dialect.types, self.dialect.types["json"]
        kinds = [(column.name, types[column.kind]) for column in RECORD_COLUMNS]
        values = ", ".join(f"{name}::{t}" if t == json else name for name, t in kinds)
        arrays = ", ".join(
            f"{self.param(i)}::{'text' if t == json else t}[]" for i, (_, t) in enumerate(kinds, 1)
        )
        return self.upsert_from(f"SELECT {values} FROM unnest({arrays}) AS t({', '.join(COLUMNS)})")

    def upsert_rows(self, count: int) -> str:
        """Upsert of ``count`` rows as one multi-row ``VALUES`` statement (SQLite's batch):
        parameters in :data:`~._schema.COLUMNS` order, row after row.

        A few statements per batch (the store sizes them: ``_sqlite.row_chunks``): the driver
        gives the GIL back once per statement where ``executemany`` takes it back after every
        row, which, beside a busy event loop, costs a switch interval per row. Plain
        parameters, where a JSON batch (``json_each``) cost the writer thread a parse of each
        row per column.
        """
        if self.dialect.numbered:
            raise ValueError(f"{self.dialect.name} sends a batch as one parameter, not rows")
        if count < 1:
            raise ValueError("a batch of rows holds at least one")
        rows = ", ".join(itertools.repeat(self._row_places, count))
        return f"{self._insert} VALUES {rows} {self._on_conflict}"

    def upsert_json_values(self) -> str:
        """Upsert of a whole batch as one JSON parameter: the array of its rows, each the array
        of its values in :data:`~._schema.COLUMNS` order with the JSON columns as JSON values,
        not text (PostgreSQL's ``jsonb_array_elements``; rows by :func:`json_row`).

        The server parses the batch; the client encodes one string, with orjson, where
        asyncpg's array encoding took a third of the worker's time per record.
        """
        types = self.dialect.types
        values = []
        for i, column in enumerate(RECORD_COLUMNS):
            if column.kind == "json":  # JSON null is SQL NULL, as dumps(None) is
                values.append(f"nullif(e->{i}, 'null')")
            elif column.kind == "text":
                values.append(f"e->>{i}")
            else:
                values.append(f"(e->>{i})::{types[column.kind]}")
        # jsonb: the batch is parsed once; each e->i is then a binary look-up (on json, it
        # would scan the element's text again per column).
        source = (
            f"SELECT {', '.join(values)} FROM jsonb_array_elements({self.param(1)}::jsonb) AS e"
        )
        return self.upsert_from(source)

    def upsert_staged(self, stage: str) -> tuple[str, str]:
        """``(create, upsert)``: a temporary table like ``corec_commands`` that empties at
        commit, and the upsert of its rows (PostgreSQL's COPY path)."""
        create = (
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {TABLE} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        cols = ", ".join(COLUMNS)
        return create, self.upsert_from(f"SELECT {cols} FROM {stage}")

    # ------------------------------------------------------------------ reads

    def find_ok(self, keys: list[str]) -> list[tuple[str, Sequence[Any]]]:
        """``(sql, parameters)`` statements that select the ``ok`` records of ``keys``."""
        if self.dialect.arrays:
            return [(self._find_ok_any, (keys,))]
        out: list[tuple[str, Sequence[Any]]] = []
        for start in range(0, len(keys), KEY_CHUNK):
            chunk = keys[start : start + KEY_CHUNK]
            sql = self._find_ok_in.get(len(chunk))
            if sql is None:
                places = ", ".join(map(self.param, range(1, len(chunk) + 1)))
                sql = self._find_ok_in[len(chunk)] = f"{self._find_ok} IN ({places})"
            out.append((sql, chunk))
        return out

    def query(
        self,
        action: str | None,
        status: str | None,
        since: datetime | None,
        limit: int,
        *,
        until: datetime | None = None,
    ) -> tuple[str, list[Any]]:
        """``(sql, parameters)`` of :meth:`~._base.RecordStore.query`.

        One prepared text per combination of filters (built at import), so a filter that is
        not given is not in the statement at all rather than a ``? IS NULL OR`` test, which
        would keep the planners from using the (action, status, finished_at) index.
        """
        args: list[Any] = [value for value in (action, status) if value is not None]
        args += [self.dialect.write_ts(at) for at in (since, until) if at is not None]
        args.append(max(0, limit))
        flags = (action is not None, status is not None, since is not None, until is not None)
        return self._queries[flags], args

    def _recent(self, select: str, flags: tuple[bool, ...]) -> str:
        """The query of one combination of filters: equalities on the index's leading
        columns, then a range on ``finished_at`` (which leaves out unfinished rows)."""
        tests = ("action = ", "status = ", "finished_at >= ", "finished_at <= ")
        where = [
            f"{test}{self.param(i)}" for i, test in enumerate(itertools.compress(tests, flags), 1)
        ]
        return (
            select
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY finished_at DESC{self.dialect.nulls_last}, command_key"
            + f" LIMIT {self.param(len(where) + 1)}"
        )

    def purge_args(self, cutoff: datetime, batch_size: int) -> tuple[Any, ...]:
        """Parameters of :attr:`purge`: rows finished (or, unfinished, created) before
        ``cutoff``, ``batch_size`` at a time."""
        at = self.dialect.write_ts(cutoff)
        return (at, at, batch_size)


# ----------------------------------------------------------------------------------- dialects


@functools.lru_cache(maxsize=256)  # a batch's records share their timestamps
def iso_text(value: datetime | None) -> str | None:
    """Fixed-width UTC ISO text, so that text order is time order in SQL comparisons."""
    aware = utc(value)
    return aware.isoformat(timespec="microseconds") if aware is not None else None


def from_iso_text(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


SQLITE = Statements(
    Dialect(
        name="sqlite",
        types={"text": "TEXT", "json": "TEXT", "integer": "INTEGER", "real": "REAL",
               "timestamp": "TEXT"},
        now="strftime('%Y-%m-%dT%H:%M:%f', 'now')",
        now_default=False,
        greatest="max",
        numbered=False,
        # SQLite sorts NULL lowest, so DESC puts unfinished rows last already (and NULLS LAST
        # would need SQLite 3.30).
        nulls_last="",
        row_id="rowid",
        table_exists="SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
        # BEGIN IMMEDIATE already serialises the workers that start together.
        migration_lock=None,
        arrays=False,
        write_ts=iso_text,
        read_ts=from_iso_text,
    )
)  # fmt: skip

POSTGRES = Statements(
    Dialect(
        name="postgresql",
        types={"text": "text", "json": "jsonb", "integer": "integer",
               "real": "double precision", "timestamp": "timestamptz"},
        now="now()",
        now_default=True,
        greatest="GREATEST",
        numbered=True,
        nulls_last=" NULLS LAST",
        row_id="command_key",
        table_exists="SELECT to_regclass($1)",
        # The lock is per schema so that the test suite's per-test schemas do not wait for one
        # another.
        migration_lock=(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.corec_schema'))"
        ),
        arrays=True,
        write_ts=utc,
        read_ts=None,  # asyncpg returns timestamptz as aware datetimes
    )
)  # fmt: skip
