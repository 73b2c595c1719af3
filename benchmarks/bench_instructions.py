"""Instructions per command: the stream loop's work counted by valgrind, not timed.

On a shared machine a drain's rate moves by 10-30 % from one round to the next, more than most
changes to the hot path; the count of instructions a worker executes per command does not (two
runs of the same code agree within 0.1 %). So this script is the one to compare two versions of
the kernel with: it runs each scenario of ``bench_runtime.py`` under ``valgrind
--tool=cachegrind --cache-sim=no`` on N pre-loaded commands and once on none, and prints the
difference per command, every thread of the worker included, and its ratio to the raw loop's.
Records off and PostgreSQL records repeat within 0.1 %; SQLite records within about 3 %, as
their commit batches (and so the work per batch) follow the timing: ``--repeat`` takes the
median of several drains.

What it cannot see: time spent waiting (for Redis, the database, fsync, the GIL) and how the
threads overlap; the drain rate of ``bench_runtime.py`` is still the figure the targets are
set on. Valgrind runs everything about 50 times slower and one thread at a time: N = 5,000
takes about 20 s per scenario.

    python benchmarks/bench_instructions.py                          # raw, kernel, sqlite, postgres
    python benchmarks/bench_instructions.py --only kernel,sqlite --before /tmp/old-tree

Needs valgrind, Redis (COREC_TEST_REDIS_URL) and, for postgres, COREC_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import redis as syncredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runtime as bench  # the scenarios are bench_runtime's own

SCENARIOS = ("raw", "kernel", "sqlite", "sqlite_nolookup", "postgres", "postgres_nolookup")


def instructions(kind: str, n: int, r: syncredis.Redis) -> int:
    """Instructions the scenario's worker executes, start to exit, draining ``n`` commands."""
    streams = bench.names()
    bench.preload(r, streams["stream_in"], n)
    try:
        with tempfile.TemporaryDirectory() as state:
            cmds, cwd = bench.workers_of(kind, streams, state)
            (cmd, env), = cmds  # fmt: skip
            out = Path(state) / "cachegrind.out"
            valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                        f"--cachegrind-out-file={out}"]  # fmt: skip
            # The same hash seed for every run: dict and set layouts, and so the work of
            # start-up, are then the same from one run to the next.
            done = subprocess.run(
                [*valgrind, *cmd], env={**env, "PYTHONHASHSEED": "0"}, cwd=cwd,
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{kind}: the worker exited {done.returncode}:\n{done.stderr[-2000:]}")
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"{kind}: no instruction count in valgrind's output")
        results = r.xlen(streams["stream_out"])
        if n and results != n:
            raise SystemExit(f"{kind}: expected {n} results, found {results}")
        return int(found.group(1).replace(",", ""))
    finally:
        r.delete(*streams.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="commands per drain")
    parser.add_argument(
        "--only", default="raw,kernel,sqlite,postgres",
        help=f"comma-separated scenarios, of: {', '.join(SCENARIOS)}",
    )  # fmt: skip
    parser.add_argument(
        "--before", type=Path, metavar="TREE",
        help="another checkout (a git worktree of an older commit): its kernel is counted too, "
        "as before:SCENARIO",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="drains per scenario (median)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    wanted = args.only.split(",")
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.before:
        bench.BEFORE.append(args.before.resolve())
        wanted += [f"before:{kind}" for kind in wanted if kind != "raw"]
    r = syncredis.Redis.from_url(bench.REDIS_URL)
    r.ping()
    per_command = {}
    for kind in wanted:
        drains = [instructions(kind, args.n, r) for _ in range(args.repeat)]
        per_command[kind] = (statistics.median(drains) - instructions(kind, 0, r)) / args.n
    print(f"\n{args.n} commands per drain, Python {sys.version.split()[0]}")
    print(f"{'scenario':<24} {'instructions/cmd':>16} {'raw / this':>10}")
    for kind, count in per_command.items():
        ratio = f"{per_command['raw'] / count:.2f}" if "raw" in per_command else "-"
        print(f"{kind:<24} {count:>16,.0f} {ratio:>10}")
    for kind in wanted:
        if f"before:{kind}" in per_command:
            change = per_command[kind] / per_command[f"before:{kind}"]
            print(f"{kind} / before:{kind}: {change:.3f}x the instructions")


if __name__ == "__main__":
    main()
