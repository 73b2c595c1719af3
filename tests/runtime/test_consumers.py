"""Dead consumers are removed: idle past the bound and owning nothing, never the caller itself."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from typing import Any

import corec_manager.processor as manager
import orjson
import pytest
from redis.exceptions import ResponseError
from runtime_helpers import payload, subprocess_env

from corec_plugin_kit.runtime.consumers import _prune_checked, list_consumers, prune_consumers

IDLE_MS = 1000  # a consumer read "a moment ago" must still count as fresh on a busy machine


async def read_one(redis: Any, stream: str, group: str, consumer: str, *, ack: bool) -> None:
    """XREADGROUP one entry as ``consumer`` (which creates it); ack it unless told not to."""
    await redis.xadd(stream, {"n": consumer})
    (_name, [(entry_id, _fields)]), *_ = await redis.xreadgroup(
        group, consumer, {stream: ">"}, count=1
    )
    if ack:
        await redis.xack(stream, group, entry_id)


async def group_of_four(redis: Any, stream: str, group: str, *, fresh: bool = True) -> None:
    """``busy`` owns an entry, ``idle`` owns nothing, ``me`` is the caller, all three idle past
    IDLE_MS; ``fresh`` read a moment ago."""
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await read_one(redis, stream, group, "busy", ack=False)
    await read_one(redis, stream, group, "idle", ack=True)
    await read_one(redis, stream, group, "me", ack=True)
    await asyncio.sleep(IDLE_MS / 1000 * 1.1)
    if fresh:
        await read_one(redis, stream, group, "fresh", ack=True)


async def names(redis: Any, stream: str, group: str) -> set[str]:
    return {c["name"] for c in await list_consumers(redis, stream, group)}


PRUNERS = {"script": prune_consumers, "checked": _prune_checked}


@pytest.mark.parametrize("how", sorted(PRUNERS))
async def test_only_idle_consumers_owning_nothing_are_removed(
    corec_redis: Any, corec_streams: dict[str, Any], how: str
) -> None:
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    await group_of_four(corec_redis, stream, group)
    listed = {c["name"]: c for c in await list_consumers(corec_redis, stream, group)}
    assert listed["busy"]["pending"] == 1 and listed["busy"]["idle_ms"] > IDLE_MS
    assert listed["idle"]["pending"] == 0 and listed["idle"]["idle_ms"] > IDLE_MS

    removed = await PRUNERS[how](corec_redis, stream, group, IDLE_MS, keep="me")
    assert removed == ["idle"]
    assert await names(corec_redis, stream, group) == {"busy", "me", "fresh"}
    # The busy consumer still owns its entry: nothing left the pending list.
    assert (await corec_redis.xpending(stream, group))["pending"] == 1
    # Again: nothing more to remove; and `keep` stays even when it is the only dead one.
    assert await PRUNERS[how](corec_redis, stream, group, IDLE_MS, keep="me") == []
    assert await PRUNERS[how](corec_redis, stream, group, IDLE_MS, keep="other") == ["me"]
    assert await names(corec_redis, stream, group) == {"busy", "fresh"}


async def test_missing_stream_or_group_removes_nothing(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    assert await prune_consumers(corec_redis, stream, group, 1, keep="me") == []
    assert await list_consumers(corec_redis, stream, group) == []
    await corec_redis.xadd(stream, {"n": 1})  # a stream without the group
    assert await prune_consumers(corec_redis, stream, group, 1, keep="me") == []
    assert await _prune_checked(corec_redis, stream, group, 1, keep="me") == []


class Client:
    """The test Redis client with one command replaced."""

    def __init__(self, redis: Any, **replaced: Any) -> None:
        self.redis = redis
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)


async def test_without_scripting_each_consumer_is_checked_again(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    """EVAL refused (ACL): XINFO, then XPENDING again right before each DELCONSUMER. A consumer
    that read an entry since XINFO is kept with it."""
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    await group_of_four(corec_redis, stream, group)

    async def refused(*args: Any) -> Any:
        raise ResponseError("NOPERM this user has no permissions to run the 'eval' command")

    async def xpending_range(*args: Any, consumername: str, **kwargs: Any) -> Any:
        if consumername == "idle":  # wakes up between XINFO and the check
            await read_one(corec_redis, stream, group, "idle", ack=False)
        return await corec_redis.xpending_range(*args, consumername=consumername, **kwargs)

    client = Client(corec_redis, eval=refused, xpending_range=xpending_range)
    assert await prune_consumers(client, stream, group, IDLE_MS, keep="fresh") == ["me"]
    listed = {c["name"]: c for c in await list_consumers(corec_redis, stream, group)}
    assert set(listed) == {"busy", "idle", "fresh"}
    assert listed["idle"]["pending"] == 1


async def test_other_script_errors_are_raised(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    await corec_redis.set(stream, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await list_consumers(corec_redis, stream, group)
    with pytest.raises(ValueError, match="idle_ms"):
        await prune_consumers(corec_redis, stream, group, -1, keep="me")


@pytest.mark.timeout(60)
async def test_a_killed_worker_is_removed_once_idle(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Any
) -> None:
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    env = subprocess_env(corec_streams, consumer="doomed-1")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corec_plugin_kit", "run", "-q", env=env, cwd=tmp_path
    )
    try:
        await corec_redis.xadd(stream, payload("echo", {"n": 1}, id="k1"))
        for _ in range(400):
            if await corec_redis.exists(corec_streams["stream_out"]):
                break
            await asyncio.sleep(0.05)
        assert await corec_redis.xlen(corec_streams["stream_out"]) == 1
    finally:
        worker.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(worker.wait(), 30) == -signal.SIGKILL
    # Killed: its consumer stays (it owns nothing: the command was acknowledged).
    (doomed,) = await list_consumers(corec_redis, stream, group)
    assert doomed["name"] == "doomed-1" and doomed["pending"] == 0
    assert await prune_consumers(corec_redis, stream, group, 60_000, keep="me") == []
    await asyncio.sleep(IDLE_MS / 1000 * 1.1)
    assert await prune_consumers(corec_redis, stream, group, IDLE_MS, keep="me") == ["doomed-1"]
    assert await list_consumers(corec_redis, stream, group) == []


async def test_manager_action_lists_and_prunes(
    echo_kernel: Any, corec_register: Any, corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    corec_register(manager, name="manager")
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    await group_of_four(corec_redis, stream, group)
    async with echo_kernel(consumer="me") as kernel:
        listed = await kernel.execute({"action": "consumers", "params": {"idle_ms": IDLE_MS}})
        assert listed["status"] == "ok", listed
        flags = {c["name"]: c["dead"] for c in listed["result"]["consumers"]}
        assert flags == {"busy": False, "idle": True, "me": False, "fresh": False}
        assert listed["result"]["removed"] == []
        default = await kernel.execute({"action": "consumers", "params": {}})
        assert default["result"]["idle_ms"] == 3_600_000
        assert not any(c["dead"] for c in default["result"]["consumers"])
        stats = await kernel.execute({"action": "stats", "params": {}})
        assert {c["name"] for c in stats["result"]["consumer_list"]} == set(flags)
        assert stats["result"]["consumers"] == 4

        pruned = await kernel.execute(
            {"action": "consumers", "params": {"prune": True, "idle_ms": IDLE_MS}}
        )
        assert pruned["result"]["removed"] == ["idle"]
        assert {c["name"] for c in pruned["result"]["consumers"]} == {"busy", "me", "fresh"}
    async with echo_kernel(dead_consumer_idle_ms=None) as kernel:
        off = await kernel.execute({"action": "consumers", "params": {"prune": True}})
        assert off["error"]["type"] == "invalid_params"
        assert "dead_consumer_idle_ms is off" in off["error"]["message"]
        listed = await kernel.execute({"action": "consumers", "params": {}})
        assert listed["result"]["idle_ms"] is None
        assert not any(c["dead"] for c in listed["result"]["consumers"])


def test_manager_cli_lists_and_prunes(corec_streams: dict[str, Any]) -> None:
    import redis as syncredis

    stream, group = corec_streams["stream_in"], corec_streams["group"]
    env = subprocess_env(corec_streams)
    env.pop("COREC_LOAD_PROCESSORS")  # the manager processor is needed too

    def kit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corec_plugin_kit", "manager", "consumers", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    client = syncredis.Redis.from_url(corec_streams["redis_url"])

    async def setup() -> None:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(corec_streams["redis_url"])
        try:
            # No `fresh` one: starting the CLI may take longer than IDLE_MS.
            await group_of_four(redis, stream, group, fresh=False)
        finally:
            await redis.aclose()

    try:
        asyncio.run(setup())
        text = kit("--idle-ms", str(IDLE_MS))
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert any(line.startswith("idle ") and line.endswith("dead") for line in lines)
        assert any(line.startswith("busy ") and "pending=1" in line for line in lines)
        # `me` is dead from the CLI's point of view: the CLI is not that consumer.
        assert f"3 consumers in {group} on {stream}, 2 dead" in text.stdout
        assert "corec-kit manager consumers --prune" in text.stdout

        pruned = kit("--prune", "--idle-ms", str(IDLE_MS), "--json")
        assert pruned.returncode == 0, pruned.stderr
        report = orjson.loads(pruned.stdout)
        assert sorted(report["removed"]) == ["idle", "me"]
        assert [c["name"] for c in report["consumers"]] == ["busy"]
        assert client.xpending(stream, group)["pending"] == 1

        env["COREC_KERNEL__DEAD_CONSUMER_IDLE_MS"] = "null"
        off = kit("--prune")
        assert off.returncode == 2 and "--idle-ms" in off.stderr
    finally:
        client.close()
