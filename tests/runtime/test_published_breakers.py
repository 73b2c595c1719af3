"""A worker's circuit breakers, seen from other processes: ``stats`` run elsewhere shows the
breaker a running worker has open, ``health`` through the stream says ``degraded``, and a
stopped worker's breakers are gone. Through the real CLI; then the hash's rules directly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from runtime_helpers import subprocess_env
from shared_helpers import wait_until

from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.runtime import published

CLI = [sys.executable, "-m", "corec_plugin_kit"]


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_stats_elsewhere_sees_a_running_workers_open_breaker(
    corec_streams: dict[str, Any], tmp_path: Path
) -> None:
    down = tmp_path / "down"
    down.touch()  # needs_dependency raises DependencyUnavailable while this file exists
    env = subprocess_env(
        corec_streams,
        circuit_breaker={"max_failures": 2, "reset_timeout": 60},
        claim_idle_ms=60_000,
    )
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,manager"
    env["ECHO_DOWN_FILE"] = str(down)
    worker = subprocess.Popen(
        [*CLI, "run", "--consumer", "w-open"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert cli(env, "send", "echo", "-p", "n:=1", "--wait")["status"] == "ok"
        wait_until(
            lambda: cli(env, "exec", "stats")["result"]["breakers"] == {"echo_proc": "closed"},
            interval=0.3, what="the worker to publish its first breaker",
        )  # fmt: skip
        before = cli(env, "exec", "stats")["result"]
        assert set(before["breakers_by_consumer"]) == {"w-open"}
        for n in range(3):
            cli(env, "send", "needs_dependency", "-p", f"n:={n}")

        def opened() -> bool:
            stats = cli(env, "exec", "stats")["result"]
            return bool(stats["breakers"].get("echo_proc") == "open")

        wait_until(opened, interval=0.3, what="stats in another process to see the breaker open")
        stats = cli(env, "exec", "stats")["result"]
        mine = stats["breakers_by_consumer"]["w-open"]["echo_proc"]
        assert mine["state"] == "open" and mine["failures"] >= 2
        # The manager's health, answered by the worker itself, says degraded.
        health = cli(env, "send", "health", "--wait")["result"]
        assert health["status"] == "degraded"
        assert health["breakers"]["echo_proc"] == "open"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err[-3000:]
    # Stopped: its breakers are no one's.
    assert cli(env, "exec", "stats")["result"]["breakers_by_consumer"] == {}


async def test_the_hash_keeps_live_workers_and_drops_stale_ones(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    cfg = KernelConfig.model_validate(corec_streams)
    key = published.breakers_key(cfg)
    assert key == f"{cfg.stream_in}:breakers"
    await published.publish(corec_redis, key, "alive", {"p": {"state": "half_open"}})
    await published.publish(corec_redis, key, "other", {"p": {"state": "closed"},
                                                        "q": {"state": "open"}})  # fmt: skip
    stale = {"at": time.time() - published.STALE_S - 1, "breakers": {"p": {"state": "open"}}}
    await corec_redis.hset(key, "dead", orjson.dumps(stale))
    await corec_redis.hset(key, "garbage", b"not json")
    got = await published.read(corec_redis, key)
    assert set(got) == {"alive", "other"}
    assert published.merged(got) == {"p": "half_open", "q": "open"}
    await published.withdraw(corec_redis, key, "alive")
    assert set(await published.read(corec_redis, key)) == {"other"}
