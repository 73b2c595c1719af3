"""Metrics endpoint, manager stats and dead-letter replay, ``send --wait`` over a real worker."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from typing import Any

import corec_manager.processor as manager
import orjson
import pytest
from runtime_helpers import payload, results
from shared_helpers import free_port


async def test_metrics_are_served_with_bounded_labels(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    from prometheus_client import REGISTRY

    from corec_plugin_kit.runtime.service import run_worker

    labels = {"action": "echo", "processor": "echo_proc"}
    before = REGISTRY.get_sample_value("corec_command_duration_seconds_count", labels) or 0.0
    port = free_port()
    stream = corec_streams["stream_in"]
    await corec_redis.xadd(stream, payload("echo", {"n": 1}, id="m1"))
    for i in range(3):
        await corec_redis.xadd(stream, payload(f"made_up_{i}", {}, id=f"u{i}"))
    kernel = echo_kernel(metrics_port=port)
    task = asyncio.ensure_future(run_worker(kernel))
    try:
        for _ in range(100):
            if len(await results(corec_redis, corec_streams["stream_out"])) == 4:
                break
            await asyncio.sleep(0.05)
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        )
    finally:
        kernel.runtime.stop()
        await asyncio.wait_for(task, 20)
    text = body.decode()
    assert 'corec_commands_total{action="echo",outcome="ok",processor="echo_proc"}' in text
    # Unknown actions share one label value, whatever their names.
    assert (
        'corec_commands_total{action="unknown",outcome="unknown_action",processor="none"}' in text
    )
    assert "made_up" not in text
    assert 'corec_dead_letters_total{action="unknown"}' in text
    # The registry is process-wide: other tests of this process may have run echo too.
    count = (
        f'corec_command_duration_seconds_count{{action="echo",processor="echo_proc"}} {before + 1}'
    )
    assert count in text
    inf = 'corec_command_duration_seconds_bucket{action="echo",le="+Inf",processor="echo_proc"}'
    assert f"{inf} {before + 1}" in text
    assert "corec_commands_in_flight 0.0" in text
    assert 'corec_circuit_state{processor="echo_proc"} 0.0' in text
    assert "corec_commands_in_flight" in text
    for name in ("corec_stream_lag", "corec_pending_entries", "corec_redeliveries_total"):
        assert name in text


async def test_dead_letters_are_listed_and_replayed(
    echo_kernel: Any,
    corec_register: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:
    corec_register(manager, name="manager")
    stream, dead = corec_streams["stream_in"], corec_streams["dead_letter_stream"]
    await corec_redis.xadd(stream, payload("echo", {"n": "bad"}, id="bad1"))
    await corec_redis.xadd(stream, payload("echo", {"n": "bad"}, id="bad2"))
    kernel = echo_kernel()
    await corec_worker(kernel)
    assert await corec_redis.xlen(dead) == 2

    async with kernel:
        listed = await kernel.execute({"action": "dlq_list", "params": {"limit": 1}})
        assert listed["status"] == "ok", listed
        page = listed["result"]
        assert page["total"] == 2 and len(page["entries"]) == 1
        first = page["entries"][0]
        assert first["action"] == "echo" and first["error"]["type"] == "invalid_params"
        assert first["deliveries"] == 1
        assert first["last_consumer"] and first["failed_at"]
        # What the worker added is shown apart from the command's own fields.
        assert set(first["fields"]) == {"payload"}
        rest = await kernel.execute(
            {"action": "dlq_list", "params": {"limit": 5, "start": page["next"]}}
        )
        assert [e["entry_id"] for e in rest["result"]["entries"]] != [first["entry_id"]]

        bad = await kernel.execute({"action": "dlq_replay", "params": {}})
        assert bad["error"]["type"] == "invalid_params"
        replayed = await kernel.execute(
            {"action": "dlq_replay", "params": {"ids": [first["entry_id"], "1-1"]}}
        )
        assert replayed["status"] == "ok"
        assert len(replayed["result"]["replayed"]) == 1
        assert replayed["result"]["missing"] == ["1-1"]
        stats = await kernel.execute({"action": "stats", "params": {}})
        assert stats["result"]["lengths"][dead] == 1
        assert stats["result"]["lag"] == 1  # the replayed command waits on stream_in
    assert await corec_redis.xlen(dead) == 1
    # The replayed entry carries its original fields (and fails again the same way).
    entries = await corec_redis.xrange(stream)
    assert orjson.loads(entries[-1][1][b"payload"])["id"] == "bad1"
    assert set(entries[-1][1]) == {b"payload"}


@pytest.mark.timeout(60)
async def test_send_wait_prints_the_result_of_a_running_worker(
    corec_streams: dict[str, Any], tmp_path: Any
) -> None:
    from runtime_helpers import subprocess_env

    env = subprocess_env(corec_streams)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corec_plugin_kit", "run", "-q", env=env, cwd=tmp_path
    )
    try:
        send = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corec_plugin_kit", "send", "echo", "-p", "n:=5", "--id", "w1",
            "--wait", "--timeout", "20",
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(send.communicate(), 30)
        assert send.returncode == 0
        answer = orjson.loads(out)
        assert answer["id"] == "w1" and answer["result"] == {"n": 5, "text": ""}

        bad = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corec_plugin_kit", "send", "echo", "-p", "n=x", "--wait",
            "--timeout", "20",
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(bad.communicate(), 30)
        assert bad.returncode == 2
        assert orjson.loads(out)["error"]["type"] == "invalid_params"
        assert b"Traceback" not in err
    finally:
        worker.terminate()
        assert await asyncio.wait_for(worker.wait(), 20) == 0


def test_manager_cli_lists_and_replays_dead_letters(corec_streams: dict[str, Any]) -> None:
    import subprocess

    import redis as syncredis
    from runtime_helpers import subprocess_env

    env = subprocess_env(corec_streams)
    env["COREC_PLUGINS"] = "echo_proc"
    env.pop("COREC_LOAD_PROCESSORS")  # the manager processor is needed too
    client = syncredis.Redis.from_url(corec_streams["redis_url"])
    try:
        for i in range(3):
            client.xadd(corec_streams["stream_in"], payload("echo", {"n": "x"}, id=f"d{i}"))

        def kit(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "corec_plugin_kit", *args],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip

        assert kit("run", "--burst").returncode == 0
        listed = kit("manager", "dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        page = orjson.loads(listed.stdout)
        assert page["total"] == 3
        text = kit("manager", "dlq", "list", "--limit", "2")
        assert "invalid_params" in text.stdout and "more: corec-kit manager dlq list" in text.stdout
        first = page["entries"][0]["entry_id"]
        one = kit("manager", "dlq", "replay", first)
        assert one.returncode == 0 and "replayed 1" in one.stdout
        missing = kit("manager", "dlq", "replay", "1-1")
        assert missing.returncode == 1 and "not found: 1-1" in missing.stderr
        usage = kit("manager", "dlq", "replay")
        assert usage.returncode == 2
        rest = kit("manager", "dlq", "replay", "--all")
        assert rest.returncode == 0 and "replayed 2" in rest.stdout
        assert "replaying" in rest.stderr  # the progress bar
        assert client.xlen(corec_streams["dead_letter_stream"]) == 0
        stats = orjson.loads(kit("manager", "stats").stdout)
        assert stats["lag"] == 3
    finally:
        client.close()


async def test_wait_finds_a_result_written_in_the_same_millisecond(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    from corec_plugin_kit.runtime.ops import wait_for_result

    out = corec_streams["stream_out"]
    # Ids count per stream: the command was 5000-7 on stream_in, its result 5000-0 here.
    await corec_redis.xadd(out, {"id": "other", "payload": b"{}"}, id="4999-3")
    body = orjson.dumps({"id": "k1", "status": "ok"})
    await corec_redis.xadd(out, {"id": "k1", "payload": body}, id="5000-0")
    found = await wait_for_result(corec_redis, out, "k1", "5000-7", timeout=2)
    assert found == {"id": "k1", "status": "ok"}
    assert await wait_for_result(corec_redis, out, "nope", "5000-7", timeout=0.3) is None
