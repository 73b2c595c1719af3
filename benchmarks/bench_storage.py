"""Record-store micro-benchmark: ``write_batch`` throughput, SQLite and PostgreSQL.

Not a test: it prints a table. Workload: batches of 256 records (the runtime's default
``batch_size``) of realistic size (params ~100 B, result ~250 B of JSON), first as new keys
(inserts), then the same keys again (the upsert path a redelivery takes). PostgreSQL is
measured with each write method (json, unnest, executemany, COPY into a staging table); rounds are
interleaved so that a noisy neighbour on a shared machine hurts every method alike; the median
round of each is reported (and the best, for the ceiling). A second, paired measurement then
alternates the PostgreSQL methods batch by batch, the fairest comparison on a busy machine.

    python benchmarks/bench_storage.py                   # 40 batches x 256, 5 rounds
    python benchmarks/bench_storage.py --batches 10 --rounds 1
    COREC_TEST_POSTGRES_URL=postgresql://... python benchmarks/bench_storage.py

PostgreSQL comes from COREC_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
each run uses a throwaway schema, dropped afterwards. SQLite runs in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from corec_plugin_kit.storage import PostgresStore, Record, RecordStore, SQLiteStore

PG_URL = os.environ.get("COREC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def make_batches(n_batches: int, size: int, tag: str) -> list[list[Record]]:
    now = datetime.now(timezone.utc)
    return [
        [
            Record(
                command_key=f"{tag}-{b}-{i}",
                action="generate_plugin",
                processor="generator",
                status="ok" if i % 10 else "error",
                params={"plugin_name": f"plugin_{i}", "author": "bench", "dry_run": True},
                result={"files": [f"src/plugin_{i}/{name}.py" for name in "abcdefgh"]}
                if i % 10
                else None,
                error=None if i % 10 else {"type": "handler_error", "message": "boom"},
                deliveries=1,
                created_at=None,
                finished_at=now,
                duration_ms=1.5,
            )
            for i in range(size)
        ]
        for b in range(n_batches)
    ]


async def timed(store: RecordStore, batches: list[list[Record]]) -> float:
    """Records per second writing ``batches`` one after the other (as the commit loop does)."""
    start = time.perf_counter()
    for batch in batches:
        await store.write_batch(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


async def pg_schema(action: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        sql = f'CREATE SCHEMA "{name}"' if action == "create" else f'DROP SCHEMA "{name}" CASCADE'
        await conn.execute(sql)
    finally:
        await conn.close()


async def one_round(
    name: str, batches_n: int, size: int, folder: Path
) -> tuple[float, float] | None:
    """(insert rate, upsert rate) for one scenario on a fresh database, or None if unavailable."""
    tag = uuid.uuid4().hex[:8]
    batches = make_batches(batches_n, size, tag)
    schema = None
    store: RecordStore
    if name == "sqlite":
        store = SQLiteStore(folder / f"{tag}.db")
    else:
        schema = f"corec_bench_{tag}"
        try:
            await pg_schema("create", schema)
        except Exception as exc:
            print(f"  (postgresql skipped: {type(exc).__name__}: {exc})")
            return None
        store = PostgresStore(
            PG_URL,
            server_settings={"search_path": schema},
            write_method=name.split(":")[1],  # type: ignore[arg-type]
        )
    try:
        await store.open()
        await store.write_batch(make_batches(1, size, "warm")[0])  # connect, prepare, cache
        inserts = await timed(store, batches)
        upserts = await timed(store, batches)
        return inserts, upserts
    finally:
        await store.close()
        if schema is not None:
            await pg_schema("drop", schema)


async def main(args: argparse.Namespace) -> None:
    scenarios = [
        "sqlite",
        "postgresql:json",
        "postgresql:unnest",
        "postgresql:executemany",
        "postgresql:copy",
    ]
    if args.only:
        scenarios = [s for s in scenarios if any(s.startswith(o) for o in args.only.split(","))]
    seen: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="corec-bench-") as tmp:
        for round_no in range(args.rounds):
            for name in scenarios:
                rates = await one_round(name, args.batches, args.batch_size, Path(tmp))
                if rates is None:
                    continue
                seen.setdefault(name, []).append(rates)
                print(
                    f"  round {round_no + 1}: {name:<24} insert {rates[0]:>9,.0f}/s"
                    f"  upsert {rates[1]:>9,.0f}/s"
                )
    n = args.batches * args.batch_size
    print()
    print(f"write_batch, batches of {args.batch_size}, {n} records, {args.rounds} rounds")
    print(
        f"{'back-end / method':<24}{'insert/s median':>16}{'upsert/s median':>16}"
        f"{'ms/batch':>10}{'insert/s best':>15}"
    )
    print("-" * 81)
    median: dict[str, tuple[float, float]] = {}
    for name, runs in seen.items():
        ins = statistics.median(r[0] for r in runs)
        ups = statistics.median(r[1] for r in runs)
        median[name] = (ins, ups)
        print(
            f"{name:<24}{ins:>16,.0f}{ups:>16,.0f}{1000 * args.batch_size / ins:>10.2f}"
            f"{max(r[0] for r in runs):>15,.0f}"
        )
    pg = {k: v for k, v in median.items() if k.startswith("postgresql")}
    if len(pg) > 1:
        winner = max(pg, key=lambda k: pg[k][0] + pg[k][1])
        print(f"\nfastest PostgreSQL method here: {winner.split(':')[1]}")
    if args.paired and any(s.startswith("postgresql") for s in scenarios):
        await paired(args.paired, args.batch_size)


async def paired(batches_n: int, size: int) -> None:
    """PostgreSQL methods batch by batch in alternation: noise on a shared machine hits all alike.

    Each method writes to its own fresh schema; per-batch times are compared by median and
    10th percentile (the p10 is the closest to the uncontended cost).
    """
    methods = ["json", "unnest", "copy", "executemany"]
    stores: dict[str, tuple[PostgresStore, str]] = {}
    try:
        for method in methods:
            schema = f"corec_bench_{uuid.uuid4().hex[:8]}"
            await pg_schema("create", schema)
            store = PostgresStore(
                PG_URL,
                server_settings={"search_path": schema},
                write_method=method,  # type: ignore[arg-type]
            )
            stores[method] = (store, schema)
            await store.open()
        work = {m: make_batches(batches_n, size, m) for m in methods}
        times: dict[str, list[float]] = {m: [] for m in methods}
        for i in range(batches_n):
            for method in methods if i % 2 else methods[::-1]:
                start = time.perf_counter()
                await stores[method][0].write_batch(work[method][i])
                times[method].append(time.perf_counter() - start)
        print(f"\nPostgreSQL, alternating batch by batch ({batches_n} batches of {size} each)")
        print(f"{'method':<14}{'median ms/batch':>16}{'p10 ms/batch':>14}{'median rec/s':>14}")
        print("-" * 58)
        for method in methods:
            ts = sorted(times[method])
            med = statistics.median(ts)
            p10 = ts[len(ts) // 10]
            print(f"{method:<14}{1000 * med:>16.2f}{1000 * p10:>14.2f}{size / med:>14,.0f}")
    finally:
        for store, schema in stores.values():
            await store.close()
            await pg_schema("drop", schema)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=40, help="batches per measurement")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument(
        "--paired",
        type=int,
        default=150,
        metavar="N",
        help="then N batches per PostgreSQL method, alternating batch by batch (0 = skip)",
    )
    parser.add_argument("--only", help="comma list of prefixes: sqlite,postgresql:copy,...")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args: Any = parse()
    asyncio.run(main(args))
