"""Storage test helpers: records with defaults, sibling stores, row totals.

A module of its own (not conftest.py) so that ``from storage_helpers import ...`` cannot pick
up another folder's conftest when several test folders run together.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from corec_plugin_kit.storage import PostgresStore, Record, RecordStore, SQLiteStore

NOW = datetime.now(timezone.utc)


def rec(key: str, status: str = "ok", **fields: Any) -> Record:
    """A record with sensible defaults (finished now, action ``act``)."""
    fields.setdefault("action", "act")
    fields.setdefault("processor", "proc")
    fields.setdefault("finished_at", datetime.now(timezone.utc))
    fields.setdefault("created_at", fields["finished_at"] or datetime.now(timezone.utc))
    fields.setdefault("params", {"key": key})
    if status == "ok":
        fields.setdefault("result", {"echo": key})
    else:
        fields.setdefault("error", {"type": "handler_error", "message": f"{key} failed"})
    return Record(command_key=key, status=status, **fields)


def sibling(store: RecordStore, **kwargs: Any) -> RecordStore:
    """Another (unopened) store on the same database as ``store``: another worker."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path, **kwargs)
    assert isinstance(store, PostgresStore)
    return PostgresStore(store.url, server_settings=store.server_settings, **kwargs)


async def total(store: RecordStore) -> int:
    return sum(n for statuses in (await store.counts()).values() for n in statuses.values())


def old(days: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days)
