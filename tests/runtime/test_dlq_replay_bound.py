"""``dlq replay --all`` replays the dead letters present when it starts, each once, and ends,
even while a worker dead-letters again at once everything it puts back."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import corec_manager.processor as manager
import orjson
import pytest
from runtime_helpers import payload, subprocess_env

N = 650  # more than three pages of 200


async def entries_added(redis: Any, stream: str) -> int:
    """Every XADD the stream ever took (trimming and XDEL do not lower it)."""
    return int((await redis.xinfo_stream(stream))["entries-added"])


async def wait_length(redis: Any, stream: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (length := await redis.xlen(stream)) != n:
        assert time.monotonic() < deadline, f"{stream}: {length} entries, not {n}, after {timeout}s"
        await asyncio.sleep(0.05)


def id_key(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq)


async def fill_dead(
    redis: Any, streams: dict[str, Any], n: int, action: str = "echo", params: Any = None
) -> None:
    """``n`` real dead letters, written by the running worker: invalid params are dead-lettered
    at once, and so again each time they are replayed."""
    params = params if params is not None else {"n": "not a number"}
    stream, dead = streams["stream_in"], streams["dead_letter_stream"]
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, payload(action, params, id=f"bad{i}"))
    await pipe.execute()
    await wait_length(redis, dead, n)


@pytest.mark.timeout(120)
async def test_cli_replay_all_ends_while_a_worker_dead_letters_again(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Any
) -> None:
    stream, dead = corec_streams["stream_in"], corec_streams["dead_letter_stream"]
    worker_env = subprocess_env(corec_streams)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corec_plugin_kit", "run", "-q", env=worker_env, cwd=tmp_path
    )
    try:
        await fill_dead(corec_redis, corec_streams, N)
        bound = (await corec_redis.xrevrange(dead, count=1))[0][0]
        assert await entries_added(corec_redis, stream) == N

        cli_env = dict(worker_env)
        cli_env.pop("COREC_LOAD_PROCESSORS")  # the manager processor is needed too
        replay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corec_plugin_kit", "manager", "dlq", "replay", "--all",
            env=cli_env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(replay.communicate(), 60)
        except (asyncio.TimeoutError, TimeoutError):
            replay.kill()
            await replay.wait()
            raise AssertionError("`dlq replay --all` did not end within 60 s") from None
        assert replay.returncode == 0, err.decode()
        assert f"replayed {N} onto {stream}" in out.decode()
        assert b"replaying" in err  # the progress bar

        # Exactly N went back on the input stream, and the worker failed each once more.
        assert await entries_added(corec_redis, stream) == 2 * N
        await wait_length(corec_redis, dead, N)  # the worker failed each once more
        again = await corec_redis.xrange(dead)
        assert all(id_key(entry_id) > id_key(bound) for entry_id, _ in again)
        keys = sorted(orjson.loads(fields[b"payload"])["id"] for _, fields in again)
        assert keys == sorted(f"bad{i}" for i in range(N))
        assert await entries_added(corec_redis, dead) == 2 * N
    finally:
        worker.terminate()
        assert await asyncio.wait_for(worker.wait(), 30) == 0


@pytest.mark.timeout(120)
async def test_replay_action_replays_what_was_there_while_a_worker_runs(
    echo_kernel: Any,
    corec_register: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
) -> None:
    from corec_plugin_kit.runtime.service import run_worker

    corec_register(manager, name="manager")
    stream, dead = corec_streams["stream_in"], corec_streams["dead_letter_stream"]
    worker_kernel = echo_kernel()
    task = asyncio.ensure_future(run_worker(worker_kernel))
    try:
        # Not `echo`: the in-process worker counts in the process-wide metrics, and
        # test_operations expects exactly one `echo` there.
        await fill_dead(corec_redis, corec_streams, N, "sleep", {"seconds": "never"})
        bound = (await corec_redis.xrevrange(dead, count=1))[0][0].decode()
        async with echo_kernel() as kernel:
            answer = await kernel.execute({"action": "dlq_replay", "params": {"all": True}})
        assert answer["status"] == "ok", answer
        result = answer["result"]
        assert result["until"] == bound
        assert len(result["replayed"]) == N
        assert len({r["dead_entry_id"] for r in result["replayed"]}) == N
        assert all(id_key(r["dead_entry_id"]) <= id_key(bound) for r in result["replayed"])
        assert await entries_added(corec_redis, stream) == 2 * N
        await wait_length(corec_redis, dead, N)  # the worker failed each once more
    finally:
        worker_kernel.runtime.stop()
        await asyncio.wait_for(task, 30)


class AddsDeadLetters:
    """A Redis client that dead-letters one more entry before each XRANGE of the dead letters:
    a worker as fast as the replay. Without a bound the replay would never end."""

    def __init__(self, redis: Any, dead: str) -> None:
        self.redis, self.dead, self.added = redis, dead, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)

    async def xrange(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == self.dead:
            self.added += 1
            await self.redis.xadd(self.dead, payload("echo", {"n": "x"}, id=f"late{self.added}"))
        return await self.redis.xrange(name, *args, **kwargs)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("keep", [False, True])
async def test_replay_never_reads_entries_added_after_it_started(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], keep: bool
) -> None:
    from corec_plugin_kit.runtime.ops import dlq_bound, dlq_replay

    stream, dead = corec_streams["stream_in"], corec_streams["dead_letter_stream"]
    pipe = corec_redis.pipeline(transaction=False)
    for i in range(450):
        pipe.xadd(dead, {**payload("echo", {"n": "x"}, id=f"d{i}"), b"error": b"{}"})
    await pipe.execute()
    before = [e.decode() for e, _ in await corec_redis.xrange(dead)]
    kernel = echo_kernel()
    snapshot = await dlq_bound(kernel)
    assert snapshot["until"] == before[-1]
    assert snapshot["total"] == 450
    proxy = AddsDeadLetters(kernel.redis, dead)
    kernel.redis = proxy
    steps: list[int] = []
    try:
        outcome = await dlq_replay(kernel, all_entries=True, keep=keep, progress=steps.append)
    finally:
        kernel.redis = proxy.redis
        await kernel.redis_handle.close()
    assert outcome["until"] == snapshot["until"]
    assert [r["dead_entry_id"] for r in outcome["replayed"]] == before  # each once, in order
    assert sum(steps) == 450
    assert proxy.added == 3  # three pages read, none past the bound
    assert await corec_redis.xlen(stream) == 450
    left = await corec_redis.xrange(dead)
    late = [f[b"payload"] for _, f in left if b"late" in f[b"payload"]]
    assert len(late) == 3
    assert len(left) == (453 if keep else 3)


async def test_replay_all_of_an_empty_stream(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    from corec_plugin_kit.runtime.ops import dlq_bound, dlq_replay

    kernel = echo_kernel()
    try:
        assert await dlq_bound(kernel) == {
            "stream": corec_streams["dead_letter_stream"],
            "until": None,
            "total": 0,
        }
        outcome = await dlq_replay(kernel, all_entries=True)
    finally:
        await kernel.redis_handle.close()
    assert outcome["replayed"] == [] and outcome["until"] is None
    assert await corec_redis.exists(corec_streams["stream_in"]) == 0
