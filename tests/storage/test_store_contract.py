"""The record-store contract, run once against SQLite and once against PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from storage_helpers import old, rec, sibling, total

from corec_plugin_kit.storage import Record, RecordStore, SQLiteStore, refuses_content
from corec_plugin_kit.storage._sqlite import max_rows


async def test_get_unknown_key_is_none(corec_store: RecordStore) -> None:
    assert await corec_store.get("nope") is None
    assert await corec_store.ping() is True


async def test_round_trip_keeps_every_field(corec_store: RecordStore) -> None:
    finished = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=timezone.utc)
    created = finished - timedelta(seconds=3)
    record = Record(
        command_key="k-1",
        action="generate_plugin",
        processor="generator",
        status="ok",
        params={"plugin_name": "x", "dry_run": True, "n": [1, 2.5, None]},
        result={"files": ["a.py"], "nested": {"deep": {"er": 1}}},
        error=None,
        deliveries=2,
        created_at=created,
        finished_at=finished,
        duration_ms=12.5,
    )
    await corec_store.write_batch([record])
    assert await corec_store.get("k-1") == record


async def test_keys_that_are_not_strings_are_stored_as_strings(corec_store: RecordStore) -> None:
    # In a batch with an ordinary record: the one that needs the slower encoding (see
    # storage._base._orjson) must not change how the other is stored.
    plain = rec("k-plain", result={"n": 1})
    keyed = rec("k-keyed", result={1: "one", "nested": {2.5: [{None: True}]}})
    await corec_store.write_batch([plain, keyed])
    found = await corec_store.get("k-keyed")
    assert found is not None
    assert found.result == {"1": "one", "nested": {"2.5": [{"null": True}]}}
    assert await corec_store.get("k-plain") == plain


async def test_find_ok_returns_only_successful_records_of_the_keys_asked(
    corec_store: RecordStore,
) -> None:
    batch = [rec(f"k{i}", "ok" if i % 3 else "error") for i in range(1200)]
    await corec_store.write_batch(batch)
    asked = [f"k{i}" for i in range(0, 1200, 2)] + ["k4", "missing", "k4"]  # past 500, repeats
    found = await corec_store.find_ok(asked)
    expected = {f"k{i}" for i in range(0, 1200, 2) if i % 3}
    assert set(found) == expected
    assert found["k4"] == await corec_store.get("k4")
    assert await corec_store.find_ok([]) == {}
    # Reads and writes at once (the worker looks up the next batch while committing one).
    more = [rec(f"m{i}") for i in range(200)]
    _, seen = await asyncio.gather(corec_store.write_batch(more), corec_store.find_ok(["k1"]))
    assert set(seen) == {"k1"}
    assert set(await corec_store.find_ok([r.command_key for r in more])) == {
        r.command_key for r in more
    }


async def test_writing_a_batch_twice_leaves_one_row_per_key(corec_store: RecordStore) -> None:
    batch = [rec(f"cmd-{i}") for i in range(300)]
    await corec_store.write_batch(batch)
    await corec_store.write_batch(batch)  # a redelivered / re-sent batch
    await corec_store.write_batch(batch[:256])
    assert await total(corec_store) == 300
    assert (await corec_store.counts()) == {"act": {"ok": 300}}


async def test_same_key_twice_in_one_batch_last_wins(corec_store: RecordStore) -> None:
    await corec_store.write_batch(
        [
            rec("a", "error", deliveries=1, error={"attempt": 1}),
            rec("b", "ok", result=1),
            rec("a", "error", deliveries=2, error={"attempt": 2}),
            rec("b", "ok", result=2),
        ]
    )
    a, b = await corec_store.get("a"), await corec_store.get("b")
    assert a is not None
    assert b is not None
    assert (a.error, a.deliveries) == ({"attempt": 2}, 2)
    assert b.result == 2
    assert await total(corec_store) == 2


async def test_ok_then_error_in_one_batch_keeps_ok(corec_store: RecordStore) -> None:
    await corec_store.write_batch(
        [rec("k", "ok", result="done", deliveries=1), rec("k", "error", deliveries=3)]
    )
    stored = await corec_store.get("k")
    assert stored is not None
    assert (stored.status, stored.result, stored.error) == ("ok", "done", None)
    assert stored.deliveries == 3  # the max seen, even when the rest of the write is refused


async def test_finished_record_not_overwritten_by_later_error(corec_store: RecordStore) -> None:
    first = rec("k", "ok", result="done", deliveries=1, duration_ms=5.0)
    await corec_store.write_batch([first])
    await corec_store.write_batch([rec("k", "error", deliveries=4, processor="other")])
    stored = await corec_store.get("k")
    assert stored is not None
    assert (stored.status, stored.result, stored.error, stored.processor, stored.duration_ms) == (
        "ok",
        "done",
        None,
        "proc",
        5.0,
    )
    assert stored.deliveries == 4


async def test_error_is_replaced_by_later_success(corec_store: RecordStore) -> None:
    await corec_store.write_batch([rec("k", "error", deliveries=3)])
    await corec_store.write_batch([rec("k", "ok", result="second try", deliveries=1)])
    stored = await corec_store.get("k")
    assert stored is not None
    assert (stored.status, stored.result, stored.error) == ("ok", "second try", None)
    assert stored.deliveries == 3  # the max, not the last


async def test_created_at_is_kept_from_the_first_write(corec_store: RecordStore) -> None:
    first_seen = old(1)
    await corec_store.write_batch([rec("k", "error", created_at=first_seen)])
    await corec_store.write_batch([rec("k", "ok", created_at=None)])
    stored = await corec_store.get("k")
    assert stored is not None
    assert stored.created_at == first_seen
    await corec_store.write_batch([rec("fresh", created_at=None, finished_at=None)])
    fresh = await corec_store.get("fresh")
    assert fresh is not None
    assert fresh.created_at is not None
    assert abs(fresh.created_at - datetime.now(timezone.utc)) < timedelta(minutes=1)


async def test_unicode_everywhere(corec_store: RecordStore) -> None:
    text = "héllo 世界 🎉 עברית Ω≈ç√ e\u0301 \u200b 'quote\" \\back\\slash \\u0000 literal"
    record = rec(
        "ключ-🔑",
        action="acción_✓",
        processor="procesador",
        params={text: [text, {"ünï": text}]},
        result=text,
    )
    await corec_store.write_batch([record])
    assert await corec_store.get("ключ-🔑") == record
    assert [r.command_key for r in await corec_store.query(action="acción_✓")] == ["ключ-🔑"]


async def test_nul_characters_become_replacement_characters(corec_store: RecordStore) -> None:
    # PostgreSQL's JSONB cannot hold U+0000; both back-ends store U+FFFD instead, same contract.
    await corec_store.write_batch([rec("nul", params={"a\x00b": "c\x00d"}, result=["\x00"])])
    stored = await corec_store.get("nul")
    assert stored is not None
    assert stored.params == {"a\ufffdb": "c\ufffdd"}
    assert stored.result == ["\ufffd"]


async def test_a_batch_mixing_plain_and_careful_values_keeps_each(
    corec_store: RecordStore,
) -> None:
    """A batch goes in one statement, unless a value needs care (an integer beyond 64 bits, a
    NUL): then the whole batch goes field by field. Either way each record reads back as the
    field-by-field encoding stores it, and a JSON ``null`` result is SQL NULL, read as None."""
    plain = [
        rec(f"plain-{i}", params={"n": i}, result={"ok": [i, 1.5, True, None]}) for i in range(3)
    ]
    nothing = rec("nothing", result=None)
    await corec_store.write_batch([*plain, nothing])
    for record in plain:
        assert await corec_store.get(record.command_key) == record
    assert (await corec_store.get("nothing")) == nothing
    huge = rec("huge", result={"big": 2**70, "neg": -(2**70)})
    await corec_store.write_batch([rec("beside-huge", result="text"), huge])
    stored = await corec_store.get("huge")
    assert stored is not None and stored.result == {"big": 2**70, "neg": -(2**70)}
    beside = await corec_store.get("beside-huge")
    assert beside is not None and beside.result == "text"


async def test_a_batch_over_one_statement_s_parameters_is_written_whole_or_not_at_all(
    corec_store: RecordStore,
) -> None:
    """SQLite takes a bounded number of parameters in a statement (250,000 in this build,
    32,766 by default), so a larger batch goes in several statements: they must still commit
    together. A record the database refuses (NOT NULL) at the end of such a batch leaves none
    of the batch behind, and the error says it is about the content (the worker then writes
    the batch one by one)."""
    n = 25_000
    if isinstance(corec_store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            assert n > max_rows(conn), "the batch fits one statement: make it larger"
    await corec_store.write_batch([rec(f"a{i}", params={"i": i}) for i in range(n)])
    assert await total(corec_store) == n
    assert (await corec_store.find_ok([f"a{n - 1}"]))[f"a{n - 1}"].params == {"i": n - 1}
    refused = [*(rec(f"b{i}") for i in range(n - 1)), rec("b-last", action=None)]
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the driver's own error
        await corec_store.write_batch(refused)
    assert refuses_content(caught.value), caught.value
    assert await total(corec_store) == n
    assert await corec_store.get("b0") is None


async def test_a_value_a_column_cannot_hold_is_refused_content(corec_store: RecordStore) -> None:
    """What the kernel puts in a row's plain columns is its own, but a value one cannot hold
    must still be classed as the record's content (the worker then dead-letters that entry
    alone) rather than an outage (the batch held and retried forever). PostgreSQL stores an
    object's text where a text column has one (the JSON batch's fallback); SQLite cannot bind
    it."""
    bad_ones = [rec("big", deliveries=2**70)]
    if isinstance(corec_store, SQLiteStore):
        bad_ones.append(rec("odd", processor=object()))
    for bad in bad_ones:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the driver's own error
            await corec_store.write_batch([rec("fine"), bad])
        assert refuses_content(caught.value), repr(caught.value)
    assert await corec_store.get("fine") is None


async def test_large_json_of_one_megabyte(corec_store: RecordStore) -> None:
    big = {"blob": "x" * 1_048_576, "items": [{"i": i, "s": "é" * 10} for i in range(5000)]}
    await corec_store.write_batch([rec("big", result=big), rec("small")])
    stored = await corec_store.get("big")
    assert stored is not None
    assert stored.result == big


async def test_concurrent_writers_on_one_database(corec_store: RecordStore) -> None:
    """Four stores (four workers) and two tasks each, overlapping keys, all at once."""
    others = [sibling(corec_store) for _ in range(3)]
    stores = [corec_store, *others]
    try:
        for store in others:
            await store.open()

        async def writer(store: RecordStore, worker: int, task: int) -> None:
            for start in range(0, 200, 40):
                batch = [
                    rec(
                        f"k{i}",
                        # key k0..k49 succeed only through worker 0; everyone else fails them.
                        "ok" if (i >= 50 or worker == 0) else "error",
                        deliveries=worker + 1,
                        result={"by": worker, "task": task},
                    )
                    for i in range(start, start + 40)
                ]
                await store.write_batch(batch)

        await asyncio.gather(*(writer(s, w, t) for w, s in enumerate(stores) for t in range(2)))
    finally:
        for store in others:
            await store.close()
    assert await total(corec_store) == 200
    for i in range(50):
        stored = await corec_store.get(f"k{i}")
        assert stored is not None
        # Worker 0's success is never overwritten by the others' later failures.
        assert (stored.status, stored.result["by"]) == ("ok", 0)
        assert stored.deliveries == 4  # max over the four workers (1..4)


async def test_query_filters_and_order(corec_store: RecordStore) -> None:
    await corec_store.write_batch(
        [
            rec("a1", action="a", finished_at=old(3)),
            rec("a2", "error", action="a", finished_at=old(2)),
            rec("a3", action="a", finished_at=old(0.5)),
            rec("b1", action="b", finished_at=old(1)),
            rec("n1", action="b", finished_at=None),
        ]
    )
    keys = [r.command_key for r in await corec_store.query()]
    assert keys == ["a3", "b1", "a2", "a1", "n1"]  # newest first, unfinished last
    assert [r.command_key for r in await corec_store.query(action="a")] == ["a3", "a2", "a1"]
    assert [r.command_key for r in await corec_store.query(status="error")] == ["a2"]
    assert [r.command_key for r in await corec_store.query(action="a", status="ok")] == [
        "a3",
        "a1",
    ]
    assert [r.command_key for r in await corec_store.query(since=old(1.5))] == ["a3", "b1"]
    assert [r.command_key for r in await corec_store.query(limit=2)] == ["a3", "b1"]
    assert await corec_store.query(action="zzz") == []


async def test_query_by_time_range(corec_store: RecordStore) -> None:
    """``until`` keeps what finished at or before it, ``since`` and ``until`` together a range
    with both ends included; unfinished rows match no time bound."""
    edge = old(2)
    await corec_store.write_batch(
        [
            rec("a1", action="a", finished_at=old(3)),
            rec("a2", "error", action="a", finished_at=edge),
            rec("a3", action="a", finished_at=old(0.5)),
            rec("b1", action="b", finished_at=old(1)),
            rec("n1", action="b", finished_at=None),
        ]
    )

    async def keys(**filters: Any) -> list[str]:
        return [r.command_key for r in await corec_store.query(**filters)]

    assert await keys(until=old(0.75)) == ["b1", "a2", "a1"]
    assert await keys(until=edge) == ["a2", "a1"]  # at the bound: included
    assert await keys(since=edge, until=old(0.75)) == ["b1", "a2"]
    assert await keys(since=edge, until=edge) == ["a2"]
    assert await keys(action="a", until=old(1)) == ["a2", "a1"]
    assert await keys(action="a", status="ok", since=old(4), until=old(1)) == ["a1"]
    assert await keys(status="error", until=old(2.5)) == []
    assert await keys(until=old(0.75), limit=1) == ["b1"]
    assert await keys(since=old(1), until=old(2)) == []  # an empty range


async def test_counts_by_action_and_status(corec_store: RecordStore) -> None:
    assert await corec_store.counts() == {}
    await corec_store.write_batch(
        [rec("1", action="a"), rec("2", "error", action="a"), rec("3", action="a")]
        + [rec(f"b{i}", "error", action="b") for i in range(4)]
    )
    assert await corec_store.counts() == {"a": {"ok": 2, "error": 1}, "b": {"error": 4}}


async def test_purge_deletes_old_records_in_batches(corec_store: RecordStore) -> None:
    await corec_store.write_batch([rec(f"old{i}", finished_at=old(40)) for i in range(25)])
    await corec_store.write_batch([rec(f"new{i}", finished_at=old(1)) for i in range(5)])
    # 25 old rows with batches of 10: three DELETEs, the last one short.
    assert await corec_store.purge(timedelta(days=30), batch_size=10) == 25
    assert sorted(r.command_key for r in await corec_store.query()) == [f"new{i}" for i in range(5)]
    assert await corec_store.purge(timedelta(days=30), batch_size=10) == 0
    # Exactly a multiple of the batch size: the loop must still stop.
    assert await corec_store.purge(timedelta(0), batch_size=5) == 5
    assert await total(corec_store) == 0


async def test_empty_batch_is_a_no_op(corec_store: RecordStore) -> None:
    await corec_store.write_batch([])
    assert await total(corec_store) == 0


async def test_random_write_sequences_match_the_python_model(corec_store: RecordStore) -> None:
    """The SQL upsert and the in-batch fold agree with :func:`merge`, write after write.

    Seeded pseudo-random sequences (reproducible): batches over a few keys with random status,
    deliveries and results, duplicates inside batches included.
    """
    from corec_plugin_kit.storage._base import merge

    rng = random.Random(20261201)
    model: dict[str, Record] = {}
    for step in range(60):
        batch = [
            rec(
                f"r{rng.randrange(6)}",
                rng.choice(["ok", "error"]),
                deliveries=rng.randint(1, 5),
                result={"step": step},
                duration_ms=float(step),
            )
            for _ in range(rng.randint(1, 8))
        ]
        await corec_store.write_batch(batch)
        for record in batch:
            old_record = model.get(record.command_key)
            model[record.command_key] = record if old_record is None else merge(old_record, record)
    for key, expected in model.items():
        assert await corec_store.get(key) == expected, key
    assert await total(corec_store) == len(model)
