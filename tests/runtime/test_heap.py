"""The worker's interpreter settings: the young generation is collected less often while it
runs (``service.YOUNG_GC_THRESHOLD``), threads switch sooner (``service.SWITCH_INTERVAL_S``),
and the process gets its own settings back after."""

from __future__ import annotations

import gc
import sys
from typing import Any

from runtime_helpers import payload, results

from corec_plugin_kit import hookimpl
from corec_plugin_kit.runtime.service import SWITCH_INTERVAL_S, YOUNG_GC_THRESHOLD


class ThresholdSeer:
    """Notes the collector's thresholds and the switch interval while a command runs."""

    seen: list[tuple[int, int, int]] = []
    intervals: list[float] = []

    @staticmethod
    @hookimpl(wrapper=True)
    def corec_command(call: Any) -> Any:
        ThresholdSeer.seen.append(gc.get_threshold())
        ThresholdSeer.intervals.append(sys.getswitchinterval())
        return (yield)


async def test_the_worker_collects_less_often_and_switches_threads_sooner_while_it_runs(
    corec_register: Any,
    echo_kernel: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:
    corec_register(ThresholdSeer(), name="threshold_seer")
    ThresholdSeer.seen, ThresholdSeer.intervals = [], []
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    assert before[0] != YOUNG_GC_THRESHOLD, "the test needs another threshold to start from"
    assert interval != SWITCH_INTERVAL_S, "the test needs another interval to start from"
    await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": 1}, id="one"))
    await corec_worker(echo_kernel())
    assert (await results(corec_redis, corec_streams["stream_out"]))["one"]["status"] == "ok"
    assert ThresholdSeer.seen == [(YOUNG_GC_THRESHOLD, *before[1:])]
    assert ThresholdSeer.intervals == [SWITCH_INTERVAL_S]
    assert gc.get_threshold() == before
    assert sys.getswitchinterval() == interval
