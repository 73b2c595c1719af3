"""The committer's pipeline is two batches deep: while one batch's transaction is on its way,
the next batch's records are written, and the batch after that is taken only once that
transaction is done. Entries that finish meanwhile wait and go in one larger batch.

Without that bound, a committer whose record writes are quicker than its transactions took a
batch per write: one entry each at a low rate, every transaction queued behind the last, and a
backlog (with its latency: hundreds of milliseconds at 2,000 commands/s with PostgreSQL
records) that never drained.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY
from runtime_helpers import payload, pending, results

from corec_plugin_kit import hookimpl


class Handled:
    """Counts the commands run."""

    count = 0

    @staticmethod
    @hookimpl(wrapper=True)
    def corec_command(call: Any) -> Any:
        Handled.count += 1
        return (yield)


def transactions() -> float:
    """Commits that WAITed for a replica in vain: with ``min_replicas_ack`` on a Redis that
    has none, one per transaction."""
    return REGISTRY.get_sample_value("corec_replication_shortfalls_total") or 0.0


async def test_entries_that_finish_while_a_transaction_is_on_its_way_go_in_one_batch(
    corec_register: Any,
    echo_kernel: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    tmp_path: Any,
) -> None:
    """Each transaction takes 100 ms (a ``WAIT`` for a replica this Redis does not have, a
    real slow commit); SQLite records take a millisecond. The test sends a command only once
    the last one ran, so a committer that takes whatever finished as soon as its records are
    written would send one transaction per command."""
    from corec_plugin_kit.runtime.service import run_worker

    commands = 40
    corec_register(Handled(), name="handled")
    Handled.count = 0
    kernel = echo_kernel(
        records=True,
        database_url=f"sqlite:///{tmp_path}/records.db",
        min_replicas_ack=1,
        min_replicas_timeout_ms=100,
    )
    stream = corec_streams["stream_in"]
    before = transactions()
    task = asyncio.ensure_future(run_worker(kernel))
    try:
        for i in range(commands):
            await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"c{i}"))
            for _ in range(2000):
                if Handled.count > i or task.done():
                    break
                await asyncio.sleep(0.001)
            assert Handled.count > i, "the worker did not run the command within 2 s"
        for _ in range(400):
            if await pending(corec_redis, stream, corec_streams["group"]) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        kernel.runtime.stop()
        await asyncio.wait_for(task, 30)
    assert len(await results(corec_redis, corec_streams["stream_out"])) == commands
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    sent = transactions() - before
    # Sending the 40 commands takes a few milliseconds each, against 100 ms per transaction:
    # a handful of batches; one per command without the bound.
    assert 1 <= sent <= commands // 2, f"{sent:.0f} transactions for {commands} commands"
