"""The shared query builder and row mapping, per dialect, without a database.

The store contract (test_store_contract.py) runs the statements against both databases; these
tests pin what that cannot see: statements are built once, placeholders match parameters, the
logical schema is what each dialect creates, and a row maps back to the record it came from.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corec_plugin_kit.storage import Record
from corec_plugin_kit.storage._schema import COLUMNS, MIGRATIONS, SCHEMA_VERSION, TABLE
from corec_plugin_kit.storage._sql import KEY_CHUNK, POSTGRES, SQLITE, Statements
from corec_plugin_kit.storage._sqlite import (
    CACHED_STATEMENTS,
    CHUNK_ROWS,
    EXACT_ROWS,
    row_chunks,
)

DIALECTS = pytest.mark.parametrize("sql", [SQLITE, POSTGRES], ids=["sqlite", "postgresql"])
FINISHED = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=timezone.utc)


def placeholders(sql: Statements, text: str) -> int:
    """How many parameters ``text`` takes."""
    if sql.dialect.numbered:
        return max((int(n) for n in re.findall(r"\$(\d+)", text)), default=0)
    return text.count("?")


def test_schema_version_is_the_last_migration() -> None:
    assert SCHEMA_VERSION == MIGRATIONS[-1][0] == 2
    assert [version for version, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


@DIALECTS
def test_migrations_create_every_column_of_the_logical_schema(sql: Statements) -> None:
    assert [version for version, _ in sql.migrations] == [v for v, _ in MIGRATIONS]
    create = sql.migrations[0][1][0]
    assert create.startswith(f"CREATE TABLE {TABLE} (")
    declared = [line.strip().split()[0] for line in create.splitlines()[1:-1]]
    assert declared == list(COLUMNS)


@DIALECTS
def test_every_statement_takes_as_many_parameters_as_it_is_given(sql: Statements) -> None:
    assert placeholders(sql, sql.upsert) == len(COLUMNS)
    assert placeholders(sql, sql.get) == 1
    assert placeholders(sql, sql.record_version) == 1
    assert placeholders(sql, sql.purge) == len(sql.purge_args(FINISHED, 10))
    for action, status, since, until in itertools.product(
        ("a", None), ("ok", None), (FINISHED, None), (FINISHED, None)
    ):
        text, args = sql.query(action, status, since, 5, until=until)
        assert placeholders(sql, text) == len(args)
        assert args[-1] == 5


def test_sqlite_s_batch_upsert_takes_a_row_of_parameters_per_record() -> None:
    for count in (1, 3, 500):
        assert placeholders(SQLITE, SQLITE.upsert_rows(count)) == count * len(COLUMNS)
    with pytest.raises(ValueError, match="at least one"):
        SQLITE.upsert_rows(0)
    with pytest.raises(ValueError, match="one parameter"):
        POSTGRES.upsert_rows(3)  # its batches go as one jsonb parameter


@given(count=st.integers(1, 100_000), most=st.integers(1, 50_000))
def test_sqlite_s_batch_goes_in_a_few_statements_of_a_few_sizes(count: int, most: int) -> None:
    """Every row once and no statement over the parameter limit; a small batch as one
    statement; a large one in a few, of sizes from a set small enough to stay prepared (up to
    EXACT_ROWS as they are, powers of two above), largest first."""
    sizes = row_chunks(count, most)
    assert sum(sizes) == count
    assert all(0 < size <= min(most, CHUNK_ROWS) for size in sizes)
    assert all(size <= EXACT_ROWS or size & (size - 1) == 0 for size in sizes)
    assert sizes == sorted(sizes, reverse=True)
    if count <= min(EXACT_ROWS, most):
        assert sizes == [count]
    else:
        top = 1 << (min(most, CHUNK_ROWS).bit_length() - 1)
        assert sizes.count(top) == count // top
        assert len(sizes) - count // top <= top.bit_length()


def test_sqlite_s_statement_cache_holds_every_batch_size() -> None:
    powers = {1 << n for n in range(CHUNK_ROWS.bit_length())}
    assert len(set(range(1, EXACT_ROWS + 1)) | powers) < CACHED_STATEMENTS


@DIALECTS
def test_time_bounds_are_a_range_on_finished_at_after_the_equalities(sql: Statements) -> None:
    """``since`` and ``until`` filter ``finished_at`` in the order of the (action, status,
    finished_at) index's columns, each given once, in the order of the parameters."""
    earlier = FINISHED - timedelta(hours=1)
    text, args = sql.query("a", "ok", earlier, 5, until=FINISHED)
    where = text.split(" WHERE ", 1)[1].split(" ORDER BY ")[0]
    p = sql.param
    assert where == (
        f"action = {p(1)} AND status = {p(2)} AND finished_at >= {p(3)} AND finished_at <= {p(4)}"
    )
    assert args == ["a", "ok", sql.dialect.write_ts(earlier), sql.dialect.write_ts(FINISHED), 5]
    only_until, until_args = sql.query(None, None, None, 7, until=FINISHED)
    assert f"WHERE finished_at <= {p(1)} ORDER BY" in only_until
    assert until_args == [sql.dialect.write_ts(FINISHED), 7]


@DIALECTS
def test_statements_are_built_once_not_per_call(sql: Statements) -> None:
    first, _ = sql.query("a", None, None, 1)
    again, _ = sql.query("b", None, None, 2)
    assert first is again
    keys = [f"k{i}" for i in range(3)]
    assert sql.find_ok(keys)[0][0] is sql.find_ok(list(reversed(keys)))[0][0]


def test_sqlite_looks_keys_up_in_lists_of_at_most_the_chunk_size() -> None:
    keys = [f"k{i}" for i in range(2 * KEY_CHUNK + 1)]
    statements = SQLITE.find_ok(keys)
    assert [len(args) for _, args in statements] == [KEY_CHUNK, KEY_CHUNK, 1]
    assert [placeholders(SQLITE, text) for text, _ in statements] == [KEY_CHUNK, KEY_CHUNK, 1]
    assert [key for _, args in statements for key in args] == keys


def test_postgresql_looks_keys_up_in_one_array_parameter() -> None:
    keys = [f"k{i}" for i in range(2 * KEY_CHUNK + 1)]
    assert POSTGRES.find_ok(keys) == [(POSTGRES.find_ok(["x"])[0][0], (keys,))]


@DIALECTS
def test_a_row_maps_back_to_its_record(sql: Statements) -> None:
    record = Record(
        command_key="k",
        action="act",
        processor=None,
        status="ok",
        params={"a": [1, 2.5, None]},
        result="done",
        error=None,
        deliveries=2,
        created_at=FINISHED - timedelta(seconds=3),
        finished_at=FINISHED,
        duration_ms=1.5,
    )
    row = sql.row(record, datetime.now(timezone.utc))
    assert len(row) == len(COLUMNS)
    # As the database hands it back: JSON as text (SQLite TEXT) or parsed by the server.
    assert sql.record(row) == record


def test_sqlite_timestamps_are_fixed_width_utc_text() -> None:
    local = FINISHED.astimezone(timezone(timedelta(hours=5)))
    row = SQLITE.row(Record("k", "a", None, "ok", finished_at=local), FINISHED)
    assert row[COLUMNS.index("finished_at")] == "2026-05-04T03:02:01.123456+00:00"
    whole = SQLITE.row(
        Record("k", "a", None, "ok", created_at=FINISHED.replace(microsecond=0)), FINISHED
    )
    assert whole[COLUMNS.index("created_at")] == "2026-05-04T03:02:01.000000+00:00"


def test_upsert_arrays_needs_array_parameters() -> None:
    assert "unnest(" in POSTGRES.upsert_arrays()
    with pytest.raises(ValueError, match="no array parameters"):
        SQLITE.upsert_arrays()
