"""Command records: one row per command key in ``corec_commands``, SQLite or PostgreSQL.

The runtime records each command's outcome here, in batches, before acknowledging it:

* :func:`open_store` picks the back-end from ``kernel.database_url`` (unset: SQLite at
  ``state_dir/corec.db``; ``sqlite:///path``; ``postgresql://...``);
* :class:`RecordStore` is the one interface both back-ends implement (upsert on the command
  key, a finished record never overwritten by a later failure, outages as
  :class:`~corec_plugin_kit.errors.DatabaseUnavailable`);
* :func:`check_database` answers ``corec-kit check``.

Importing this package loads neither aiosqlite nor asyncpg: the back-end modules are imported
when a store is built (``SQLiteStore`` and ``PostgresStore`` are importable from here lazily).
See docs/storage.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import SCHEMA_VERSION, Record, RecordStore, SchemaTooNew, refuses_content
from ._factory import check_database, open_store

if TYPE_CHECKING:
    from ._postgres import PostgresStore
    from ._sqlite import SQLiteStore

_LAZY = {"SQLiteStore": "._sqlite", "PostgresStore": "._postgres"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


__all__ = [
    "SCHEMA_VERSION",
    "PostgresStore",
    "Record",
    "RecordStore",
    "SQLiteStore",
    "SchemaTooNew",
    "check_database",
    "open_store",
    "refuses_content",
]
