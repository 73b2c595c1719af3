"""Hostile producers against a real ``corec-kit run`` worker: what a command contains never stops
the worker, a refusal is confined to its entry, and finished work is not run again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from runtime_helpers import TESTS, flat, payload, pending, subprocess_env

from corec_plugin_kit.envelopes import MAX_DEPTH

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

sys.path.insert(0, str(TESTS))
from tally_proc import runs  # noqa: E402


def worker_env(streams: dict[str, Any], tally: Path, **kernel: Any) -> dict[str, str]:
    env = subprocess_env(streams, **kernel)
    env["COREC_PLUGINS"] = "echo_proc,tally_proc"
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,tally_proc"
    env["TALLY_FILE"] = str(tally)
    return env


def run_burst(env: dict[str, str]) -> str:
    """``corec-kit run --burst``; asserts it exits 0 without a traceback, returns stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "run", "--burst"],
        env=env,
        capture_output=True,
        timeout=90,
        check=False,
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return err


def start_worker(env: dict[str, str], consumer: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "corec_plugin_kit", "run", "--consumer", consumer],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def answers(redis: Any, streams: dict[str, Any], *extra: str) -> dict[str, dict[str, Any]]:
    """Every answer by stream entry id: ``{"result": body}`` and/or ``{"dead": fields}``."""
    out: dict[str, dict[str, Any]] = {}
    for stream in (streams["stream_out"], *extra):
        for _eid, fields in await redis.xrange(stream):
            body = orjson.loads(fields[b"payload"])
            slot = out.setdefault(body["entry_id"], {})
            assert "result" not in slot, f"two results for {body['entry_id']}"
            slot["result"] = body
    for _eid, fields in await redis.xrange(streams["dead_letter_stream"]):
        error = orjson.loads(fields[b"error"]) if b"error" in fields else None
        entry_id = fields.get(b"entry_id", b"?" + _eid).decode()
        out.setdefault(entry_id, {})["dead"] = {"fields": fields, "error": error}
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/records.db"
    return str(request.getfixturevalue("corec_postgres_schema_url"))


async def test_content_that_cannot_round_trip_is_refused_and_the_batch_commits(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Path, database_url: str
) -> None:
    stream = corec_streams["stream_in"]
    deep = b"[" * (MAX_DEPTH + 200) + b"]" * (MAX_DEPTH + 200)
    hostile = {
        "deep_payload": {b"payload": b'{"action": "tally", "params": {"x": ' + deep + b"}}"},
        "deep_flat": {b"action": b"tally", b"params": b'{"x": ' + deep + b"}"},
        "bigint_flat": {b"action": b"tally", b"params": b'{"n": 123456789012345678901234567890}'},
        "bigint_payload": {
            b"payload": b'{"action": "tally", "params": {"n": -99999999999999999999}}'
        },
        "nul_id": {b"payload": b'{"action": "tally", "id": "k\\u0000", "params": {}}'},
        "nul_id_flat": {b"action": b"tally", b"id": b"k\x00x"},
        "nul_action": {b"payload": b'{"action": "tally\\u0000", "params": {}}'},
        "nul_action_flat": {b"action": b"tal\x00ly"},
        "nul_param": {b"payload": b'{"action": "tally", "params": {"n": 1, "s": "\\u0000"}}'},
        "surrogate": {b"payload": b'{"action": "tally", "params": {"s": "\\udc00"}}'},
        "infinite": {b"action": b"tally", b"params": b'{"n": 1e999}'},
    }
    # A result that cannot be encoded: the command's own error, confined to it.
    unencodable = {
        "huge_int_result": payload("huge_int", {"n": 1}),
        "object_result": payload("not_json", {}),
    }
    ids: dict[str, str] = {}
    for i in range(40):  # good commands before, between and after the hostile ones
        ids[f"good{i}"] = await corec_redis.xadd(stream, payload("tally", {"n": i}, id=f"g{i}"))
        if i % 4 == 0:
            for name, fields in list(hostile.items())[i // 4 :: 10]:
                ids[name] = await corec_redis.xadd(stream, fields)
    for name, fields in unencodable.items():
        ids[name] = await corec_redis.xadd(stream, fields)
    assert set(ids) >= set(hostile)
    tally = tmp_path / "tally"
    env = worker_env(corec_streams, tally, records=True, database_url=database_url)
    run_burst(env)

    got = await answers(corec_redis, corec_streams)
    by_name = {name: got.get(eid.decode(), {}) for name, eid in ids.items()}
    for name, slot in by_name.items():
        assert "result" in slot, f"{name} was not answered"
        body = slot["result"]
        if name.startswith("good"):
            assert body["status"] == "ok", body
        elif name in hostile:
            assert body["error"]["type"] in ("invalid_command", "invalid_params"), (name, body)
            assert "dead" in slot, f"{name} was not dead-lettered"
        else:
            assert body["error"]["type"] == "handler_error", body
            assert "cannot be encoded as JSON" in body["error"]["message"]
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    assert sorted(runs(tally)) == sorted(f"g{i}" for i in range(40))


@pytest.mark.postgres
async def test_a_record_the_database_refuses_is_dead_lettered_alone(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Path, corec_postgres_schema_url: str
) -> None:
    """A row PostgreSQL refuses (not an outage: a CHECK constraint stands for any such refusal)
    is that entry's dead letter; the rest of its batch is recorded, answered and acknowledged."""
    import asyncpg

    stream = corec_streams["stream_in"]
    tally = tmp_path / "tally"
    env = worker_env(corec_streams, tally, records=True, database_url=corec_postgres_schema_url)
    await corec_redis.xadd(stream, payload("tally", {}, id="first"))
    run_burst(env)  # creates the schema
    conn = await asyncpg.connect(corec_postgres_schema_url)  # search_path: the test's schema
    try:
        await conn.execute(
            "ALTER TABLE corec_commands ADD CONSTRAINT no_poison "
            "CHECK (command_key NOT LIKE 'poison%')"
        )
    finally:
        await conn.close()
    ids = {}
    for i in range(30):
        key = f"poison{i}" if i % 10 == 3 else f"k{i}"
        ids[key] = (await corec_redis.xadd(stream, payload("tally", {"n": i}, id=key))).decode()
    err = run_burst(env)
    assert "writing them one by one" in err

    got = await answers(corec_redis, corec_streams)
    for key, eid in ids.items():
        body = got[eid]["result"]
        if key.startswith("poison"):
            assert body["status"] == "error", body
            assert body["error"]["type"] == "dead_letter"
            assert "record cannot be written" in body["error"]["message"]
            assert "no_poison" in body["error"]["message"]
            assert "dead" in got[eid]
        else:
            assert body["status"] == "ok", body
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    conn = await asyncpg.connect(corec_postgres_schema_url)
    try:
        keys = {r[0] for r in await conn.fetch("SELECT command_key FROM corec_commands")}
    finally:
        await conn.close()
    assert keys == {"first"} | {k for k in ids if not k.startswith("poison")}


async def test_reply_to_is_checked_and_a_bad_reply_stream_is_confined(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Path
) -> None:
    stream = corec_streams["stream_in"]
    dead = corec_streams["dead_letter_stream"]
    prefix = stream.split(":")[0]
    ok_reply = f"{prefix}:replies:client1"
    not_a_stream = f"{prefix}:a-string"
    await corec_redis.set(not_a_stream, b"precious")
    await corec_redis.xadd(dead, {b"seed": b"1"})  # the dead-letter stream exists already
    cases = {
        "input": payload("echo", {"n": 1}, reply_to=stream),
        "input_flat": flat("echo", {"n": 1}, reply_to=stream),
        "dead": payload("echo", {"n": 1}, reply_to=dead),
        "long": payload("echo", {"n": 1}, reply_to=prefix + ":" + "r" * 300),
        "outside_pattern": payload("echo", {"n": 1}, reply_to="somebody-elses-stream"),
    }
    ids = {}
    for name, fields in cases.items():
        ids[name] = (await corec_redis.xadd(stream, fields)).decode()
    ids["good_before"] = (
        await corec_redis.xadd(stream, payload("echo", {"n": 2}, reply_to=ok_reply))
    ).decode()
    ids["wrongtype"] = (
        await corec_redis.xadd(stream, payload("echo", {"n": 3}, reply_to=not_a_stream))
    ).decode()
    ids["good_after"] = (await corec_redis.xadd(stream, payload("echo", {"n": 4}))).decode()
    input_len = await corec_redis.xlen(stream)
    env = worker_env(
        corec_streams,
        tmp_path / "tally",
        reply_to_max_length=100,
        reply_to_pattern=f"{prefix.replace('{', '[{]').replace('}', '[}]')}:.*",
        trim_stream_in=False,
    )
    err = run_burst(env)

    got = await answers(corec_redis, corec_streams, ok_reply)
    for name in cases:
        body = got[ids[name]]["result"]
        assert body["error"]["type"] == "invalid_command", (name, body)
        assert "reply_to" in body["error"]["message"]
    assert got[ids["good_before"]]["result"]["status"] == "ok"
    assert got[ids["good_after"]]["result"]["status"] == "ok"
    # The command ran; its answer could not be written where asked: it is the dead letter.
    wrong = got[ids["wrongtype"]]
    assert "result" not in wrong
    assert "WRONGTYPE" in wrong["dead"]["error"]["message"]
    assert wrong["dead"]["error"]["details"]["result"]["status"] == "ok"
    assert "WRONGTYPE" in err
    assert await corec_redis.get(not_a_stream) == b"precious"
    assert await corec_redis.xlen(stream) == input_len  # nothing was written to the input
    for _eid, fields in await corec_redis.xrange(dead):
        assert b"payload" not in fields or b"error" in fields  # only real dead letters
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0


async def test_finished_work_is_answered_from_its_record_not_run_again(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Path, database_url: str
) -> None:
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    tally = tmp_path / "tally"
    env = worker_env(
        corec_streams, tally, records=True, database_url=database_url, trim_stream_in=False
    )
    for i in range(50):
        await corec_redis.xadd(stream, payload("tally", {"n": i}, id=f"c{i}"))
    run_burst(env)
    assert len(runs(tally)) == 50

    # The same ids again (other params: the key names the command), twice in one batch.
    for i in range(10):
        await corec_redis.xadd(stream, payload("tally", {"n": 100 + i}, id=f"c{i}"))
        await corec_redis.xadd(stream, payload("tally", {"n": 200 + i}, id=f"c{i}"))
    # A new id sent three times in one batch runs once.
    for _ in range(3):
        await corec_redis.xadd(stream, payload("tally", {"n": 7}, id="fresh"))
    run_burst(env)
    assert sorted(runs(tally)) == sorted([f"c{i}" for i in range(50)] + ["fresh"])

    bodies = [orjson.loads(f[b"payload"]) for _e, f in await corec_redis.xrange(
        corec_streams["stream_out"]
    )]  # fmt: skip
    again = [b for b in bodies[50:] if b["id"].startswith("c")]
    assert len(again) == 20
    for body in again:
        assert body["status"] == "ok" and body["replayed"] is True
        assert body["result"] == {"n": int(body["id"][1:]), "key": body["id"]}  # the first run's
    fresh = [b for b in bodies if b["id"] == "fresh"]
    assert len(fresh) == 3 and sum(bool(b.get("replayed")) for b in fresh) == 2

    # The consumer group deleted: re-created from the start, every entry is delivered again,
    # answered from its record, and nothing runs a second time.
    await corec_redis.xgroup_destroy(stream, group)
    before = len(bodies)
    run_burst(env)
    bodies = [orjson.loads(f[b"payload"]) for _e, f in await corec_redis.xrange(
        corec_streams["stream_out"]
    )]  # fmt: skip
    assert len(bodies) - before == 73
    assert all(b["replayed"] is True for b in bodies[before:])
    assert len(runs(tally)) == 51
    assert await pending(corec_redis, stream, group) == 0


async def test_with_records_off_delivery_is_at_least_once(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Path
) -> None:
    """The documented contrast: without records nothing remembers a finished command."""
    tally = tmp_path / "tally"
    env = worker_env(corec_streams, tally, records=False)
    for _ in range(2):
        await corec_redis.xadd(corec_streams["stream_in"], payload("tally", {}, id="same"))
        run_burst(env)
    assert runs(tally) == ["same", "same"]


async def test_dead_consumers_are_removed_once_idle_and_owning_nothing(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Path
) -> None:
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    env = worker_env(corec_streams, tmp_path / "tally", dead_consumer_idle_ms=1500)
    for i in range(20):
        await corec_redis.xadd(stream, payload("echo", {"n": i}))
    victim = start_worker(env, "victim")
    try:
        for _ in range(200):
            if await corec_redis.xlen(corec_streams["stream_out"]) == 20:
                break
            await asyncio.sleep(0.05)
        for _ in range(200):  # its last commit is acknowledged
            if await pending(corec_redis, stream, group) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pending(corec_redis, stream, group) == 0
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
    # A consumer that still owns an entry is never removed, however idle.
    await corec_redis.xadd(stream, payload("echo", {"n": 99}))
    await corec_redis.xreadgroup(group, "owner-of-one", {stream: ">"}, count=1)

    def names(rows: list[dict[Any, Any]]) -> set[str]:
        return {r["name"].decode() for r in rows}

    assert names(await corec_redis.xinfo_consumers(stream, group)) >= {"victim", "owner-of-one"}
    survivor = start_worker(env, "survivor")
    try:
        for _ in range(200):
            if "victim" not in names(await corec_redis.xinfo_consumers(stream, group)):
                break
            await asyncio.sleep(0.05)
        left = names(await corec_redis.xinfo_consumers(stream, group))
    finally:
        survivor.send_signal(signal.SIGTERM)
        _out, err = survivor.communicate(timeout=30)
    assert survivor.returncode == 0, err.decode()[-2000:]
    assert "victim" not in left
    assert {"owner-of-one", "survivor"} <= left


@pytest.mark.postgres
async def test_a_refusal_not_about_content_holds_the_batch_and_loses_nothing(
    corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Path, corec_postgres_schema_url: str
) -> None:
    """A schema changed under the worker (a renamed column) is no fault of the commands: the
    batch is held, nothing is answered or dead-lettered, and all of it commits once fixed."""
    import asyncpg

    stream, group = corec_streams["stream_in"], corec_streams["group"]
    tally = tmp_path / "tally"
    env = worker_env(corec_streams, tally, records=True, database_url=corec_postgres_schema_url)
    await corec_redis.xadd(stream, payload("tally", {}, id="first"))
    run_burst(env)  # creates the schema
    conn = await asyncpg.connect(corec_postgres_schema_url)
    try:
        await conn.execute("ALTER TABLE corec_commands RENAME COLUMN duration_ms TO gone")
        for i in range(20):
            await corec_redis.xadd(stream, payload("tally", {"n": i}, id=f"h{i}"))
        worker = start_worker(env, "holder")
        try:
            for _ in range(200):
                if len(runs(tally)) == 21:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a few attempts to write the records
            assert await pending(corec_redis, stream, group) == 20
            assert await corec_redis.xlen(corec_streams["dead_letter_stream"]) == 0
            await conn.execute("ALTER TABLE corec_commands RENAME COLUMN gone TO duration_ms")
            for _ in range(300):
                if await pending(corec_redis, stream, group) == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            _out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err.decode()[-2000:]
        assert "holding it" in err.decode()
        rows = await conn.fetchval("SELECT count(*) FROM corec_commands WHERE status = 'ok'")
    finally:
        await conn.close()
    assert rows == 21
    assert await pending(corec_redis, stream, group) == 0
    assert await corec_redis.xlen(corec_streams["dead_letter_stream"]) == 0
    assert len(runs(tally)) == 21  # each ran once
