"""``kernel.partitions = 3`` on one Redis, through the real CLI in subprocesses: ``send``
(one id, one partition), ``run`` reading every partition, results on each command's own
partition, dead letters listed and replayed per partition, ``stats`` and ``consumers`` over
every partition, a worker killed with SIGKILL and its entries reclaimed in each partition, and
``--max-commands`` counted over the partitions. (The same on a Redis Cluster, partitions on
three masters: tests/runtime/test_cluster.py.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from runtime_helpers import subprocess_env
from shared_helpers import wait_until

from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.partitions import StreamSet, partition_of, stream_sets

CLI = [sys.executable, "-m", "corec_plugin_kit"]
P = 3


@pytest.fixture
def pstreams(corec_redis_url: str) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:10]
    names = {
        "redis_url": corec_redis_url,
        "stream_in": f"{{p{tag}}}:in",
        "stream_out": f"{{p{tag}}}:out",
        "dead_letter_stream": f"{{p{tag}}}:dead",
        "group": f"g{tag}",
        "partitions": P,
    }
    yield names
    client = redis.Redis.from_url(corec_redis_url)
    try:
        keys = list(client.scan_iter(match=f"{{p{tag}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def r(corec_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(corec_redis_url)
    try:
        yield client
    finally:
        client.close()


def sets_of(streams: dict[str, Any]) -> tuple[StreamSet, ...]:
    return stream_sets(KernelConfig.model_validate(streams))


def env_of(streams: dict[str, Any], **kernel: Any) -> dict[str, str]:
    env = subprocess_env(streams, **kernel)
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,manager"
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def add(r: redis.Redis, sets: tuple[StreamSet, ...], action: str, params: Any, key: str,
        **extra: Any) -> None:  # fmt: skip
    """XADD as a producer following docs/operations.md: partition crc32(id) % P."""
    body = {"action": action, "params": params, "id": key, **extra}
    r.xadd(sets[partition_of(key, len(sets))].stream_in, {"payload": orjson.dumps(body)})


def answers(r: redis.Redis, stream: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for _eid, fields in r.xrange(stream):
        body = orjson.loads(fields[b"payload"])
        out.setdefault(body["id"], []).append(body)
    return out


def pending(r: redis.Redis, stream: str, group: str) -> int:
    """Entries pending in the group (0 while the group does not exist yet)."""
    try:
        return int(r.xpending(stream, group)["pending"])
    except redis.ResponseError:
        return 0


def test_each_command_is_answered_on_its_own_partition(
    r: redis.Redis, pstreams: dict[str, Any]
) -> None:
    sets = sets_of(pstreams)
    env = env_of(pstreams)
    # `send` picks the partition from the id.
    sent = [cli(env, "send", "echo", "-p", f"n:={i}", "--id", f"s{i}") for i in range(6)]
    assert all(done.returncode == 0 for done in sent), [d.stderr[-500:] for d in sent]
    for i, done in enumerate(sent):
        body = json.loads(done.stdout)
        assert body["stream"] == sets[partition_of(f"s{i}", P)].stream_in
    for i in range(300):
        add(r, sets, "echo", {"n": i}, f"c{i}")
    done = cli(env, "run", "--burst")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 partitions" in done.stderr  # the start-up line names them
    per_partition = []
    for s in sets:
        got = answers(r, s.stream_out)
        per_partition.append(len(got))
        # Every answer on this partition's result stream is for a command of this partition,
        # answered once.
        assert all(partition_of(key, P) == s.index for key in got)
        assert all(len(bodies) == 1 and bodies[0]["status"] == "ok" for bodies in got.values())
        assert pending(r, s.stream_in, pstreams["group"]) == 0
    assert sum(per_partition) == 306 and min(per_partition) > 50, per_partition
    # `send --wait` reads its own partition's result stream.
    worker = subprocess.Popen([*CLI, "run"], env=env, stderr=subprocess.PIPE)
    try:
        for key in ("w-a", "w-b", "w-c", "w-d"):
            waited = cli(env, "send", "echo", "-p", "n:=1", "--id", key, "--wait")
            assert waited.returncode == 0, waited.stderr[-2000:]
            assert json.loads(waited.stdout)["id"] == key
        stats = cli(env, "exec", "stats")
        assert stats.returncode == 0, stats.stderr[-2000:]
        body = json.loads(stats.stdout)["result"]
        assert [part["stream_in"] for part in body["partitions"]] == [s.stream_in for s in sets]
        assert body["pending"] == sum(part["pending"] for part in body["partitions"])
        assert set(body["lengths"]) == {
            name for s in sets for name in (s.stream_in, s.stream_out, s.dead_letter_stream)
        }
        consumers = cli(env, "manager", "consumers", "--json")
        assert consumers.returncode == 0, consumers.stderr[-2000:]
        listed = json.loads(consumers.stdout)["consumers"]
        assert {c["stream"] for c in listed} == {s.stream_in for s in sets}
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err.decode()[-2000:]


def test_dead_letters_are_listed_and_replayed_per_partition(
    r: redis.Redis, pstreams: dict[str, Any]
) -> None:
    sets = sets_of(pstreams)
    env = env_of(pstreams, max_deliveries=1)
    # Two unknown actions per partition (ids chosen so each partition gets two).
    dead_ids: list[str] = []
    i = 0
    while len(dead_ids) < 2 * P:
        key = f"d{i}"
        if sum(partition_of(k, P) == partition_of(key, P) for k in dead_ids) < 2:
            dead_ids.append(key)
            add(r, sets, "nope", {}, key)
        i += 1
    # A producer on partition 0 may not answer onto partition 1's input stream.
    hostile = next(f"h{j}" for j in range(100) if partition_of(f"h{j}", P) == 0)
    add(r, sets, "echo", {"n": 1}, hostile, reply_to=sets[1].stream_in)
    done = cli(env, "run", "--burst")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r.xlen(s.dead_letter_stream) for s in sets] == [3, 2, 2]
    refused = answers(r, sets[0].stream_out)[hostile][0]
    assert refused["error"]["type"] == "invalid_command"
    assert r.xlen(sets[1].stream_in) == 2  # nothing was written onto it

    listed = cli(env, "manager", "dlq", "list", "--limit", "4", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    page = json.loads(listed.stdout)
    assert page["total"] == 7 and len(page["entries"]) == 4
    refs = [entry["ref"] for entry in page["entries"]]
    assert [ref.split("/")[0] for ref in refs] == ["0", "0", "0", "1"]
    assert page["next"] == f"1/({page['entries'][-1]['entry_id']}"
    rest = json.loads(cli(env, "manager", "dlq", "list", "--start", page["next"], "--json").stdout)
    assert [e["ref"].split("/")[0] for e in rest["entries"]] == ["1", "2", "2"]
    assert rest["next"] is None

    # Replay one by its ref: it goes back to its own partition's input.
    target = rest["entries"][-1]
    one = cli(env, "manager", "dlq", "replay", target["ref"])
    assert one.returncode == 0, one.stderr[-2000:]
    assert r.xlen(sets[2].dead_letter_stream) == 1
    assert r.xlen(sets[2].stream_in) == 3
    # A partition that does not exist: a clear error, exit 2.
    bad = cli(env, "manager", "dlq", "replay", f"{P}/{target['entry_id']}")
    assert bad.returncode == 2 and f"kernel.partitions is {P}" in bad.stderr
    # The rest, all at once: each to its own partition.
    every = cli(env, "manager", "dlq", "replay", "--all")
    assert every.returncode == 0, every.stderr[-2000:]
    assert "replayed 6" in every.stdout
    assert [r.xlen(s.dead_letter_stream) for s in sets] == [0, 0, 0]
    again = cli(env, "run", "--burst")  # still unknown: dead-lettered again, per partition
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.xlen(s.dead_letter_stream) for s in sets] == [3, 2, 2]


def test_a_killed_workers_entries_are_reclaimed_in_every_partition(
    r: redis.Redis, pstreams: dict[str, Any]
) -> None:
    sets = sets_of(pstreams)
    env = env_of(pstreams, claim_idle_ms=1000)
    for i in range(30):
        add(r, sets, "sleep", {"seconds": 2.0, "n": i}, f"s{i}")
    doomed = subprocess.Popen(
        [*CLI, "run", "--consumer", "doomed"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: sum(pending(r, s.stream_in, pstreams["group"]) for s in sets) == 30,
            what="the doomed worker to take all thirty",
        )
    finally:
        doomed.kill()
        doomed.wait()
    owned = [pending(r, s.stream_in, pstreams["group"]) for s in sets]
    assert all(count > 0 for count in owned), owned  # it held entries of every partition

    def reclaimable() -> bool:  # idle past claim_idle_ms: what XAUTOCLAIM takes
        rows = [
            row
            for s in sets
            for row in r.xpending_range(s.stream_in, pstreams["group"], "-", "+", 50)
        ]
        return len(rows) == 30 and all(row["time_since_delivered"] >= 1000 for row in rows)

    wait_until(reclaimable, what="the dead worker's entries to be idle past claim_idle_ms")
    done = cli(env, "run", "--burst", "--consumer", "heir", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    got = {k: v for s in sets for k, v in answers(r, s.stream_out).items()}
    assert len(got) == 30
    assert all(len(v) == 1 and v[0]["status"] == "ok" and v[0]["attempt"] == 2
               for v in got.values())  # fmt: skip
    assert all(pending(r, s.stream_in, pstreams["group"]) == 0 for s in sets)


def test_max_commands_counts_over_the_partitions(r: redis.Redis, pstreams: dict[str, Any]) -> None:
    sets = sets_of(pstreams)
    env = env_of(pstreams)
    for i in range(90):
        add(r, sets, "sleep", {"seconds": 0.01, "n": i}, f"m{i}")
    done = cli(env, "run", "--max-commands", "20", "--concurrency", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    answered = sum(len(answers(r, s.stream_out)) for s in sets)
    # The process stops once 20 are acknowledged over all partitions; each partition's worker
    # then finishes what it holds: at most one command in flight (concurrency 1) and one
    # finished, being committed. Far fewer than the 90 queued.
    assert 20 <= answered <= 20 + 2 * P, answered
