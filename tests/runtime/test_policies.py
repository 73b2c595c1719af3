"""Per-action policies on a real worker (real Redis): retries with backoff, a concurrency cap,
a rate limit held across two worker processes; where they come from (``register`` and
``kernel.action_policies``) and what ``describe`` shows."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from runtime_helpers import payload, pending, results, subprocess_env

from corec_plugin_kit import DependencyUnavailable, HandlerError, RegistrationError, hookimpl
from corec_plugin_kit.policies import ActionPolicy, RetryPolicy, effective
from corec_plugin_kit.routing import Register

CLI = [sys.executable, "-m", "corec_plugin_kit"]


class Flaky(BaseModel):
    fail_times: int = 0
    final: bool = False  # fail with a HandlerError (final) instead of a transient error


class Calls:
    """A processor whose ``flaky`` action fails its first ``fail_times`` tries per command."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.running = 0
        self.most = 0

    @hookimpl
    def corec_register_actions(self, register: Any) -> None:
        register("flaky", self.flaky, Flaky, retry={"attempts": 3, "base_s": 0.2, "max_s": 1})
        register("capped", self.capped, max_concurrency=2)

    async def flaky(self, params: Flaky, ctx: Any) -> dict[str, Any]:
        seen = self.times.setdefault(ctx.key, [])
        seen.append(time.monotonic())
        assert ctx.retry == len(seen) - 1
        if len(seen) <= params.fail_times:
            if params.final:
                raise HandlerError("no, and it will stay no")
            raise DependencyUnavailable(f"down (try {len(seen)})")
        return {"tries": len(seen)}

    async def capped(self, params: Any, ctx: Any) -> str:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.05)
        self.running -= 1
        return "done"


def calls_processor(corec_register: Any) -> Calls:
    calls = Calls()
    corec_register(calls, name="calls")
    return calls


async def test_a_transient_failure_is_retried_with_backoff(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    calls = calls_processor(corec_register)
    stream = corec_streams["stream_in"]
    await corec_redis.xadd(stream, payload("flaky", {"fail_times": 2}, id="third"))
    await corec_redis.xadd(stream, payload("flaky", {"fail_times": 5}, id="never"))
    await corec_redis.xadd(stream, payload("flaky", {"fail_times": 1, "final": True}, id="final"))
    stats = await corec_worker(echo_kernel(max_deliveries=1))
    got = await results(corec_redis, corec_streams["stream_out"])
    # Succeeds on its third try, in its first delivery, after pauses of 0.2 s then 0.4 s.
    assert got["third"]["status"] == "ok" and got["third"]["result"] == {"tries": 3}
    assert got["third"]["attempt"] == 1
    first, second, third = calls.times["third"]
    assert 0.2 <= second - first < 0.2 + 0.15
    assert 0.4 <= third - second < 0.4 + 0.15
    # Three tries, all failed: the delivery failed (and, with max_deliveries=1, dead-lettered).
    assert len(calls.times["never"]) == 3
    assert got["never"]["error"]["type"] == "dead_letter"
    assert "down (try 3)" in got["never"]["error"]["message"]
    # A final error is never retried.
    assert len(calls.times["final"]) == 1
    assert got["final"]["error"]["type"] == "handler_error"
    assert stats.retried == 0  # nothing waited for a reclaim
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0


async def test_the_operator_overrides_the_registered_policy(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    calls = calls_processor(corec_register)
    kernel = echo_kernel(max_deliveries=1, action_policies={"flaky": {"retry": {"attempts": 1}}})
    assert kernel.routing.route("flaky").policy is None  # one try: nothing left to do
    await corec_redis.xadd(corec_streams["stream_in"], payload("flaky", {"fail_times": 1}, id="o"))
    await corec_worker(kernel)
    assert len(calls.times["o"]) == 1
    # Key by key: a rate limit set by the operator keeps the processor's retry.
    kernel = echo_kernel(action_policies={"flaky": {"rate_limit": 5}})
    described = kernel.routing.route("flaky").describe()["policy"]
    assert described == {
        "retry": {"attempts": 3, "base_s": 0.2, "max_s": 1.0},
        "rate_limit": 5.0, "rate_burst": 1, "max_concurrency": None,
    }  # fmt: skip
    assert kernel.routing.route("echo").describe()["policy"] is None


async def test_max_concurrency_caps_an_action_in_a_worker(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:  # fmt: skip
    calls = calls_processor(corec_register)
    for i in range(12):
        await corec_redis.xadd(corec_streams["stream_in"], payload("capped", {}, id=f"c{i}"))
    await corec_worker(echo_kernel(concurrency=20))
    got = await results(corec_redis, corec_streams["stream_out"])
    assert len(got) == 12 and all(body["status"] == "ok" for body in got.values())
    assert calls.most == 2


def test_a_rate_limit_holds_across_two_workers(corec_streams: dict[str, Any]) -> None:
    """Two worker processes, one limit of 40 echo commands a second: the results' own ids
    (the Redis server's clock) space them at the limit, within 10 %."""
    import redis

    rate, n = 40, 160
    env = subprocess_env(
        corec_streams, concurrency=20, action_policies={"echo": {"rate_limit": rate}}
    )
    processed = []
    r = redis.Redis.from_url(corec_streams["redis_url"])
    try:
        for i in range(n):
            r.xadd(corec_streams["stream_in"], {"payload": orjson.dumps(
                {"action": "echo", "params": {"n": i}, "id": f"r{i}"})})  # fmt: skip
        workers = [
            subprocess.Popen([*CLI, "run", "--burst", "--consumer", f"w{k}"], env=env,
                             stderr=subprocess.PIPE, text=True)
            for k in range(2)
        ]  # fmt: skip
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err[-2000:]
            processed.append(int(re.search(r"processed=(\d+)", err).group(1)))  # type: ignore[union-attr]
        entries = r.xrange(corec_streams["stream_out"])
        assert all(orjson.loads(fields[b"payload"])["status"] == "ok" for _, fields in entries)
        stamps = sorted(int(eid.split(b"-")[0]) for eid, _ in entries)
    finally:
        r.close()
    assert len(stamps) == n
    measured = (n - 1) / ((stamps[-1] - stamps[0]) / 1000)
    print(f"rate limit {rate}/s over two workers: measured {measured:.1f}/s")
    assert abs(measured - rate) <= 0.1 * rate, measured
    # Both workers took part: each holds at most 20 commands at a time.
    assert all(count > 0 for count in processed), processed


def test_policy_values_and_merging() -> None:
    retry = RetryPolicy(attempts=5, base_s=0.1, max_s=0.5)
    assert [retry.pause(k) for k in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    registered = ActionPolicy(retry=retry, max_concurrency=4)
    configured = ActionPolicy(max_concurrency=8)
    merged = effective(registered, configured)
    assert merged is not None and merged.retry == retry and merged.max_concurrency == 8
    assert effective(None, None) is None
    assert effective(ActionPolicy(), None) is None  # asks for nothing: the fast path


def test_an_invalid_registered_policy_is_a_registration_error() -> None:
    register = Register("p")

    async def handler(params: Any, ctx: Any) -> None:
        return None

    with pytest.raises(RegistrationError, match=r"invalid policy: retry.attempts"):
        register("a", handler, retry={"attempts": 0})
    with pytest.raises(RegistrationError, match="rate_limit"):
        register("b", handler, rate_limit=-1)


def test_a_policy_for_an_unclaimed_action_is_a_warning(kit: Any, tmp_path: Any) -> None:
    (tmp_path / "corec.json").write_text(
        json.dumps({"kernel": {"action_policies": {"no_such": {"max_concurrency": 1}}}})
    )
    env = {"COREC_REDIS_URL": "redis://127.0.0.1:6379/0", "COREC_KERNEL__RECORDS": "false"}
    run = kit("check", "--json", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.json()["config"]["warnings"] == [
        "kernel.action_policies.no_such: no loaded processor claims this action, so the policy "
        "applies to nothing (`corec-kit actions` lists the actions)"
    ]
    assert kit("--strict", "check", env=env).returncode == 3
