"""The stream loop against a real Redis: round trips, reply_to, pending drain, retries, DLQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from redis.exceptions import ResponseError
from runtime_helpers import flat, payload, pending, results
from shared_helpers import wait_until_async


async def test_round_trip_thousands_in_both_wire_forms(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    stream = corec_streams["stream_in"]
    pipe = corec_redis.pipeline(transaction=False)
    for i in range(2500):
        pipe.xadd(stream, payload("echo", {"n": i, "text": "p"}, id=f"p{i}"))
        pipe.xadd(stream, flat("echo", {"n": i, "text": "f"}, id=f"f{i}"))
    await pipe.execute()

    stats = await corec_worker(echo_kernel())

    got = await results(corec_redis, corec_streams["stream_out"])
    assert len(got) == 5000
    for i in range(2500):
        assert got[f"p{i}"]["result"] == {"n": i, "text": "p"}
        assert got[f"f{i}"]["result"] == {"n": i, "text": "f"}
        assert got[f"p{i}"]["status"] == "ok" and got[f"p{i}"]["processor"] == "echo_proc"
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    assert stats.ok == 5000 and stats.errors == 0


async def test_entry_id_is_the_key_without_id_and_reply_to_is_honoured(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    stream = corec_streams["stream_in"]
    reply = corec_streams["stream_in"].replace("commands", "mine")
    no_id = (await corec_redis.xadd(stream, payload("echo", {"n": 1}))).decode()
    await corec_redis.xadd(stream, payload("echo", {"n": 2}, id="x2", reply_to=reply))
    await corec_redis.xadd(stream, flat("echo", {"n": 3}, id="x3", reply_to=reply))

    await corec_worker(echo_kernel())

    default = await results(corec_redis, corec_streams["stream_out"])
    assert list(default) == [no_id]
    assert default[no_id]["entry_id"] == no_id
    assert set(await results(corec_redis, reply)) == {"x2", "x3"}
    await corec_redis.delete(reply)


async def test_commands_queued_before_the_group_existed_are_processed(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    stream = corec_streams["stream_in"]
    assert not await corec_redis.exists(stream)
    for i in range(10):
        await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"e{i}"))
    await corec_worker(echo_kernel())
    assert len(await results(corec_redis, corec_streams["stream_out"])) == 10


async def test_a_consumer_first_drains_its_own_pending_entries(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    await corec_redis.xgroup_create(stream, group, id="0", mkstream=True)
    for i in range(20):
        await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"o{i}"))
    # A previous life of consumer "w1" read these and crashed before acknowledging.
    await corec_redis.xreadgroup(group, "w1", {stream: ">"}, count=20)
    assert await pending(corec_redis, stream, group) == 20

    # claim_idle_ms is long: nothing is reclaimable; only the own-pending drain can get them.
    await corec_worker(echo_kernel(claim_idle_ms=600_000), consumer="w1")

    got = await results(corec_redis, corec_streams["stream_out"])
    assert set(got) == {f"o{i}" for i in range(20)}
    assert all(r["attempt"] == 2 for r in got.values())  # delivered twice
    assert await pending(corec_redis, stream, group) == 0


async def run_until(kernel: Any, corec_worker: Any, done: Any, timeout: float = 20) -> Any:
    """Run a non-burst worker until ``await done()`` is true, then stop it."""
    from corec_plugin_kit.runtime.service import run_worker

    task = asyncio.ensure_future(run_worker(kernel))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await done():
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)
    finally:
        if kernel.runtime is not None:
            kernel.runtime.stop()
        stats = await asyncio.wait_for(task, 30)
    return stats


async def test_transient_failures_are_redelivered_then_dead_lettered(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    stream, dead = corec_streams["stream_in"], corec_streams["dead_letter_stream"]
    await corec_redis.xadd(stream, payload("boom", {}, id="b1"))
    await corec_redis.xadd(stream, payload("echo", {"n": 1}, id="ok1"))
    kernel = echo_kernel(claim_idle_ms=100, max_deliveries=3)

    async def dead_lettered() -> bool:
        return bool(await corec_redis.xlen(dead))

    await run_until(kernel, corec_worker, dead_lettered)

    got = await results(corec_redis, corec_streams["stream_out"])
    assert got["ok1"]["status"] == "ok"
    assert got["b1"]["error"]["type"] == "dead_letter"
    assert got["b1"]["attempt"] == 3
    assert got["b1"]["error"]["details"]["last_error"]["type"] == "handler_error"
    [(_eid, fields)] = await corec_redis.xrange(dead)
    assert fields[b"deliveries"] == b"3"
    assert orjson.loads(fields[b"payload"])["id"] == "b1"  # the original fields are kept
    assert orjson.loads(fields[b"error"])["type"] == "dead_letter"
    assert fields[b"last_consumer"] and fields[b"failed_at"]
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0


async def test_handler_timeout_and_final_handler_errors(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    stream = corec_streams["stream_in"]
    await corec_redis.xadd(stream, payload("sleep", {"seconds": 5}, id="slow"))
    await corec_redis.xadd(stream, payload("fail", {}, id="refused"))
    await corec_redis.xadd(stream, payload("blocking_echo", {"n": 7}, id="thread"))

    stats = await corec_worker(echo_kernel(handler_timeout_s=0.2, max_deliveries=1))

    got = await results(corec_redis, corec_streams["stream_out"])
    # A timeout is transient; with max_deliveries=1 it is dead-lettered at once.
    assert got["slow"]["error"]["type"] == "dead_letter"
    assert got["slow"]["error"]["details"]["last_error"]["type"] == "timeout"
    # A handler's own HandlerError is a final answer: no retry, no dead letter.
    assert got["refused"]["error"]["type"] == "handler_error"
    assert got["thread"]["result"] == {"n": 7}
    assert stats.dead_lettered == 1
    assert await corec_redis.xlen(corec_streams["dead_letter_stream"]) == 1


async def test_input_trim_never_drops_pending_or_unread_entries(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    from corec_plugin_kit.runtime.worker import Worker

    stream, group = corec_streams["stream_in"], corec_streams["group"]
    kernel = echo_kernel()
    await corec_redis.xgroup_create(stream, group, id="0", mkstream=True)
    for i in range(3000):
        await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"t{i}"))
    # Another group that has read only the first 100 must keep the rest.
    await corec_redis.xgroup_create(stream, "slow-group", id="0")
    await corec_redis.xreadgroup("slow-group", "c", {stream: ">"}, count=100)
    await corec_worker(kernel)
    worker = Worker(kernel, corec_redis)
    await worker.trim_input()
    rest = await corec_redis.xrange(stream, count=1)
    first_left = int(orjson.loads(rest[0][1][b"payload"])["id"][1:])
    assert first_left <= 0 + 100  # everything slow-group still needs (pending 0..99) is there
    assert await corec_redis.xlen(stream) >= 3000 - 100

    await corec_redis.xgroup_destroy(stream, "slow-group")
    await worker.trim_input()
    # With only our group, which has read and acked all, the stream shrinks (~ trims by node).
    assert await corec_redis.xlen(stream) < 3000


@pytest.mark.parametrize("batch_size", [1, 7])
async def test_small_batches_and_concurrency(
    echo_kernel: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    corec_worker: Any,
    batch_size: int,
) -> None:
    stream = corec_streams["stream_in"]
    for i in range(50):
        await corec_redis.xadd(stream, payload("sleep", {"seconds": 0.001, "n": i}, id=f"s{i}"))
    await corec_worker(echo_kernel(batch_size=batch_size, concurrency=3))
    got = await results(corec_redis, corec_streams["stream_out"])
    assert {r["result"]["n"] for r in got.values()} == set(range(50))


async def test_long_handlers_keep_their_claim_while_another_worker_reclaims(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    from corec_plugin_kit.runtime.service import run_worker

    stream, group = corec_streams["stream_in"], corec_streams["group"]
    claim_idle_ms = 300
    claim_idle = claim_idle_ms / 1000
    # Handlers far longer than claim_idle_ms: unrenewed, their entries would be reclaimable
    # several times over before they finish.
    handler_s = 8 * claim_idle
    for i in range(5):
        await corec_redis.xadd(
            stream, payload("sleep", {"seconds": handler_s, "n": i}, id=f"long{i}")
        )
    first = echo_kernel(claim_idle_ms=claim_idle_ms)
    second = echo_kernel(claim_idle_ms=claim_idle_ms)
    a = asyncio.ensure_future(run_worker(first, consumer="A"))

    async def pending_owners() -> list[tuple[bytes, int]]:
        try:
            rows = await corec_redis.xpending_range(stream, group, "-", "+", 10)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return []  # A has not created the group yet
        return [(r["consumer"], r["times_delivered"]) for r in rows]

    async def a_took_all() -> bool:
        return await pending_owners() == [(b"A", 1)] * 5

    b: asyncio.Future[Any] | None = None
    try:
        await wait_until_async(a_took_all, timeout=30, what="A to take all five")
        # Unrenewed, the entries would be reclaimable from here on (they were delivered before).
        reclaimable_at = time.monotonic() + claim_idle
        b = asyncio.ensure_future(run_worker(second, consumer="B"))
        await wait_until_async(lambda: second.runtime is not None, timeout=30, what="B to start")
        worker_b = second.runtime
        # A call-through spy on B's reclaim passes (XAUTOCLAIM min-idle claim_idle_ms, every
        # claim_idle_ms / 2000 s): it changes nothing B does, it counts the passes that ran when
        # A's entries would have been reclaimable had A not renewed its claims.
        late_passes: list[float] = []
        reclaim = worker_b.reclaim

        async def counted_reclaim() -> int:
            started = time.monotonic()
            taken = await reclaim()
            if started >= reclaimable_at:
                late_passes.append(started)
            return int(taken)

        worker_b.reclaim = counted_reclaim
        await wait_until_async(
            lambda: len(late_passes) >= 2,
            # past the handlers' end their entries leave the pending list: nothing to check
            timeout=handler_s,
            what="two reclaim passes of B after A's entries would have been idle claim_idle_ms",
        )
        # still A's, never claimed again (a renewal is XCLAIM JUSTID: no delivery counted)
        assert await pending_owners() == [(b"A", 1)] * 5

        async def all_answered() -> bool:
            return len(await results(corec_redis, corec_streams["stream_out"])) == 5

        await wait_until_async(all_answered, timeout=30, what="the five answers")
    finally:
        workers = [(first, a)] + ([(second, b)] if b is not None else [])
        for kernel, task in workers:
            if kernel.runtime is not None:
                kernel.runtime.stop()
            elif not task.done():
                task.cancel()  # not up yet: the test has failed already
        ended = await asyncio.gather(*(task for _, task in workers), return_exceptions=True)
    got = await results(corec_redis, corec_streams["stream_out"])  # asserts no duplicate
    assert len(got) == 5
    assert all(r["attempt"] == 1 for r in got.values())  # never redelivered
    stats_a, stats_b = ended
    assert stats_a.ok == 5 and stats_b.reclaimed == 0, ended


async def test_the_transaction_read_timeout_is_a_transient_error_on_every_python() -> None:
    """The commit's read limit raises the builtin TimeoutError (an OSError, so a transient Redis
    failure the worker retries) on 3.10 as on 3.11+, instead of waiting for ever."""
    from corec_plugin_kit.runtime.compat import timeout_ctx as _timeout_ctx
    from corec_plugin_kit.runtime.transport import TRANSIENT_REDIS

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TRANSIENT_REDIS) as caught:
        async with _timeout_ctx(0.05):
            await asyncio.sleep(5)
    assert isinstance(caught.value, TimeoutError)
    assert loop.time() - started < 2
