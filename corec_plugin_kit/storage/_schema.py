"""The logical schema of the records database, once for both back-ends.

Tables, columns (with a logical type each), indexes and the migration steps by version; how a
type or a default is spelled in SQL is the dialect's business (:mod:`._sql`). Names here are
on disk in every existing database: never rename one, add a migration step instead.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

#: Logical column types; each dialect maps them to its own (``json``: TEXT / jsonb...).
Kind = Literal["text", "json", "integer", "real", "timestamp"]

TABLE = "corec_commands"
VERSION_TABLE = "corec_schema_version"


class Column(NamedTuple):
    name: str
    kind: Kind
    not_null: bool = False
    primary_key: bool = False
    #: ``DEFAULT 1`` (an SQL literal), or ``now`` (the dialect's current time, where it has one).
    default: str | None = None


class CreateTable(NamedTuple):
    table: str
    columns: tuple[Column, ...]
    if_not_exists: bool = False


class CreateIndex(NamedTuple):
    name: str
    table: str
    columns: tuple[str, ...]


Step = CreateTable | CreateIndex

#: ``corec_commands``, in the order of :class:`~._base.Record`'s fields, of every statement and
#: of every row tuple.
RECORD_COLUMNS: tuple[Column, ...] = (
    Column("command_key", "text", not_null=True, primary_key=True),
    Column("action", "text", not_null=True),
    Column("processor", "text"),
    Column("status", "text", not_null=True),
    Column("params", "json"),
    Column("result", "json"),
    Column("error", "json"),
    Column("deliveries", "integer", not_null=True, default="1"),
    # The stores always write it; only PostgreSQL has the default (SQLite never had one).
    Column("created_at", "timestamp", not_null=True, default="now"),
    Column("finished_at", "timestamp"),
    Column("duration_ms", "real"),
)

COLUMNS = tuple(column.name for column in RECORD_COLUMNS)

#: One row per version applied, created (if missing) before migrating.
VERSION_TABLE_DEF = CreateTable(
    VERSION_TABLE,
    (
        Column("version", "integer", primary_key=True),
        Column("applied_at", "timestamp", not_null=True, default="now"),
    ),
    if_not_exists=True,
)

#: (version, steps): applied in order; a database records each version it has applied.
MIGRATIONS: tuple[tuple[int, tuple[Step, ...]], ...] = (
    (
        1,
        (
            CreateTable(TABLE, RECORD_COLUMNS),
            CreateIndex(
                f"{TABLE}_action_status_finished", TABLE, ("action", "status", "finished_at")
            ),
        ),
    ),
    # v2: retention purges and `history --since` scan by time alone.
    (2, (CreateIndex(f"{TABLE}_finished", TABLE, ("finished_at",)),)),
)

#: Version of the schema this code writes; a database with a newer one is refused.
SCHEMA_VERSION = MIGRATIONS[-1][0]
