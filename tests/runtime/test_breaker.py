"""Circuit breaker: fake-clock transitions; no delivery burned while a dependency is down."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import payload, results
from shared_helpers import wait_until_async

from corec_plugin_kit import hookimpl
from corec_plugin_kit.runtime.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_max_failures_and_probes_once_when_half_open() -> None:
    clock = Clock()
    changes: list[str] = []
    cb = CircuitBreaker(3, 10.0, clock=clock, on_change=changes.append)
    assert cb.allow() and cb.state == CLOSED
    cb.failure()
    cb.failure()
    assert cb.current() == CLOSED
    cb.success()  # a success resets the count
    cb.failure()
    cb.failure()
    assert cb.current() == CLOSED
    opened_at = clock.now
    cb.failure()
    assert cb.current() == OPEN and not cb.allow()
    # It lets a probe in reset_timeout after it opened: 10 s from now, not before.
    retry_in = cb.reset_timeout - (clock.now - opened_at)
    assert retry_in == pytest.approx(10.0)
    clock.now += retry_in - 0.1
    assert not cb.allow()
    clock.now += 0.2
    assert cb.current() == HALF_OPEN
    assert cb.allow()  # the probe
    assert not cb.allow()  # one probe at a time
    cb.failure()  # probe failed: open again for a full reset_timeout
    assert cb.current() == OPEN and not cb.allow()
    clock.now += 10
    assert cb.allow()
    cb.release()  # the probe ended without a verdict: another may go
    assert cb.allow()
    cb.success()
    assert cb.current() == CLOSED and cb.allow() and cb.failures == 0
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


async def test_dependency_down_parks_commands_without_burning_deliveries(
    echo_kernel: Any,
    corec_register: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from corec_plugin_kit.runtime.service import run_worker

    class Other:
        """A second processor: its commands must flow while echo_proc's breaker is open."""

        @staticmethod
        @hookimpl
        def corec_register_actions(register: Any) -> None:
            async def other(params: Any, ctx: Any) -> str:
                return "fine"

            register("other", other)

    corec_register(Other, name="other_proc")
    down = tmp_path / "down"
    down.touch()
    monkeypatch.setenv("ECHO_DOWN_FILE", str(down))
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    for i in range(40):
        await corec_redis.xadd(stream, payload("needs_dependency", {"n": i}, id=f"d{i}"))
    await corec_redis.xadd(stream, payload("other", {}, id="other"))
    max_failures, reset_timeout, claim_idle_ms = 3, 0.3, 200
    kernel = echo_kernel(
        circuit_breaker={"max_failures": max_failures, "reset_timeout": reset_timeout},
        claim_idle_ms=claim_idle_ms,
        max_deliveries=2,
    )
    # The window to watch: a parked entry whose claim was not renewed would be idle past
    # claim_idle_ms and taken again by the maintainer's next reclaim pass (every claim_idle_ms /
    # 2000 s), burning a delivery. Watch for two such chances. Each failed half-open probe
    # re-opens the breaker at least reset_timeout after the previous opening, so the breaker's
    # n-th opening comes at least (n - 1) * reset_timeout after the first: wait for the opening
    # that proves the window has passed, not for a fixed time.
    reclaim_every = max(0.05, claim_idle_ms / 2000)
    window = 2 * (claim_idle_ms / 1000 + reclaim_every)
    openings_needed = 1 + math.ceil(window / reset_timeout)

    def openings() -> int:
        return sum(
            1
            for r in caplog.records
            if r.getMessage() == f"circuit breaker of 'echo_proc' is now {OPEN}"
        )

    async def parked_long_enough() -> bool:
        other_done = "other" in await results(corec_redis, corec_streams["stream_out"])
        return other_done and openings() >= openings_needed

    caplog.set_level(logging.WARNING, "corec_plugin_kit.worker")
    task = asyncio.ensure_future(run_worker(kernel))
    try:
        await wait_until_async(
            parked_long_enough,
            timeout=30,
            what=f"the other command's answer and {openings_needed} openings of the breaker",
        )
        worker = kernel.runtime
        assert worker is not None and not task.done()
        assert worker.breakers["echo_proc"].current() in (OPEN, HALF_OPEN)
        # Nothing dead-lettered; commands wait in the worker, their delivery counts untouched.
        assert await corec_redis.xlen(corec_streams["dead_letter_stream"]) == 0
        rows = await corec_redis.xpending_range(stream, group, "-", "+", 100)
        assert len(rows) == 40
        # Only the commands that failed before the breaker opened were redelivered (once);
        # the rest were never tried again while it was open.
        redelivered = [row for row in rows if row["times_delivered"] > 1]
        assert len(redelivered) < max_failures
        assert max(row["times_delivered"] for row in rows) <= 2
        answered = await results(corec_redis, corec_streams["stream_out"])
        assert set(answered) == {"other"}  # the other processor's work was not held up

        down.unlink()  # the dependency comes back

        async def all_answered() -> bool:
            return len(await results(corec_redis, corec_streams["stream_out"])) == 41

        await wait_until_async(all_answered, timeout=30, what="all 41 answers")
    finally:
        if kernel.runtime is not None:
            kernel.runtime.stop()
        await asyncio.wait_for(task, 30)
    answered = await results(corec_redis, corec_streams["stream_out"])
    assert len(answered) == 41
    assert all(a["status"] == "ok" for a in answered.values())
    assert await corec_redis.xlen(corec_streams["dead_letter_stream"]) == 0
