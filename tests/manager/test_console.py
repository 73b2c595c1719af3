"""``corec-kit manager console`` over HTTP: a real console process, a real worker and Redis.

What a browser does is in test_console_browser.py; here are the rules a script or an attacker
meets: who may read, who may change, what a page never shows, and the API's answers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as syncredis
from console_helpers import Client, Console, console_env, start_console, start_worker, stop
from shared_helpers import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def r(corec_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(corec_redis_url)
    yield client
    client.close()


@pytest.fixture
def env(corec_streams: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    return console_env(corec_streams, tmp_path, max_deliveries=1)


@pytest.fixture
def console(env: dict[str, str]) -> Iterator[Console]:
    running = start_console(env)
    yield running
    running.stop()


@pytest.fixture
def worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(env)
    yield proc
    stop(proc)


def dead_letter(r: syncredis.Redis, streams: dict[str, Any], action: str = "echo",
                key: str = "k1", error_type: str = "handler_error",
                message: str = "it failed") -> str:  # fmt: skip
    """A dead letter as the worker writes one: the original fields and the kit's own."""
    payload = orjson.dumps({"action": action, "params": {"n": 1}, "id": key})
    entry_id = r.xadd(streams["dead_letter_stream"], {
        "payload": payload, "error": orjson.dumps({"type": error_type, "message": message}),
        "deliveries": "1", "last_consumer": "c1",
        "failed_at": datetime.now(timezone.utc).isoformat(),
    })  # fmt: skip
    return entry_id.decode()


def test_loopback_reads_are_open_and_writes_need_the_token(
    console: Console, r: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    ref = dead_letter(r, corec_streams)
    client = Client(console.url)
    for path in ("/", "/workers", "/processors", "/actions/echo", "/dead-letters", "/history"):
        page = client.get(path)
        assert page.status == 200, (path, page.text[:300])
        assert "read-only" in page.text
        # Never framed by another page (a replay button clickjacked), no outside script.
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
    # No session: refused, and the dead letter stays.
    refused = client.post("/api/dlq/replay", {"ids": [ref]})
    assert refused.status == 403 and "sign in" in refused.json()["error"]["message"]
    refused = client.post("/api/dlq/delete", {"ids": [ref]})
    assert refused.status == 403
    refused = client.post("/api/send", {"action": "echo", "params": {"n": 1}})
    assert refused.status == 403
    assert r.xlen(corec_streams["dead_letter_stream"]) == 1
    assert r.xlen(corec_streams["stream_in"]) == 0
    # The printed token signs in: a cookie, and the same page without the token.
    assert console.token is not None
    signed = client.sign_in(console.token)
    assert signed.status == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"]
    # Named per port: two consoles on one host keep their own sessions.
    assert cookie.startswith(f"corec_console_{console.url.rstrip('/').rsplit(':', 1)[1]}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert console.token not in cookie
    # Signed in, without the page's CSRF value: refused.
    refused = client.post("/api/dlq/replay", {"ids": [ref]})
    assert refused.status == 403 and "CSRF" in refused.json()["error"]["message"]
    csrf = client.csrf()
    # With it, from another site (the browser sends Origin): refused.
    evil = client.post("/api/dlq/replay", {"ids": [ref]},
                       headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})  # fmt: skip
    assert evil.status == 403 and "cross-site" in evil.json()["error"]["message"]
    assert r.xlen(corec_streams["dead_letter_stream"]) == 1
    done = client.post("/api/dlq/replay", {"ids": [ref]},
                       headers={"X-CSRF-Token": csrf, "Origin": console.origin})  # fmt: skip
    assert done.status == 200, done.text
    (replayed,) = done.json()["replayed"]
    assert replayed["ref"] == ref  # the page knows its row's command id by this ref
    assert r.xlen(corec_streams["dead_letter_stream"]) == 0
    assert r.xlen(corec_streams["stream_in"]) == 1
    # DNS rebinding: another name pointed at 127.0.0.1 reads nothing, even on open pages.
    port = console.url.rstrip("/").rsplit(":", 1)[1]
    rebound = Client(console.url)
    for path in ("/", "/dead-letters", "/api/overview"):
        page = rebound.get(path, headers={"Host": f"attacker.example:{port}"})
        assert page.status == 421 and "k1" not in page.text, path
    assert rebound.get("/", headers={"Host": f"localhost:{port}"}).status == 200
    # A wrong token signs nobody in.
    stranger = Client(console.url)
    assert stranger.get("/?token=not-the-token").status == 401
    assert stranger.cookie is None


def test_a_non_loopback_bind_needs_a_token(env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "manager", "console", "--host", "0.0.0.0",
         "--port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "refusing to serve the console on 0.0.0.0 without a token" in run.stderr
    assert "--token" in run.stderr and "COREC_CONSOLE_TOKEN" in run.stderr
    assert "Traceback" not in run.stderr
    short = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "manager", "console", "--token", "abc"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert short.returncode == 2 and "too short" in short.stderr


def test_with_a_token_every_page_needs_it(env: dict[str, str], r: syncredis.Redis,
                                          corec_streams: dict[str, Any]) -> None:  # fmt: skip
    token = "a-token-from-the-environment-0123"
    running = start_console({**env, "COREC_CONSOLE_TOKEN": token}, "--host", "0.0.0.0")
    try:
        assert running.token is None  # not printed: the operator has it
        assert token not in "".join(running.output)
        client = Client(running.url.replace("0.0.0.0", "127.0.0.1"))
        for path in ("/", "/dead-letters", "/history", "/fragments/overview"):
            assert client.get(path).status == 401, path
        assert client.get("/api/overview").status == 401
        # A script: the bearer token, no cookie, no CSRF.
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/overview", headers=bearer).status == 200
        ref = dead_letter(r, corec_streams)
        assert client.post("/api/dlq/delete", {"ids": [ref]},
                           headers={"Authorization": "Bearer wrong"}).status == 403  # fmt: skip
        gone = client.post("/api/dlq/delete", {"ids": [ref]}, headers=bearer)
        assert gone.status == 200 and gone.json()["deleted"] == [ref]
        assert r.xlen(corec_streams["dead_letter_stream"]) == 0
    finally:
        running.stop()


def test_send_and_result_through_the_api(console: Console, worker: Any) -> None:
    client = Client(console.url)
    assert console.token is not None
    client.sign_in(console.token)
    headers = {"X-CSRF-Token": client.csrf()}
    sent = client.post("/api/send", {"action": "echo", "params": {"n": 7, "text": "hi"}},
                       headers=headers)  # fmt: skip
    assert sent.status == 200, sent.text
    outcome = sent.json()
    answer = client.get(f"/api/result?id={outcome['id']}&after={outcome['entry_id']}")
    result = answer.json()["result"]
    assert result["status"] == "ok" and result["result"] == {"n": 7, "text": "hi"}
    # Wrong params: the worker's own validation answers, as for any producer.
    bad = client.post("/api/send", {"action": "echo", "params": {"n": "x"}}, headers=headers)
    got = client.get(f"/api/result?id={bad.json()['id']}&after={bad.json()['entry_id']}")
    assert got.json()["result"]["error"]["type"] == "invalid_params"
    # A body that is not what the API takes: a clear 400, not a traceback.
    for body in ({"params": {}}, {"action": "echo", "params": [1]}, [1, 2]):
        refused = client.post("/api/send", body, headers=headers)
        assert refused.status == 400 and "Traceback" not in refused.text, body
    assert client.post("/api/dlq/replay", {}, headers=headers).status == 400
    assert client.post("/api/dlq/replay", {"ids": ["1-0"], "all": True},
                       headers=headers).status == 400  # fmt: skip


def test_dead_letters_are_filtered_inspected_and_deleted(
    console: Console, r: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    refs = [dead_letter(r, corec_streams, action="echo", key=f"e{i}") for i in range(3)]
    refs.append(dead_letter(r, corec_streams, action="sleep", key="s0", error_type="timeout"))
    # As a worker writes one: type dead_letter, the last failure's own type in its details.
    worker_made = {"type": "dead_letter", "message": "failed 5 times",
                   "details": {"last_error": {"type": "timeout", "message": "slow"}}}  # fmt: skip
    payload = orjson.dumps({"action": "sleep", "params": {}, "id": "s1"})
    refs.append(r.xadd(corec_streams["dead_letter_stream"],
                       {"payload": payload, "error": orjson.dumps(worker_made),
                        "deliveries": "5"}).decode())  # fmt: skip
    client = Client(console.url)
    page = client.get("/dead-letters?action=echo")
    assert [m for m in refs if m in page.text] == refs[:3]
    page = client.get("/dead-letters?error=timeout")
    assert refs[3] in page.text and refs[4] in page.text and refs[0] not in page.text
    first = client.get("/dead-letters?limit=2")
    assert refs[0] in first.text and refs[2] not in first.text
    nxt = re.search(r'id="next-page" href="\?([^"]+)"', first.text)
    assert nxt is not None
    second = client.get("/dead-letters?" + nxt.group(1).replace("&amp;", "&"))
    assert refs[2] in second.text and refs[3] in second.text and refs[0] not in second.text
    entry = client.get(f"/dead-letters/entry?ref={refs[3]}")
    assert entry.status == 200 and "timeout" in entry.text and "s0" in entry.text
    assert client.get("/dead-letters/entry?ref=1-1").status == 404
    assert console.token is not None
    client.sign_in(console.token)
    headers = {"X-CSRF-Token": client.csrf()}
    gone = client.post("/api/dlq/delete", {"ids": [*refs[:2], "1-1"]}, headers=headers)
    assert gone.json()["deleted"] == refs[:2] and gone.json()["missing"] == ["1-1"]
    every = client.post("/api/dlq/delete", {"all": True}, headers=headers)
    assert every.json()["count"] == 3  # all those present when it started
    assert r.xlen(corec_streams["dead_letter_stream"]) == 0


def test_pages_escape_what_producers_wrote_and_never_show_credentials(
    corec_streams: dict[str, Any], tmp_path: Path, r: syncredis.Redis
) -> None:
    # PostgreSQL here trusts local connections, so a password in the URL is accepted and unused.
    database = "postgresql://postgres:pg-secret-pw@127.0.0.1:5432/test"
    env = console_env(corec_streams, tmp_path, database_url=database)
    hostile = "<script>alert(1)</script>"
    dead_letter(r, corec_streams, action=hostile, key=hostile,
                message=f"cannot reach redis://user:redis-secret-pw@db:6379 {hostile}")  # fmt: skip
    # Garbage in the workers' figures hash (anyone with Redis write access can put it there).
    odd = {"consumer": hostile, "at": time.time(), "actions": {hostile: 1}}
    garbage = {"x": b"not json", "y": b"[1,2]", "z": orjson.dumps(odd)}
    r.hset(f"{corec_streams['stream_in']}:workers", mapping=garbage)
    running = start_console(env)
    try:
        client = Client(running.url)
        for path in ("/", "/fragments/overview", "/workers", "/dead-letters", "/history",
                     "/processors", "/api/overview"):  # fmt: skip
            page = client.get(path)
            assert page.status == 200, (path, page.text[:500])
            assert hostile not in page.text, path
            assert "pg-secret-pw" not in page.text and "redis-secret-pw" not in page.text, path
        ref = r.xrange(corec_streams["dead_letter_stream"])[0][0].decode()
        entry = client.get(f"/dead-letters/entry?ref={ref}")
        assert "&lt;script&gt;" in entry.text and hostile not in entry.text
        assert "redis-secret-pw" not in entry.text
    finally:
        running.stop()


def test_history_filters(console: Console, worker: Any, env: dict[str, str],
                         corec_streams: dict[str, Any], r: syncredis.Redis) -> None:  # fmt: skip
    commands = [("echo", {"n": i}, f"h{i}") for i in range(3)] + [("fail", {}, "hf")]
    for action, params, key in commands:
        body = {"action": action, "params": params, "id": key}
        r.xadd(corec_streams["stream_in"], {"payload": orjson.dumps(body)})
    client = Client(console.url)
    wait_until(lambda: "hf" in client.get("/history").text, timeout=30, what="records")
    ok = client.get("/history?status=ok").text
    assert all(f"h{i}" in ok for i in range(3)) and ">hf<" not in ok
    failed = client.get("/history?action=fail").text
    assert "hf" in failed and "h0" not in failed
    one = client.get("/history?id=h1").text
    assert "h1" in one and "h0" not in one and "h2" not in one
    future = client.get("/history?since=2999-01-01T00:00:00Z").text
    assert "no records match" in future
    past = client.get("/history?until=2000-01-01T00:00:00Z").text
    assert "no records match" in past
    assert client.get("/history?since=not-a-time").status == 400


def test_the_workers_page_tells_alive_from_gone(
    console: Console, env: dict[str, str], r: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    proc = start_worker(env)
    try:
        client = Client(console.url)
        row = f'<tr data-consumer="{os.uname().nodename}-{proc.pid}" class="alive">'
        body = {"action": "echo", "params": {"n": 1}, "id": "w1"}
        r.xadd(corec_streams["stream_in"], {"payload": orjson.dumps(body)})
        wait_until(lambda: row in client.get("/fragments/workers").text, timeout=30,
                   what="the worker's row, alive")  # fmt: skip
        # Killed: no goodbye, its consumer stays in the group and its figures age out.
        proc.kill()
        gone = row.replace('class="alive"', 'class="gone"')
        wait_until(lambda: gone in client.get("/fragments/workers").text, timeout=30,
                   what="the killed worker's row, gone")  # fmt: skip
    finally:
        stop(proc)


def test_partitions_are_counted_and_replayed_by_ref(
    corec_streams: dict[str, Any], tmp_path: Path, r: syncredis.Redis
) -> None:
    from corec_plugin_kit.config import KernelConfig
    from corec_plugin_kit.partitions import stream_sets

    env = console_env(corec_streams, tmp_path, partitions=3)
    config = {k: v for k, v in corec_streams.items() if k != "redis_url"}
    sets = stream_sets(KernelConfig(**config, partitions=3))
    for streams in (sets[1], sets[2], sets[2]):
        dead_letter(r, {"dead_letter_stream": streams.dead_letter_stream})
    running = start_console(env)
    try:
        client = Client(running.url)
        overview = client.get("/api/overview").json()
        assert overview["dead_letters"] == 3
        page = client.get("/dead-letters").text
        refs = re.findall(r'<tr data-ref="(\d/[0-9-]+)">', page)
        assert [ref.split("/")[0] for ref in refs] == ["1", "2", "2"]
        assert running.token is not None
        client.sign_in(running.token)
        done = client.post("/api/dlq/replay", {"ids": [refs[2]]},
                           headers={"X-CSRF-Token": client.csrf()})  # fmt: skip
        (replayed,) = done.json()["replayed"]
        assert replayed["ref"] == refs[2] and replayed["stream_in"] == sets[2].stream_in
        assert r.xlen(sets[2].stream_in) == 1 and r.xlen(sets[2].dead_letter_stream) == 1
    finally:
        running.stop()


def test_without_the_extra_it_says_what_to_install(env: dict[str, str]) -> None:
    # Uninstalling Starlette from the test environment is not an option: the interpreter is
    # told it is missing instead (a None entry in sys.modules makes its import fail).
    code = (
        "import sys; sys.modules['starlette'] = None; sys.argv = ['corec-kit', 'manager', "
        "'console', '--port', '0']; from corec_plugin_kit.cli.core import main; main()"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert run.returncode == 1
    assert "pip install 'corec-manager[console]'" in run.stderr
    assert "Traceback" not in run.stderr
