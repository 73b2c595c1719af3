"""Partitioned input on a local Redis Cluster: ``kernel.partitions`` 1 and 3, same workers.

Starts the tests' local cluster (3 masters, 3 replicas: ``tests/runtime/cluster_helpers.py``,
needs ``redis-server`` and ``redis-cli``), pre-loads N echo commands (records off), spread
over the partitions as a producer would (``crc32(id) % P``), and times
``corec-kit run --burst --workers W`` (default 1) draining them. The rate comes from the
result entries' own ids (the servers' clock), first to last over every partition's result
stream. Each round runs P=1 then P=3; the ratio P=3 / P=1
is taken within the round and its median reported.

On a machine with fewer cores than the cluster has masters the six servers and the worker
compete for CPU: the figure is a report, not a promise (docs/operations.md).

    python benchmarks/bench_partitions.py                 # 20,000 commands, 3 rounds
    python benchmarks/bench_partitions.py --n 5000 --repeat 1
    python benchmarks/bench_partitions.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
sys.path.insert(0, str(ROOT / "tests"))

from cluster_helpers import LocalCluster, cluster_tools  # noqa: E402

from corec_plugin_kit.config import KernelConfig  # noqa: E402
from corec_plugin_kit.partitions import StreamSet, partition_of, stream_sets  # noqa: E402

CORE_KIT = [sys.executable, "-m", "corec_plugin_kit"]


def settings(count: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {
        "stream_in": f"{{b{tag}}}:in",
        "stream_out": f"{{b{tag}}}:out",
        "dead_letter_stream": f"{{b{tag}}}:dead",
        "group": f"bench{tag}",
        "partitions": count,
    }


def preload(rc: redis.RedisCluster, sets: tuple[StreamSet, ...], n: int) -> None:
    pipe = rc.pipeline()
    for i in range(n):
        key = f"c{i}"
        body = {"action": "echo", "params": {"n": i, "text": "hello"}, "id": key}
        pipe.xadd(sets[partition_of(key, len(sets))].stream_in, {"payload": orjson.dumps(body)})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def drain_rate(rc: redis.RedisCluster, sets: tuple[StreamSet, ...], n: int) -> float:
    """Results per second, first to last result over every partition (server clocks: the
    nodes run on this one machine)."""
    firsts, lasts, got = [], [], 0
    for s in sets:
        got += rc.xlen(s.stream_out)
        firsts += [int(e[0].split(b"-")[0]) for e in rc.xrange(s.stream_out, count=1)]
        lasts += [int(e[0].split(b"-")[0]) for e in rc.xrevrange(s.stream_out, count=1)]
    if got != n:
        raise SystemExit(f"expected {n} results, found {got}")
    return (n - 1) / max(max(lasts) - min(firsts), 1) * 1000


def scenario(cluster: LocalCluster, count: int, n: int, workers: int) -> float:
    rc = redis.RedisCluster.from_url(cluster.url)
    names = settings(count)
    sets = stream_sets(KernelConfig.model_validate(names))
    preload(rc, sets, n)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.update({
        "COREC_PLUGINS": "echo_proc",
        "COREC_LOAD_PROCESSORS": "echo_proc",
        "COREC_REDIS_URL": cluster.url,
        "COREC_KERNEL__RECORDS": "false",
        "COREC_KERNEL__METRICS_PORT": "0",
        "COREC_KERNEL__TRIM_STREAM_IN": "false",
    })  # fmt: skip
    for key, value in names.items():
        env[f"COREC_KERNEL__{key.upper()}"] = str(value)
    with tempfile.TemporaryDirectory() as state:
        env["COREC_KERNEL__STATE_DIR"] = state
        cmd = [*CORE_KIT, "run", "--burst", "-q", "--workers", str(workers)]
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
    rate = drain_rate(rc, sets, n)
    for s in sets:
        rc.delete(s.stream_in)
        rc.delete(s.stream_out)
    rc.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="commands per scenario")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (run --workers)")
    parser.add_argument("--json-out", help="write the figures here as JSON")
    args = parser.parse_args()
    if not cluster_tools():
        raise SystemExit("needs redis-server and redis-cli (Debian: apt install redis-server)")
    cluster = LocalCluster().start()
    try:
        rates: dict[int, list[float]] = {1: [], 3: []}
        for _ in range(args.repeat):
            for count in (1, 3):
                rates[count].append(scenario(cluster, count, args.n, args.workers))
    finally:
        cluster.stop()
    ratios = [three / one for one, three in zip(rates[1], rates[3], strict=True)]
    print(
        f"{args.n} commands, {args.repeat} rounds, {os.cpu_count()} CPUs, "
        f"{args.workers} worker process(es)"
    )
    for count in (1, 3):
        shown = " ".join(f"{rate:.0f}" for rate in rates[count])
        print(f"partitions={count}: median {statistics.median(rates[count]):.0f} cmd/s ({shown})")
    shown = " ".join(f"{ratio:.2f}" for ratio in ratios)
    print(f"partitions=3 / partitions=1: median {statistics.median(ratios):.2f}x (rounds: {shown})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rates": rates, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
