"""The record and the store interface both back-ends implement, plus the rules they share.

The merge rule lives here once (:func:`merge`), in Python, and is mirrored by the SQL upsert
(:func:`~._sql.upsert_assignments`): duplicates inside one batch are folded before the batch is
sent, because PostgreSQL refuses to touch one row twice in one statement and because a smaller
batch is a cheaper round trip. The schema itself is :mod:`._schema`; the SQL, :mod:`._sql`.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from ..errors import ConfigError
from ._schema import COLUMNS as COLUMNS
from ._schema import SCHEMA_VERSION as SCHEMA_VERSION
from ._schema import TABLE as TABLE
from ._schema import VERSION_TABLE as VERSION_TABLE


class SchemaTooNew(ConfigError):  # noqa: N818 - the name the runtime and docs use
    """The database was migrated by a newer corec-plugin-kit than this one.

    Using it anyway could silently drop columns the newer code relies on, so the store refuses
    to open: upgrade corec-plugin-kit on this host, or point ``database_url`` elsewhere.
    """

    def __init__(self, found: int, known: int, where: str) -> None:
        super().__init__(
            f"the records database {where} has schema version {found}, newer than the "
            f"{known} this corec-plugin-kit knows: upgrade corec-plugin-kit on this host "
            "(pip install -U corec-plugin-kit) or point kernel.database_url elsewhere",
            details={"found": found, "known": known},
        )
        self.found = found
        self.known = known


@dataclass(slots=True)
class Record:
    """One row of ``corec_commands``: the final outcome of one command key.

    ``params``, ``result`` and ``error`` are any JSON-able values (stored as JSON text in
    SQLite, JSONB in PostgreSQL; ``None`` is stored as SQL NULL). ``created_at`` left ``None``
    means "now" on first insert; a later write never moves it.
    """

    command_key: str
    action: str
    processor: str | None
    status: str  # 'ok' | 'error'
    params: Any = None
    result: Any = None
    error: Any = None
    deliveries: int = 1
    created_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None

    @classmethod
    def from_result(
        cls,
        envelope: Mapping[str, Any],
        *,
        params: Any,
        deliveries: int,
        finished_at: datetime,
    ) -> Record:
        """The record of a result envelope (``id``, ``action``, ``processor``, ``status``,
        ``result``, ``error``, ``duration_ms``) and what the envelope does not carry.

        ``created_at`` is left ``None``: the store fills it on first insert.
        """
        get = envelope.get
        # In field order, by position: by keyword, the eleven names cost more than the rest
        # of the record (0.56 us against 0.21; one record per command).
        return cls(
            envelope["id"], envelope["action"], get("processor"), envelope["status"], params,
            get("result"), get("error"), deliveries, None, finished_at, get("duration_ms"),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (timestamps as ISO 8601 strings) for ``history --json``."""
        out = {name: getattr(self, name) for name in COLUMNS}
        for name in ("created_at", "finished_at"):
            value = out[name]
            out[name] = value.isoformat() if value is not None else None
        return out


def keeps_old(old_status: str, new_status: str) -> bool:
    """True when a stored row must survive a later write: a finished ('ok') record is final.

    A retry that fails after the command already succeeded (a redelivery racing the first
    worker, say) must not turn a recorded success into an error.
    """
    return old_status == "ok" and new_status != "ok"


def merge(old: Record, new: Record) -> Record:
    """The row that results from writing ``new`` over ``old`` (same key), as the SQL does."""
    deliveries = max(old.deliveries, new.deliveries)
    if keeps_old(old.status, new.status):
        return replace(old, deliveries=deliveries)
    return replace(new, deliveries=deliveries, created_at=old.created_at or new.created_at)


def coalesce(records: Sequence[Record]) -> list[Record]:
    """Fold a batch to one record per key (in first-seen order), applying :func:`merge`.

    ``created_at`` left ``None`` is filled by :func:`created` when the row is built.
    """
    by_key: dict[str, Record] = {}
    for record in records:
        old = by_key.get(record.command_key)
        by_key[record.command_key] = record if old is None else merge(old, record)
    return list(by_key.values())


def created(record: Record, now: datetime) -> datetime:
    """``created_at`` to insert: the record's own, else when it finished, else ``now``."""
    return record.created_at or record.finished_at or now


# ---------------------------------------------------------------------------------------- JSON


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(v) for v in value]
    return value


def _orjson(value: Any) -> bytes:
    """orjson's JSON of ``value``, dict keys that are not strings written as strings: only
    when there are some, since the option that allows them checks every key (as
    :func:`corec_plugin_kit.envelopes.dumps`)."""
    try:
        return orjson.dumps(value, default=_default)
    except TypeError:
        return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def dumps(value: Any) -> str | None:
    """JSON text of a record field, ``None`` for SQL NULL.

    NUL characters become U+FFFD on both back-ends: PostgreSQL's JSONB cannot hold ``\\u0000``
    and one contract for both stores beats a write that fails only in production. Values orjson
    refuses (integers beyond 64 bits) fall back to the standard library.
    """
    if value is None:
        return None
    try:
        text = _orjson(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        text = json.dumps(value, default=_default, ensure_ascii=True)
    if "\\u0000" in text:  # cheap test; the walk only runs when a NUL may be there
        cleaned = _without_nul(value)
        if cleaned != value:
            return dumps(cleaned)
    return text


def dumps_batch(rows: list[tuple[Any, ...]]) -> str | None:
    """JSON text of a batch of rows whose JSON columns are values (:func:`~._sql.json_row`),
    encoded as :func:`dumps` encodes a field; ``None`` when a value needs :func:`dumps`'s own
    care (a NUL character, an integer beyond 64 bits): then send the batch field by field."""
    try:
        text = _orjson(rows)
    except TypeError:
        return None
    return None if text.find(b"\\u0000") >= 0 else text.decode()  # find: see envelopes._load


def loads(text: str | bytes | None) -> Any:
    """Inverse of :func:`dumps`."""
    if text is None:
        return None
    return orjson.loads(text)


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def refuses_content(exc: BaseException) -> bool:
    """True when a write failed because of what a record holds (a value the database will not
    store, a constraint it breaks), not because of the database: retrying the same record can
    never succeed, while the rest of its batch can.

    PostgreSQL: SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation);
    SQLite: IntegrityError, DataError and a parameter it cannot bind; either: a value Python
    could not convert (an integer too large for its column, say).
    """
    import sqlite3

    content = (sqlite3.IntegrityError, sqlite3.DataError, TypeError, ValueError, OverflowError)
    if isinstance(exc, content):
        return True
    binding = (sqlite3.InterfaceError, sqlite3.ProgrammingError)  # before / since Python 3.11
    if isinstance(exc, binding) and "binding parameter" in str(exc):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state[:2] in ("22", "23")


# ---------------------------------------------------------------------------------- interface


class RecordStore(abc.ABC):
    """Where the runtime records each command's outcome before acknowledging it.

    Lifecycle: :func:`~corec_plugin_kit.storage.open_store` builds it (no I/O), :meth:`open`
    connects and migrates, :meth:`close` releases every connection. Every method except
    :meth:`ping` raises :class:`~corec_plugin_kit.errors.DatabaseUnavailable` when the database
    cannot be reached; the store reconnects by itself on a later call once it is back.
    """

    #: The URL without its password, safe for messages and logs.
    url_display: str
    #: Name of the back-end ("sqlite" or "postgresql").
    backend: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema (raises :class:`SchemaTooNew`)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection; safe to call twice or after a failed :meth:`open`."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when one trivial query succeeds; never raises."""

    async def warm(self) -> None:  # noqa: B027 - optional: a store with nothing to open keeps it
        """Open now, after :meth:`open`, what the worker's first commands would otherwise
        wait for (threads, connections); never raises: what fails here is opened, or
        reported, on first use. ``corec-kit run`` calls it; a store with nothing to open
        keeps this one, which does nothing."""

    @abc.abstractmethod
    async def write_batch(self, records: Sequence[Record]) -> None:
        """Upsert the batch in one round trip and one transaction (all or nothing).

        Idempotent on ``command_key``: writing the same batch twice leaves the same rows.
        """

    @abc.abstractmethod
    async def get(self, key: str) -> Record | None:
        """The record of one command key, or ``None``."""

    @abc.abstractmethod
    async def find_ok(self, keys: Sequence[str]) -> dict[str, Record]:
        """The ``ok`` records among ``keys``, by key, in one round trip (the worker asks once
        per batch read, so a finished command is answered from its record, not run again)."""

    @abc.abstractmethod
    async def query(
        self,
        *,
        action: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Record]:
        """Records newest first by ``finished_at``, filtered (``since``: finished at or after;
        ``until``: finished at or before; both together: a time range, ends included).

        Ordered and filtered on ``finished_at`` alone so the (action, status, finished_at)
        index serves the query; rows without ``finished_at`` come last, and neither time
        bound matches them (they have not finished).
        """

    @abc.abstractmethod
    async def counts(self) -> dict[str, dict[str, int]]:
        """``{action: {status: n}}`` over the whole table."""

    @abc.abstractmethod
    async def purge(self, older_than: timedelta, batch_size: int = 1000) -> int:
        """Delete records finished longer ago than ``older_than``; returns how many.

        Deletes ``batch_size`` rows per transaction so a large purge never holds the write lock
        (SQLite) or a long row-lock set (PostgreSQL) while workers keep recording.
        """

    @abc.abstractmethod
    async def schema_version(self) -> int | None:
        """Version recorded in ``corec_schema_version`` (``None``: schema not created yet).

        Does not create or migrate anything, so ``corec-kit check`` can call it.
        """

    @abc.abstractmethod
    async def server_version(self) -> str:
        """``SQLite 3.40.1`` / ``PostgreSQL 15.20``: connects without creating the schema."""

    async def __aenter__(self) -> RecordStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def cutoff(older_than: timedelta) -> datetime:
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    return datetime.now(timezone.utc) - older_than
