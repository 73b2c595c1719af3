"""The kit on a real Redis Cluster (3 masters, 3 replicas, started by the fixture).

Through the real CLI in subprocesses: ``run``, ``send --wait``, a worker killed with SIGKILL and
its entries reclaimed, dead letters and their replay, ``stats``; then a failover: the master
that holds the streams is killed in the middle of a run, its replica is promoted, and the worker
follows by itself. The streams share a hash tag, so a batch's results, dead letters and XACK
stay one transaction on one master.
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
from cluster_helpers import LocalCluster, cluster_tools
from runtime_helpers import subprocess_env
from shared_helpers import wait_until

from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.partitions import partition_of, stream_sets
from corec_plugin_kit.runtime.testing import require_service

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLI = [sys.executable, "-m", "corec_plugin_kit"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    require_service(
        cluster_tools(), "redis-server and redis-cli (for a local cluster)", "are not installed"
    )
    local = LocalCluster().start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def streams(cluster: LocalCluster) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {
        "redis_url": cluster.url,
        "stream_in": f"{{{tag}}}:in",
        "stream_out": f"{{{tag}}}:out",
        "dead_letter_stream": f"{{{tag}}}:dead",
        "group": f"g-{tag}",
    }


def client(cluster: LocalCluster) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(cluster.url)


def add(
    rc: redis.RedisCluster, stream: str, action: str, params: dict[str, Any], **extra: Any
) -> None:
    body = {"action": action, "params": params, **extra}
    rc.xadd(stream, {"payload": orjson.dumps(body)})


def answers(rc: redis.RedisCluster, stream: str) -> dict[str, dict[str, Any]]:
    """Results by command id, with how many times each was answered."""
    out: dict[str, dict[str, Any]] = {}
    for _eid, fields in rc.xrange(stream):
        body = orjson.loads(fields[b"payload"])
        slot = out.setdefault(body["id"], {"body": body, "times": 0})
        slot["times"] += 1
    return out


def pending(rc: redis.RedisCluster, streams: dict[str, Any]) -> int:
    """Entries pending in the group (-1 while the group does not exist yet)."""
    try:
        return int(rc.xpending(streams["stream_in"], streams["group"])["pending"])
    except redis.ResponseError:
        return -1


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_run_send_dead_letters_replay_and_stats(
    cluster: LocalCluster, streams: dict[str, Any]
) -> None:
    rc = client(cluster)
    env = subprocess_env(streams, max_deliveries=1)
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,manager"
    for i in range(200):
        add(rc, streams["stream_in"], "echo", {"n": i}, id=f"c{i}")
    add(rc, streams["stream_in"], "nope", {}, id="dead-1")  # unknown action: dead-lettered
    done = cli(env, "run", "--burst")
    assert done.returncode == 0, done.stderr[-3000:]
    got = answers(rc, streams["stream_out"])
    assert len(got) == 201 and all(v["times"] == 1 for v in got.values())
    assert sum(v["body"]["status"] == "ok" for v in got.values()) == 200
    assert rc.xlen(streams["dead_letter_stream"]) == 1
    assert rc.xpending(streams["stream_in"], streams["group"])["pending"] == 0
    # send --wait with a worker running.
    worker = subprocess.Popen([*CLI, "run"], env=env, stderr=subprocess.PIPE)
    try:
        sent = cli(env, "send", "echo", "-p", "n:=7", "--wait", "--timeout", "30")
        assert sent.returncode == 0, sent.stderr[-2000:]
        assert json.loads(sent.stdout)["status"] == "ok"
        stats = cli(env, "exec", "stats")
        assert stats.returncode == 0, stats.stderr[-2000:]
        body = json.loads(stats.stdout)["result"]
        assert body["lengths"][streams["dead_letter_stream"]] == 1
        assert body["group"] == streams["group"]
        # The dead letter goes back to the input stream (removed from the dead letters), is
        # answered again (still unknown) and dead-lettered again.
        replay = cli(env, "exec", "dlq_replay", "-p", "all:=true")
        assert replay.returncode == 0, replay.stderr[-2000:]
        wait_until(
            lambda: answers(rc, streams["stream_out"])["dead-1"]["times"] == 2,
            what="the replayed command to be answered",
        )
        wait_until(lambda: rc.xlen(streams["dead_letter_stream"]) == 1, what="one dead letter")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err.decode()[-2000:]


def test_a_killed_workers_entries_are_reclaimed(
    cluster: LocalCluster, streams: dict[str, Any]
) -> None:
    rc = client(cluster)
    env = subprocess_env(streams, claim_idle_ms=1000)
    for i in range(20):
        add(rc, streams["stream_in"], "sleep", {"seconds": 1.5, "n": i}, id=f"s{i}")
    doomed = subprocess.Popen(
        [*CLI, "run", "--consumer", "doomed"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: pending(rc, streams) == 20,
            what="the doomed worker to take all twenty",
        )
    finally:
        doomed.kill()  # SIGKILL: it never answers, its entries stay pending
        doomed.wait()
    assert rc.xlen(streams["stream_out"]) == 0

    def reclaimable() -> bool:  # idle past claim_idle_ms: what XAUTOCLAIM takes
        rows = rc.xpending_range(streams["stream_in"], streams["group"], "-", "+", 50)
        return len(rows) == 20 and all(r["time_since_delivered"] >= 1000 for r in rows)

    wait_until(reclaimable, what="the dead worker's entries to be idle past claim_idle_ms")
    done = cli(env, "run", "--burst", "--consumer", "heir")
    assert done.returncode == 0, done.stderr[-3000:]
    assert rc.xpending(streams["stream_in"], streams["group"])["pending"] == 0
    got = answers(rc, streams["stream_out"])
    assert len(got) == 20 and all(v["times"] == 1 for v in got.values())
    assert all(v["body"]["status"] == "ok" and v["body"]["attempt"] == 2 for v in got.values())


def test_three_partitions_on_three_masters(cluster: LocalCluster, streams: dict[str, Any]) -> None:
    """``kernel.partitions = 3``: the partitions' streams live on three different masters; a
    worker reads all three, a killed worker's entries are reclaimed in each, dead letters stay
    in their partition and go back to it on replay."""
    rc = client(cluster)
    env = subprocess_env({**streams, "partitions": 3}, claim_idle_ms=1000, max_deliveries=1)
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,manager"
    sets = stream_sets(KernelConfig.model_validate({**streams, "partitions": 3}))
    assert len({cluster.master_of(s.stream_in) for s in sets}) == 3
    listed = cli(env, "streams", "--json")
    assert [row["stream_in"] for row in json.loads(listed.stdout)] == [s.stream_in for s in sets]

    def put(action: str, params: dict[str, Any], key: str) -> None:
        add(rc, sets[partition_of(key, 3)].stream_in, action, params, id=key)

    for i in range(300):
        put("echo", {"n": i}, f"e{i}")
    dead = [next(f"x{p}-{j}" for j in range(100) if partition_of(f"x{p}-{j}", 3) == p)
            for p in range(3)]  # fmt: skip
    for key in dead:
        put("nope", {}, key)
    for i in range(30):
        put("sleep", {"seconds": 1.5}, f"s{i}")
    doomed = subprocess.Popen(
        [*CLI, "run", "--consumer", "doomed", "--concurrency", "40"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def group_pending() -> list[int]:
        out = []
        for s in sets:
            try:
                out.append(int(rc.xpending(s.stream_in, streams["group"])["pending"]))
            except redis.ResponseError:
                out.append(0)
        return out

    try:
        wait_until(
            lambda: (
                sum(len(answers(rc, s.stream_out)) for s in sets) >= 303
                and sum(group_pending()) == 30
            ),
            what="the doomed worker to answer the quick ones and hold the sleeps",
        )
    finally:
        doomed.kill()  # SIGKILL with the sleeps in flight in every partition
        doomed.wait()
    assert all(count > 0 for count in group_pending())
    wait_until(
        lambda: all(
            row["time_since_delivered"] >= 1000
            for s in sets
            for row in rc.xpending_range(s.stream_in, streams["group"], "-", "+", 50)
        ),
        what="the held entries to be idle past claim_idle_ms",
    )
    done = cli(env, "run", "--burst", "--consumer", "heir")
    assert done.returncode == 0, done.stderr[-3000:]
    got: dict[str, dict[str, Any]] = {}
    for s in sets:
        here = answers(rc, s.stream_out)
        assert all(partition_of(key, 3) == s.index for key in here)
        got.update(here)
        assert rc.xlen(s.dead_letter_stream) == 1
    assert len(got) == 333 and all(v["times"] == 1 for v in got.values())
    assert all(got[f"s{i}"]["body"]["attempt"] == 2 for i in range(30))
    assert group_pending() == [0, 0, 0]
    replay = cli(env, "manager", "dlq", "replay", "--all")
    assert replay.returncode == 0 and "replayed 3" in replay.stdout, replay.stderr[-2000:]
    assert [rc.xlen(s.dead_letter_stream) for s in sets] == [0, 0, 0]
    again = cli(env, "run", "--burst", "--consumer", "heir")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [rc.xlen(s.dead_letter_stream) for s in sets] == [1, 1, 1]
    for s, key in zip(sets, dead, strict=True):
        assert answers(rc, s.stream_out)[key]["times"] == 2


@pytest.mark.parametrize("min_replicas_ack", [0, 1])
def test_failover_of_the_streams_master(
    cluster: LocalCluster, streams: dict[str, Any], min_replicas_ack: int
) -> None:
    """Kill -9 the master holding the streams mid-run: the replica takes over and the worker
    follows it. Reported: commands lost (never answered), answered twice, and handled again
    (their acknowledgement had not reached the replica: attempt 2)."""
    rc = client(cluster)
    n = 3000
    env = subprocess_env(streams, claim_idle_ms=2000, min_replicas_ack=min_replicas_ack)
    # Short sleeps, few at a time: the run lasts seconds, so the kill lands in its middle.
    for i in range(n):
        add(rc, streams["stream_in"], "sleep", {"seconds": 0.005, "n": i}, id=f"f{i}")
    worker = subprocess.Popen(
        [*CLI, "run", "--consumer", "survivor", "--concurrency", "8"],
        env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: rc.xlen(streams["stream_out"]) > 200, what="the run to be under way")
        master = cluster.master_of(streams["stream_in"])
        answered_before = rc.xlen(streams["stream_out"])
        cluster.kill(master)
        assert answered_before < n, "the run ended before the kill: make it longer"
        promoted = cluster.wait_promoted(master, streams["stream_in"])
        # The next failover (the other parametrisation) may hit this slot's master again.
        cluster.revive(master)
        assert promoted != master
        rc = client(cluster)
        for i in range(n, n + 200):  # commands sent after the failover
            add(rc, streams["stream_in"], "echo", {"n": i}, id=f"f{i}")
        # Done when nothing is pending and nothing new is answered: what the old master
        # acknowledged but never passed on is pending again on the new one, and the worker
        # reclaims it after claim_idle_ms.
        wait_until(
            lambda: (
                len(answers(rc, streams["stream_out"])) == n + 200
                or (
                    pending(rc, streams) == 0
                    and rc.xinfo_groups(streams["stream_in"])[0]["lag"] == 0
                )
            ),
            timeout=120,
            what="the worker to finish after the failover",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    got = answers(rc, streams["stream_out"])
    lost = n + 200 - len(got)
    twice = sum(1 for v in got.values() if v["times"] > 1)
    again = sum(1 for v in got.values() if v["body"]["attempt"] > 1)
    print(
        f"failover (min_replicas_ack={min_replicas_ack}) after {answered_before} of {n} "
        f"answers: {lost} of {n + 200} commands lost, {twice} answered twice, "
        f"{again} handled again"
    )
    assert worker.returncode == 0, err.decode()[-3000:]
    assert "Traceback" not in err.decode()
    assert lost <= lost_bound(n)
    assert twice == 0  # a result and its entry's XACK replicate together (one MULTI)


def lost_bound(n: int) -> int:
    """Replication is asynchronous: what the master acknowledged but had not yet passed to its
    replica is gone with it. The worker's own writes come back (their entries are pending
    again and reclaimed); only input entries the old master took in its last moments could be
    lost, and here they were all added before the run. So: none."""
    return 0
