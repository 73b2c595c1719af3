"""Each worker's figures in ``<stream_in>:workers``: written by real ``corec-kit run`` processes
as commands flow, read by ``manager stats`` and ``worker_figures`` from elsewhere, expiring,
withdrawn on SIGTERM, one field per process under ``--workers 2``, none with
``publish_figures`` off; then the hash's rules (stale and forgotten fields) directly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis as syncredis
from runtime_helpers import payload, subprocess_env
from shared_helpers import wait_until, wait_until_async

from corec_plugin_kit import __version__
from corec_plugin_kit.api import worker_figures
from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.runtime import figures
from corec_plugin_kit.runtime.service import run_worker

CLI = [sys.executable, "-m", "corec_plugin_kit"]
COMPACT = {"consumer", "host", "pid", "version", "started", "at", "processed", "in_flight"}


@pytest.fixture
def sync_redis(corec_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(corec_redis_url)
    yield client
    client.close()


def key_of(streams: dict[str, Any]) -> str:
    return figures.workers_key(KernelConfig.model_validate(streams))


def field(r: syncredis.Redis, key: str, consumer: str) -> dict[str, Any] | None:
    raw = r.hget(key, consumer)
    return None if raw is None else dict(orjson.loads(raw))


def pid_of(r: syncredis.Redis, key: str, consumer: str) -> int:
    got = field(r, key, consumer)
    assert got is not None, f"{consumer} has no field"
    return int(got["pid"])


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "run", *args], env=env, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then the exit code must be 0 (the worker finished and cleaned up)."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]


def send(r: syncredis.Redis, stream: str, *commands: tuple[str, dict[str, Any]]) -> None:
    for action, params in commands:
        r.xadd(stream, payload(action, params))


def figures_once(r: syncredis.Redis, key: str, consumer: str, want: Any) -> dict[str, Any]:
    """Poll the worker's field until ``want(field)`` holds; returns that field."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        got = field(r, key, consumer)
        if got is not None and want(got):
            seen.append(got)
            return True
        return False

    wait_until(check, interval=0.2, what=f"{consumer}'s figures to show the commands")
    return seen[0]


def test_a_worker_publishes_its_figures_and_withdraws_them_on_sigterm(
    corec_streams: dict[str, Any], sync_redis: syncredis.Redis
) -> None:
    env = subprocess_env(corec_streams)
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,manager"
    key, stream = key_of(corec_streams), corec_streams["stream_in"]
    assert key == f"{stream}:workers"
    before = time.time()
    worker = start(env, "--consumer", "w-fig")
    try:
        first = figures_once(sync_redis, key, "w-fig", lambda f: True)
        assert first["host"] == socket.gethostname() and first["pid"] == worker.pid
        assert first["version"] == __version__ and first["consumer"] == "w-fig"
        assert first["partitions"] == 1 and first["in_flight"] == 0
        assert first["processors"]["echo_proc"] is None  # in-process: no distribution
        assert first["processors"]["manager"] == __version__
        assert before - 1 <= first["started"] <= first["at"] <= time.time() + 1
        assert 0 < sync_redis.pttl(key) <= figures.STALE_S * 1000

        send(sync_redis, stream, *[("echo", {"n": n}) for n in range(3)])
        wave = figures_once(sync_redis, key, "w-fig", lambda f: f["processed"] == 3)
        assert wave["actions"]["echo"]["outcomes"] == {"ok": 3}
        assert wave["breakers"] == {"echo_proc": {"state": "closed", "failures": 0}}

        send(sync_redis, stream, *[("echo", {"n": n}) for n in range(3, 5)],
             ("fail", {}), ("fail", {}), ("echo", {"n": "x"}), ("no_such_action", {}))  # fmt: skip
        got = figures_once(sync_redis, key, "w-fig", lambda f: f["processed"] == 9)
        echo = got["actions"]["echo"]
        assert echo["processor"] == "echo_proc"
        assert echo["outcomes"] == {"ok": 5, "invalid_params": 1}
        assert got["actions"]["fail"]["outcomes"] == {"handler_error": 2}
        assert got["actions"]["unknown"] == {**got["actions"]["unknown"], "processor": "none",
                                             "outcomes": {"unknown_action": 1}}  # fmt: skip
        for figures_of in got["actions"].values():
            assert len(figures_of["buckets"]) == len(figures.BUCKETS) + 1
            assert sum(figures_of["buckets"]) == sum(figures_of["outcomes"].values())
            assert figures_of["sum"] >= 0
        assert got["at"] > first["at"] and got["started"] == first["started"]

        # `corec-kit manager stats`, in another process, lists the worker in brief.
        done = subprocess.run([*CLI, "manager", "stats"], env=env, capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        listed = json.loads(done.stdout)["workers"]
        assert [w["consumer"] for w in listed] == ["w-fig"]
        assert set(listed[0]) == COMPACT and listed[0]["pid"] == worker.pid
        assert listed[0]["processed"] == 9
    finally:
        stop(worker)
    assert sync_redis.hget(key, "w-fig") is None
    assert not sync_redis.exists(key)  # the last field gone, the hash with it


def test_workers_2_gives_one_field_per_worker_process(
    corec_streams: dict[str, Any], sync_redis: syncredis.Redis
) -> None:
    key = key_of(corec_streams)
    supervisor = start(subprocess_env(corec_streams), "--workers", "2", "--consumer", "sup")
    try:
        wait_until(lambda: set(sync_redis.hkeys(key)) == {b"sup-0", b"sup-1"}, interval=0.2,
                   what="both workers of --workers 2 to publish")  # fmt: skip
        pids = {pid_of(sync_redis, key, name) for name in ("sup-0", "sup-1")}
        assert len(pids) == 2 and supervisor.pid not in pids
    finally:
        stop(supervisor)
    assert not sync_redis.exists(key)


def test_publish_figures_false_publishes_nothing(
    corec_streams: dict[str, Any], sync_redis: syncredis.Redis
) -> None:
    key = key_of(corec_streams)
    quiet = start(subprocess_env(corec_streams, publish_figures=False), "--consumer", "quiet")
    loud = None
    try:
        send(sync_redis, corec_streams["stream_in"], ("echo", {"n": 1}))
        wait_until(lambda: sync_redis.xlen(corec_streams["stream_out"]) == 1, interval=0.1,
                   what="the quiet worker to answer")  # fmt: skip
        # A worker started later, with the setting on: once it has written twice, the quiet one
        # has been running for longer than two periods.
        loud = start(subprocess_env(corec_streams), "--consumer", "loud")
        first = figures_once(sync_redis, key, "loud", lambda f: True)
        figures_once(sync_redis, key, "loud", lambda f: f["at"] > first["at"])
        assert sync_redis.hkeys(key) == [b"loud"]
    finally:
        stop(quiet)
        if loud is not None:
            stop(loud)


async def test_stale_fields_are_ignored_and_old_ones_forgotten(
    corec_redis: Any, corec_streams: dict[str, Any], corec_kernel: Any
) -> None:
    kernel = corec_kernel(**corec_streams)
    kernel.redis = corec_redis
    key = figures.workers_key(kernel.settings.kernel)
    now = time.time()
    live = {"at": now, "consumer": "alive", "pid": 1}
    await figures.publish(corec_redis, key, live)
    assert 0 < await corec_redis.pttl(key) <= figures.STALE_S * 1000
    await corec_redis.hset(key, mapping={
        "stale": orjson.dumps({"at": now - figures.STALE_S - 1, "consumer": "stale"}),
        "gone": orjson.dumps({"at": now - figures.FORGET_S - 1, "consumer": "gone"}),
        "garbage": b"not json", "no-at": orjson.dumps({"consumer": "no-at"}),
    })  # fmt: skip
    got = await worker_figures(kernel)
    assert got == {"buckets": list(figures.BUCKETS), "interval_s": figures.FIGURES_S,
                   "workers": [live]}  # fmt: skip
    # A dead worker's field past an hour is deleted; a merely stale one is kept (not shown).
    assert set(await corec_redis.hkeys(key)) == {b"alive", b"stale", b"garbage", b"no-at"}
    await figures.withdraw(corec_redis, key, "alive")
    assert (await worker_figures(kernel))["workers"] == []


async def test_the_own_worker_is_read_live_even_with_publishing_off(
    corec_redis: Any, corec_streams: dict[str, Any], echo_kernel: Any
) -> None:
    kernel = echo_kernel(publish_figures=False)
    runner = asyncio.ensure_future(run_worker(kernel, consumer="own"))
    try:
        await wait_until_async(lambda: kernel.runtime is not None, what="the worker to start")
        await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": 1}))
        await wait_until_async(lambda: corec_redis.xlen(corec_streams["stream_out"]),
                               what="the echo command's result")  # fmt: skip
        got = await worker_figures(kernel)
        (own,) = got["workers"]
        assert own["consumer"] == "own" and own["pid"] == os.getpid()
        assert own["actions"]["echo"]["outcomes"]["ok"] >= 1  # the process's tallies
        assert not await corec_redis.exists(figures.workers_key(kernel.settings.kernel))
    finally:
        if kernel.runtime is not None:
            kernel.runtime.stop()
        await runner
