"""SIGTERM while a CPU-bound blocking handler runs: a real ``corec-kit run`` subprocess exits 0
within ``shutdown_grace_s`` plus a little, and the entry stays pending for the next worker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as syncredis
from runtime_helpers import subprocess_env
from shared_helpers import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GRACE = 2.0
SLACK = 4.0


@pytest.fixture
def sync_redis(corec_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(corec_redis_url)
    yield client
    client.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corec_plugin_kit", "run", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@pytest.mark.parametrize("action", ["burn", "burn_thread"])
def test_sigterm_during_a_cpu_bound_handler_exits_within_the_grace_period(
    sync_redis: syncredis.Redis,
    corec_streams: dict[str, Any],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    action: str,
) -> None:
    stream, group, out = (
        corec_streams["stream_in"],
        corec_streams["group"],
        corec_streams["stream_out"],
    )
    pid_file = tmp_path / "pid"
    body = {"action": action, "params": {"seconds": 60, "pid_file": str(pid_file)}, "id": "cpu"}
    sync_redis.xadd(stream, {"payload": orjson.dumps(body)})
    env = subprocess_env(
        corec_streams,
        shutdown_grace_s=GRACE,
        claim_idle_ms=60_000,
        action_timeouts={action: 300},  # the handler's limit is not what stops it here
    )
    worker = start_worker(env, "--consumer", "W")
    wait_for(lambda: pid_file.exists() and bool(pid_file.read_text()), what="the handler")
    handler_pid = int(pid_file.read_text())
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _out, err = worker.communicate(timeout=GRACE + 30)
    took = time.monotonic() - sent
    assert worker.returncode == 0, err.decode(errors="replace")
    assert took < GRACE + SLACK, took
    if action == "burn":  # a process handler runs in a pool worker, killed with the call
        assert handler_pid != worker.pid
        assert not pid_alive(handler_pid)
    assert sync_redis.xlen(out) == 0  # no answer: the work was not done
    # Still pending, released by W (idle past claim_idle_ms): the next worker takes it at once.
    rows = sync_redis.xpending_range(stream, group, "-", "+", 10)
    assert len(rows) == 1
    assert rows[0]["time_since_delivered"] >= 60_000
    print(f"{action}: SIGTERM to exit {took:.2f}s (grace {GRACE}s)")
