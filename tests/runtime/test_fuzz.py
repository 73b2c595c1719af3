"""The stream fuzzer: thousands of generated hostile entries, interleaved with good commands,
through one real ``corec-kit run --burst`` per record back-end (SQLite, PostgreSQL).

Entries are drawn with hypothesis strategies (fuzz_helpers.strategies: arbitrary field maps and
bytes, JSON of any depth, size and number range, every kind of string including NUL and lone
surrogates, arbitrary ``id``, ``action``, ``params``, ``reply_to``, ``meta``), seeded and
deterministic. ``COREC_FUZZ_ENTRIES`` sets how many per back-end (default 2000, the CI
minimum; more by hand), ``COREC_FUZZ_SEED`` the seed. Invariants, checked once the worker
exits: exit code 0 and no traceback; each entry exactly one result (counted per stream entry,
by the result's ``entry_id``), with its dead letter when its error type has one; every good
command answered ``ok`` with its own result; nothing pending; no key written under the test's
prefix but the result, reply and dead-letter streams; the pre-existing keys unchanged.

Run with ``-s`` to see the counts per class.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis
from fuzz_helpers import (
    Names,
    assemble,
    check,
    fuzz_entries,
    fuzz_seed,
    generate,
    precreate,
    record_keys,
    run_worker,
    tracebacks,
    worker_env,
    xadd_all,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(900)]


@pytest.fixture
def sync_redis(corec_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(corec_redis_url)
    yield client
    client.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/records.db"  # tmp_path is absolute: sqlite:////...
    return str(request.getfixturevalue("corec_postgres_schema_url"))


def test_fuzzed_entries_keep_every_invariant(
    sync_redis: syncredis.Redis,
    corec_streams: dict[str, Any],
    database_url: str,
    tmp_path: Path,
) -> None:
    names = Names.from_streams(corec_streams)
    count, seed = fuzz_entries(), fuzz_seed()
    started = time.monotonic()
    sent = assemble(generate(names, count, seed), names, seed)
    generated = time.monotonic() - started
    before = precreate(sync_redis, names)
    xadd_all(sync_redis, names.stream_in, sent)

    env = worker_env(names, database_url, state_dir=str(tmp_path / ".corec"))
    code, stderr, seconds = run_worker(env, "--burst", timeout=600)
    report = check(sync_redis, names, sent, before)

    backend = database_url.split(":", 1)[0]
    print(
        f"\nfuzz[{backend}] seed={seed}: {len(sent)} entries ({count} generated), "
        f"generated in {generated:.1f}s, worker {seconds:.1f}s, exit {code}\n{report.table()}"
    )
    problems = []
    if code != 0:
        problems.append(f"worker exited {code}")
    problems += [f"traceback: {tb}" for tb in tracebacks(stderr)]
    if code == 0:  # records are only worth checking after a clean run
        keys = dict(record_keys(database_url))
        for s in sent:
            if s.good is not None and keys.get(s.good["id"]) != "ok":
                report.fail(f"good command {s.good['id']} recorded as {keys.get(s.good['id'])}", s)
    assert not problems and not report.violations, (
        "\n".join(problems) + "\n" + report.summary() + "\n--- stderr tail ---\n" + stderr[-3000:]
    )
