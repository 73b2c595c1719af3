"""SQLite's small batches, written on the event loop's thread.

A batch of up to ``INLINE_ROWS`` records is one statement on the loop's own connection, which
never waits for a lock and never checkpoints; anything else, and any write that fails or runs
slow there, goes to the writer's thread. Real files and real locks throughout; the one fault
these tests cannot cause, a slow disk, is faked with a clock (said where).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from corec_plugin_kit.storage import Record, SQLiteStore, _sqlite, refuses_content
from corec_plugin_kit.storage._sqlite import CHECKPOINT_COMMITS, INLINE_ROWS


def records(prefix: str, count: int) -> list[Record]:
    now = datetime.now(timezone.utc)
    return [
        Record(f"{prefix}{i}", "echo", "p", "ok", {"n": i}, {"n": i}, finished_at=now)
        for i in range(count)
    ]


def writer_threads(known: set[int]) -> list[int]:
    """This store's writer threads: those alive now but not in ``known``."""
    return [
        thread.ident
        for thread in threading.enumerate()
        if thread.name.startswith("corec-sqlite-writer")
        and thread.ident is not None
        and thread.ident not in known
    ]


def stored(path: Path) -> set[str]:
    """The keys another connection sees: committed, not only written."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {key for (key,) in conn.execute("SELECT command_key FROM corec_commands")}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "corec.db", busy_timeout_s=10)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_small_batch_is_written_on_the_loop_and_a_larger_one_on_the_writer_thread(
    store: SQLiteStore,
) -> None:
    others = set(writer_threads(set()))
    await store.write_batch(records("a", INLINE_ROWS))
    assert writer_threads(others) == [], "a small batch went to the writer's thread"
    assert stored(store.path) == {f"a{i}" for i in range(INLINE_ROWS)}
    await store.write_batch(records("b", INLINE_ROWS + 1))
    assert len(writer_threads(others)) == 1
    assert len(stored(store.path)) == 2 * INLINE_ROWS + 1


async def test_a_small_batch_that_meets_another_connections_lock_waits_for_it_on_the_thread(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's connection fails at once on a lock (busy timeout 0); the batch then waits
    on the writer's thread, as a large one does, and is written once the lock goes."""
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # what another worker on the file holds while it writes
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    start = time.monotonic()
    release.start()
    try:
        await store.write_batch(records("k", 1))
    finally:
        release.join()
        other.close()
    assert time.monotonic() - start >= 0.25  # it waited, where the loop's connection fails
    assert stored(store.path) == {"k0"}
    # Writes stay on the thread for INLINE_PAUSE_S; with no pause, the next is inline again.
    assert store._inline is None
    monkeypatch.setattr(_sqlite, "INLINE_PAUSE_S", 0.0)
    store._inline_paused_until = 0.0
    await store.write_batch(records("n", 1))
    assert store._inline is not None
    assert stored(store.path) == {"k0", "n0"}


async def test_slow_inline_writes_send_the_writes_to_the_thread_for_a_while(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk slow to fsync must not hold the event loop. A slow disk is the one fault here we
    cannot cause, so the store's clock is faked: every reading is 10 ms after the last."""
    others = set(writer_threads(set()))
    clock = [0.0]

    def slow_clock() -> float:
        clock[0] += 0.010
        return clock[0]

    monkeypatch.setattr(_sqlite, "perf_counter", slow_clock)
    for i in range(3):  # 10 ms a write: the moving average passes 5 ms on the third
        await store.write_batch(records(f"s{i}-", 1))
        assert writer_threads(others) == []
    await store.write_batch(records("t", 1))
    assert len(writer_threads(others)) == 1  # paused: this one went to the thread
    thread_calls = 0
    real_run = store._writer.run

    async def counted(work: Callable[[sqlite3.Connection], Any]) -> Any:
        nonlocal thread_calls
        thread_calls += 1
        return await real_run(work)

    monkeypatch.setattr(store._writer, "run", counted)
    await store.write_batch(records("u", 1))
    assert thread_calls == 1, "a write during the pause ran on the loop"
    clock[0] += _sqlite.INLINE_PAUSE_S  # the pause is over: the loop tries again
    await store.write_batch(records("v", 1))
    assert thread_calls == 1, "the loop did not take the writes back after the pause"
    assert len(stored(store.path)) == 6


async def test_the_loop_never_checkpoints_and_the_writer_thread_does(
    store: SQLiteStore,
) -> None:
    """Without checkpoints the WAL of 3 x CHECKPOINT_COMMITS commits of a record each would
    grow past 10 MB (about 4.7 pages of 4 KiB a commit); checkpointed on the writer's thread
    every CHECKPOINT_COMMITS, SQLite starts it over and it stays under half of that."""
    for n in range(3 * CHECKPOINT_COMMITS):
        await store.write_batch(records(f"c{n}-", 1))
        if n % CHECKPOINT_COMMITS == CHECKPOINT_COMMITS - 1:
            await asyncio.sleep(0.05)  # the checkpoint runs beside the writes; let it end
    assert store._inline is not None
    assert store._inline.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    wal = store.path.with_name(store.path.name + "-wal")
    assert wal.stat().st_size < 5_000_000, f"WAL of {wal.stat().st_size} bytes"
    assert len(stored(store.path)) == 3 * CHECKPOINT_COMMITS


async def test_a_record_refused_for_its_content_on_the_loop_raises_there(
    store: SQLiteStore,
) -> None:
    """A value SQLite cannot hold is refused on any connection: the loop's raises it as the
    thread would (the worker then writes the batch one record at a time), keeps its
    connection and does not send the next writes to the thread."""
    await store.write_batch(records("a", 1))
    inline = store._inline
    assert inline is not None
    bad = records("big", 1)[0]
    bad.deliveries = 2**70  # past SQLite's 64-bit integers
    with pytest.raises(OverflowError) as caught:
        await store.write_batch([*records("fine", 1), bad])
    assert refuses_content(caught.value)
    assert store._inline is inline and store._inline_paused_until == 0.0
    await store.write_batch(records("b", 1))
    assert stored(store.path) == {"a0", "b0"}
