"""The databases' own query plans for ``query(since=, until=)``: the time range is an index
condition, never a filter over the whole table.

``history --status error --since ... --until ...`` on a table of millions of records must read
the rows of that range only. Each back-end is asked how it would run the statement the store
sends (``EXPLAIN QUERY PLAN`` in SQLite, ``EXPLAIN`` in PostgreSQL with sequential scans priced
out, as a large table would make them).
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest
from storage_helpers import old, rec

from corec_plugin_kit.storage import PostgresStore, RecordStore, SQLiteStore

#: The (action, status, finished_at) index and the (finished_at) one (docs/storage.md).
BY_ACTION = "corec_commands_action_status_finished"
BY_TIME = "corec_commands_finished"

CASES = pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({"action": "a", "status": "ok", "since": 3, "until": 1}, BY_ACTION),
        ({"action": "a", "status": "ok", "until": 1}, BY_ACTION),
        ({"until": 1}, BY_TIME),
        ({"since": 3, "until": 1}, BY_TIME),
    ],
    ids=["action-status-range", "action-status-until", "until", "range"],
)


async def plan(store: RecordStore, filters: dict[str, Any]) -> str:
    """How the store's database would run the query of ``filters``, as one text."""
    assert isinstance(store, (SQLiteStore, PostgresStore))
    times = {k: old(v) for k, v in filters.items() if k in ("since", "until")}
    args: dict[str, Any] = {**filters, **times}
    sql, params = store.sql.query(
        args.get("action"), args.get("status"), args.get("since"), 50, until=args.get("until")
    )
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            rows = db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return "\n".join(str(row[-1]) for row in rows)
    import asyncpg

    conn = await asyncpg.connect(store.url, server_settings=store.server_settings)
    try:
        await conn.execute("ANALYZE corec_commands; SET enable_seqscan = off")
        rows = await conn.fetch(f"EXPLAIN {sql}", *params)
    finally:
        await conn.close()
    return "\n".join(row[0] for row in rows)


@CASES
async def test_a_time_range_is_an_index_condition(
    corec_store: RecordStore, filters: dict[str, Any], index: str
) -> None:
    # Many records just finished, many two days ago of other actions, and one "a": a time
    # range alone picks out half the table, the action within it one row.
    await corec_store.write_batch(
        [rec(f"now{i}", "ok" if i % 2 else "error", action=f"b{i % 3}") for i in range(300)]
        + [rec(f"old{i}", action=f"b{i % 3}", finished_at=old(2)) for i in range(300)]
        + [rec("a", action="a", finished_at=old(2)), rec("unfinished", finished_at=None)]
    )
    text = await plan(corec_store, filters)
    assert index in text, text
    if isinstance(corec_store, SQLiteStore):
        # SQLite names the columns the index search uses: the bounds are among them.
        (search,) = [line for line in text.splitlines() if index in line]
        assert "finished_at<?" in search or "finished_at>?" in search, search
    else:
        (condition,) = [line for line in text.splitlines() if "Index Cond" in line]
        assert "finished_at <=" in condition, text
        assert ("finished_at >=" in condition) == ("since" in filters), text
    # And the statement answers: records finished two days ago, "a" alone of its action.
    found = await corec_store.query(
        limit=1000, **{k: old(v) if k in ("since", "until") else v for k, v in filters.items()}
    )
    expected = ["a"] if "action" in filters else sorted(["a", *(f"old{i}" for i in range(300))])
    assert sorted(r.command_key for r in found) == expected
