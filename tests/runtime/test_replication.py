"""``kernel.min_replicas_ack``: each commit WAITs for replicas; a shortfall is a warning.

Against the test Redis, which has no replica: every WAIT times out with 0 replicas, so the
worker must warn, count it, and go on (results written, entries acknowledged), never hang.
(tests/runtime/test_cluster.py runs the same setting where replicas exist, through a failover.)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from runtime_helpers import payload, pending, results, subprocess_env


async def test_a_commit_waits_for_replicas_and_warns_when_they_fall_short(
    corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    for i in range(50):
        await corec_redis.xadd(corec_streams["stream_in"], payload("echo", {"n": i}))
    env = subprocess_env(corec_streams, min_replicas_ack=1, min_replicas_timeout_ms=50)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corec_plugin_kit", "run", "--burst",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "reached 0 of 1 replicas within 50 ms (min_replicas_ack)" in err.decode()
    assert len(await results(corec_redis, corec_streams["stream_out"])) == 50
    assert await pending(corec_redis, corec_streams["stream_in"], corec_streams["group"]) == 0
