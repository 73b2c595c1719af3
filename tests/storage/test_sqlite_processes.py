"""Several processes on one SQLite file, as ``corec-kit run --workers N`` starts them.

Real processes, started together on a file that does not exist yet: each must open the store,
look records up (each on its own read connection, opened while the others write) and write
its own: no "database is locked", no lost record.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

WRITER = """
import asyncio, sys
from datetime import datetime, timezone
from corec_plugin_kit.storage import Record, SQLiteStore

async def main(path, name, batches, size):
    store = SQLiteStore(path)
    await store.open()
    now = datetime.now(timezone.utc)
    for batch in range(batches):
        keys = [f"{name}-{batch}-{i}" for i in range(size)]
        # The worker's look-up (its own read connection, opened on first use while the
        # other processes write), then its write.
        assert await store.find_ok(keys) == {}
        await store.write_batch([
            Record(command_key=key, action="echo", processor="p", status="ok", finished_at=now)
            for key in keys
        ])
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def run_writers(path: Path, batches: int, size: int, count: int = 8) -> None:
    """``count`` processes started together, each writing ``batches`` batches of ``size``;
    fails on any process's error, or a record missing."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"w{i}", str(batches), str(size)],
            stderr=subprocess.PIPE,
        )
        for i in range(count)
    ]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            errors.append(err.decode()[-1500:])
    assert not errors, errors[0]
    with contextlib.closing(sqlite3.connect(path)) as conn:  # `with conn` alone does not close
        (rows,) = conn.execute("SELECT count(*) FROM corec_commands").fetchone()
    assert rows == count * batches * size


@pytest.mark.parametrize("round_", range(3))
def test_processes_starting_together_on_a_new_file_all_write(tmp_path: Path, round_: int) -> None:
    run_writers(tmp_path / f"new-{round_}" / "corec.db", batches=20, size=25)


def test_processes_writing_small_batches_take_turns_for_the_lock(tmp_path: Path) -> None:
    """An open loop's batches are of a record or a few: many more commits, each taking the
    write lock. Eight processes, 150 batches of 3 each: nothing lost, no error."""
    run_writers(tmp_path / "small" / "corec.db", batches=150, size=3)


async def test_a_store_waits_for_a_write_lock_held_while_it_switches_to_wal(
    tmp_path: Path,
) -> None:
    """SQLite answers ``PRAGMA journal_mode = WAL`` "database is locked" at once, without
    waiting ``busy_timeout``, while another process holds a write lock on a file not yet in
    WAL mode: what a worker starting beside others on a new file meets. It must wait."""
    import threading

    from corec_plugin_kit.storage import SQLiteStore

    path = tmp_path / "corec.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE elsewhere (a)")
    other.execute("BEGIN IMMEDIATE")  # the lock a migrating worker holds
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    store = SQLiteStore(path, busy_timeout_s=10)
    try:
        await store.open()
        assert await store.find_ok(["k"]) == {}
    finally:
        await store.close()
        release.join()
        other.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_small_look_up_that_fails_on_the_loop_goes_to_its_thread(
    tmp_path: Path,
) -> None:
    """Small look-ups run on the event loop's thread and never wait there: whatever goes wrong
    with that connection (a lock, with its busy timeout of 0; here, the fault we can cause,
    the connection closed under it: the test reaches into the store for that) sends the
    look-up to its own thread, which answers; the next one reconnects on the loop."""
    from datetime import datetime, timezone

    from corec_plugin_kit.storage import Record, SQLiteStore
    from corec_plugin_kit.storage._sqlite import INLINE_KEYS

    store = SQLiteStore(tmp_path / "corec.db", busy_timeout_s=10)
    await store.open()
    try:
        now = datetime.now(timezone.utc)
        await store.write_batch(
            [Record(command_key="k", action="echo", processor="p", status="ok", finished_at=now)]
        )
        assert set(await store.find_ok(["k", "other"])) == {"k"}
        inline = store._inline
        assert inline is not None, "a small look-up did not run on the loop's thread"
        inline.close()
        assert set(await store.find_ok(["k"])) == {"k"}  # answered by the look-up thread
        assert store._inline is None
        assert set(await store.find_ok(["k"])) == {"k"}
        assert store._inline is not None and store._inline is not inline
        many = [f"key{i}" for i in range(INLINE_KEYS)]  # with "k", over: the thread, directly
        assert set(await store.find_ok([*many, "k"])) == {"k"}
    finally:
        await store.close()
