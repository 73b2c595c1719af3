"""Faults: Redis and PostgreSQL connections cut at seeded random moments of a worker's run.

A TCP relay (fuzz_helpers.Relay) stands in front of each server; the worker (a real
``corec-kit run`` subprocess, records in PostgreSQL) talks through them. While commands are
produced (straight to Redis) and handled, the test repeatedly drops every connection through
one relay and refuses new ones for 0.2-2 s. Invariants, as for the fuzzer: the worker exits 0
on SIGTERM; each entry exactly one answer; every good command ``ok`` with its own result;
nothing pending; no foreign key written; and exactly one record per command key.

``COREC_FAULT_COMMANDS`` sets the number of commands (default 1500), ``COREC_FUZZ_SEED`` the
seed of the fault schedule. Run with ``-s`` to see the counts.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import redis as syncredis
from fuzz_helpers import (
    Names,
    Relay,
    Sent,
    check,
    fuzz_seed,
    good_command,
    record_keys,
    tracebacks,
    worker_env,
    xadd_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(600)]


@pytest.fixture
def sync_redis(corec_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(corec_redis_url)
    yield client
    client.close()


def commands(names: Names, count: int, rnd: random.Random) -> list[Sent]:
    """Mostly good ``echo`` commands; one in eight invalid in one of four ways."""
    tag = names.prefix.strip("{}")
    out: list[Sent] = []
    for i in range(count):
        if i % 8 != 7:
            out.append(good_command(i, tag, names, rnd))
            continue
        cid = f"bad-{tag}-{i}"
        kind = (i // 8) % 4
        if kind == 0:
            out.append(Sent("not_json", {b"payload": b"{nope %d" % i}))
        elif kind == 1:
            body = {"action": "no_such_action", "params": {}, "id": cid}
            out.append(Sent("unknown_action", {b"payload": orjson.dumps(body)}))
        elif kind == 2:
            body = {"action": "echo", "params": {"n": "x"}, "id": cid}
            out.append(Sent("invalid_params", {b"payload": orjson.dumps(body)}))
        else:
            out.append(
                Sent("flat_not_json", {b"action": b"echo", b"params": b"{", b"id": cid.encode()})
            )
    return out


def via(url: str, port: int) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)
    netloc = f"{host[0]}@127.0.0.1:{port}" if len(host) == 2 else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_connections_cut_at_random_moments_lose_nothing(
    sync_redis: syncredis.Redis,
    corec_streams: dict[str, Any],
    corec_postgres_schema_url: str,
    tmp_path: Path,
) -> None:
    seed = fuzz_seed()
    rnd = random.Random(seed)
    count = int(os.environ.get("COREC_FAULT_COMMANDS", "1500"))
    names = Names.from_streams(corec_streams)
    sent = commands(names, count, rnd)
    relays = {
        "redis": Relay(urlsplit(names.redis_url).port or 6379),
        "postgres": Relay(urlsplit(corec_postgres_schema_url).port or 5432),
    }
    env = worker_env(
        names,
        via(corec_postgres_schema_url, relays["postgres"].port),
        redis_url=via(names.redis_url, relays["redis"].port),
        claim_idle_ms=1500,
        shutdown_grace_s=10,
        state_dir=str(tmp_path / ".corec"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "corec_plugin_kit", "run", "--consumer", "F"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started = time.monotonic()
    outages: list[tuple[float, str, float]] = []
    try:
        xadd_all(sync_redis, names.stream_in, sent[:100])
        deadline = time.monotonic() + 60
        while sync_redis.exists(names.stream_out) == 0 and not _exists_reply(sync_redis, names):
            assert proc.poll() is None, "the worker exited before answering anything"
            assert time.monotonic() < deadline, "no answer within 60 s"
            time.sleep(0.05)
        # Produce the rest over ~15 s while cutting one relay at a time at random moments.
        produced, next_cut, busy_until = 100, time.monotonic() + rnd.uniform(0.3, 1.5), 0.0
        while produced < len(sent):
            now = time.monotonic()
            if now >= next_cut and now >= busy_until:
                which = rnd.choice(sorted(relays))
                seconds = rnd.uniform(0.2, 2.0)
                relays[which].outage(seconds)
                outages.append((round(now - started, 2), which, round(seconds, 2)))
                busy_until = now + seconds
                next_cut = busy_until + rnd.uniform(0.3, 2.5)
            batch = sent[produced : produced + 20]
            xadd_all(sync_redis, names.stream_in, batch)
            produced += len(batch)
            time.sleep(0.2)
            assert proc.poll() is None, "the worker exited during the faults"
        # Everything answered (results plus dead-letter-only answers) and nothing pending.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if _answered(sync_redis, names) >= len(sent) and _pending(sync_redis, names) == 0:
                break
            assert proc.poll() is None, "the worker exited before answering everything"
            time.sleep(0.2)
        answered_in = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        _out, err_bytes = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for relay in relays.values():
            relay.close()
    stderr = err_bytes.decode(errors="replace")
    report = check(sync_redis, names, sent, None)
    records = record_keys(corec_postgres_schema_url)
    keys = Counter(k for k, _ in records)
    status = dict(records)
    for s in sent:
        key = s.good["id"] if s.good else _key(s)
        if key is not None and keys[key] != 1:
            report.fail(f"{keys[key]} records for command key {key}", s)
        if s.good and status.get(key) != "ok":
            report.fail(f"good command {key} recorded as {status.get(key)}", s)
    expected = {s.good["id"] if s.good else _key(s) or s.entry_id for s in sent}
    if set(keys) != expected:
        report.fail(f"records of unknown keys: {sorted(set(keys) - expected)[:10]}")
    print(
        f"\nfaults seed={seed}: {len(sent)} commands, all answered after {answered_in:.1f}s, "
        f"exit {proc.returncode}; {len(outages)} outages "
        f"(redis {relays['redis'].cuts} cuts / {relays['redis'].dropped} connections dropped, "
        f"postgres {relays['postgres'].cuts} / {relays['postgres'].dropped}); "
        f"{len(records)} records\n  outages (t, relay, s): {outages}\n{report.table()}"
    )
    problems = [] if proc.returncode == 0 else [f"worker exited {proc.returncode}"]
    # A library's own WARNING with a traceback while its server is away (asyncpg's pool
    # "Failed to restore the pool connection floor") is outage noise, not a worker failure.
    problems += [f"traceback: {tb}" for tb in tracebacks(stderr) if " WARNING " not in tb]
    assert not problems and not report.violations, (
        "\n".join(problems) + "\n" + report.summary() + "\n--- stderr tail ---\n" + stderr[-3000:]
    )


def _key(s: Sent) -> str | None:
    """The command key the worker records: the ``id``, else (None here) the entry id."""
    if b"id" in s.fields:
        return s.fields[b"id"].decode()
    try:
        body = orjson.loads(s.fields[b"payload"])
    except (KeyError, orjson.JSONDecodeError):
        return s.entry_id
    return body.get("id") or s.entry_id


def _exists_reply(r: syncredis.Redis, names: Names) -> bool:
    return r.exists(f"{names.reply_prefix}good") > 0


def _answered(r: syncredis.Redis, names: Names) -> int:
    return int(r.xlen(names.stream_out)) + int(r.xlen(f"{names.reply_prefix}good"))


def _pending(r: syncredis.Redis, names: Names) -> int:
    try:
        return int(r.xpending(names.stream_in, names.group)["pending"])
    except syncredis.ResponseError:
        return -1
