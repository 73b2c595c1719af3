"""``corec-kit run --workers N``: the supervisor, its workers, one metrics endpoint per host.

Everything runs for real: the CLI in subprocesses, real worker processes, real Redis; a worker is
killed with SIGKILL to make the supervisor restart it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import payload, results, subprocess_env
from shared_helpers import free_port, pid_alive, proc_stat, wait_until

from corec_plugin_kit.runtime.supervisor import Supervisor, worker_count

CLI = [sys.executable, "-m", "corec_plugin_kit"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = proc_stat(int(entry.name))
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def start_supervisor(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, "run", *args], env=env, stderr=subprocess.PIPE)


async def test_two_workers_share_the_stream_and_sum_up_at_exit(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    for i in range(600):
        await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": i}, id=f"c{i}"))
    env = subprocess_env(corec_streams)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "run", "--workers", "2", "--burst", "--consumer", "host-a",
        env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    text = err.decode()
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    got = await results(corec_redis, corec_streams["stream_out"])  # asserts no duplicates
    assert len(got) == 600 and all(r["status"] == "ok" for r in got.values())
    # One start-up line for the host, one per worker, each with its consumer name.
    assert "consumer host-a-0..1;" in text and "workers 2" in text
    for i in (0, 1):
        assert f"[host-a-{i}] corec-kit run:" in text and f"consumer host-a-{i};" in text
    # The summary is the workers' sum.
    assert "workers stopped: processed=600, ok=600," in text and "restarts=0" in text
    consumers = await corec_redis.xinfo_consumers(
        corec_streams["stream_in"], corec_streams["group"]
    )
    seen = {c["name"].decode() for c in consumers}
    assert seen <= {"host-a-0", "host-a-1"}


async def test_a_killed_worker_is_restarted_and_metrics_survive_it(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    port = free_port()
    env = subprocess_env(corec_streams, metrics_port=port, shutdown_grace_s=5)
    proc = start_supervisor(env, "--workers", "2", "--consumer", "host-b")
    try:
        wait_until(lambda: len(children(proc.pid)) == 2, what="two workers")
        for i in range(100):
            await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": i}))
        ok = 'outcome="ok"'
        wait_until(
            lambda: metric(scrape(port), "corec_commands_total", outcome="ok") == 100,
            what=f"the summed metric corec_commands_total{{{ok}}} to reach 100",
        )
        victim = children(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: metric(scrape(port), "corec_worker_restarts_total") == 1,
            what="the restart to be counted",
        )
        wait_until(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid))
        assert metric(scrape(port), "corec_workers") == 2
        # The dead worker's counts stay in the host's sum; new commands add to it.
        for i in range(100, 150):
            await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": i}))
        wait_until(
            lambda: metric(scrape(port), "corec_commands_total", outcome="ok") == 150,
            what="150 ok commands over both generations of workers",
        )
        workers = children(proc.pid)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = err.decode()
    assert proc.returncode == 0, text[-3000:]
    assert time.monotonic() - started < 5 + 5  # within shutdown_grace_s (5) plus start-up slack
    assert not any(pid_alive(pid, zombie_alive=False) for pid in workers)
    assert re.search(r"worker host-b-\d exited -9; restarting it", text), text[-3000:]
    assert len(await results(corec_redis, corec_streams["stream_out"])) == 150


def test_a_taken_metrics_port_is_a_config_error(corec_streams: dict[str, Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = subprocess_env(corec_streams, metrics_port=port)
        for workers in ("1", "2"):
            proc = subprocess.run(
                [*CLI, "run", "--burst", "--workers", workers],
                env=env, capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            err = proc.stderr.decode()
            assert proc.returncode == 3, err[-2000:]
            assert "Traceback" not in err
            assert f"127.0.0.1:{port}" in err and "kernel.metrics_port" in err
            assert "COREC_KERNEL__METRICS_PORT" in err and "--workers" in err


def test_workers_must_be_a_positive_number_or_auto() -> None:
    assert worker_count("3") == 3
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="--workers"):
            worker_count(bad)
    proc = subprocess.run(
        [*CLI, "run", "--workers", "zero"], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 2 and b"--workers" in proc.stderr


def _python(code: str) -> Any:
    """A supervisor command: a real process running ``code`` (standing in for a worker)."""
    return lambda consumer, snapshots: [sys.executable, "-c", code]


def test_a_worker_that_no_restart_can_fix_stops_them_all() -> None:
    """Exit 3 (a config error) or 4 (a processor error): the others are stopped, the code
    kept. Stand-ins for workers: ``t-0`` handles SIGTERM as a worker does (exits 0), ``t-1``
    exits 3 at once."""
    sleeper = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
    sleeper += "time.sleep(60)"

    def command(consumer: str, snapshots: Path) -> list[str]:
        code = "import time, sys; time.sleep(0.5); sys.exit(3)" if consumer == "t-1" else sleeper
        return [sys.executable, "-c", code]

    supervisor = Supervisor(command, 2, "t", grace=5)
    try:
        started = time.monotonic()
        assert supervisor.run() == 3
        assert time.monotonic() - started < 5
        assert supervisor.restarts == 0
        assert supervisor.slots[0].history == [0]  # stopped with SIGTERM, exited 0
        assert supervisor.slots[1].history == [3]
    finally:
        supervisor.close()


def test_a_crashing_worker_is_restarted_with_backoff() -> None:
    supervisor = Supervisor(_python("import sys; sys.exit(1)"), 1, "c", grace=1)
    try:
        import threading

        threading.Timer(2.0, supervisor.stop).start()
        started = time.monotonic()
        supervisor.run()
        # Backoff 0, 0.5, 1, 2 ... s between restarts: within 2 s, a few restarts, not hundreds.
        assert 2 <= supervisor.restarts <= 5, supervisor.restarts
        assert time.monotonic() - started < 5
    finally:
        supervisor.close()


def test_a_worker_that_exits_0_is_done_not_restarted() -> None:
    """Exit 0 means the worker was meant to stop (--max-commands reached, say): when every
    worker is done, so is the supervisor, with 0."""
    supervisor = Supervisor(_python("import sys; sys.exit(0)"), 2, "z", grace=1)
    try:
        started = time.monotonic()
        assert supervisor.run() == 0
        assert time.monotonic() - started < 5
        assert supervisor.restarts == 0
        assert [slot.history for slot in supervisor.slots] == [[0], [0]]
    finally:
        supervisor.close()


def test_a_worker_stopped_while_it_starts_counts_as_a_clean_stop() -> None:
    """SIGTERM reaches a worker before it installs its handlers (it was just restarted): it
    dies of the signal having read nothing; the supervisor still exits 0. The stand-in never
    installs a handler."""
    supervisor = Supervisor(_python("import time; time.sleep(60)"), 2, "s", grace=5)
    try:
        import threading

        threading.Timer(1.0, supervisor.stop).start()
        assert supervisor.run() == 0
        assert [slot.history for slot in supervisor.slots] == [[-15], [-15]]
    finally:
        supervisor.close()
