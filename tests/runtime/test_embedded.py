"""The embedded Valkey server: started on demand, shared, persisted, never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis as syncredis
from shared_helpers import pid_alive, wait_until

from corec_plugin_kit.runtime.embedded import EmbeddedValkey, socket_answers

pytestmark = pytest.mark.timeout(90)


def kit(cwd: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREC_")}
    env.update({"COREC_KERNEL__METRICS_PORT": "0", "COREC_KERNEL__RECORDS": "false", **env_extra})
    return subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_send_then_run_on_the_embedded_default_and_nothing_is_left_running(
    tmp_path: Path,
) -> None:
    for args in (["ping", "--id", "one"], ["ping", "--flat", "--id", "two"], ["nope", "--id", "3"]):
        done = kit(tmp_path, "send", *args)
        assert done.returncode == 0, done.stderr
    sock = tmp_path / ".corec" / "valkey" / "valkey.sock"
    assert not socket_answers(sock), "send must not leave its server running"

    ran = kit(tmp_path, "run", "--burst")
    assert ran.returncode == 0, ran.stderr
    assert "processed=3" in ran.stderr
    assert not socket_answers(sock)

    server = EmbeddedValkey(tmp_path / ".corec")
    client = syncredis.Redis.from_url(server.ensure())
    try:  # the results survived two server restarts (append-only file)
        got = {
            orjson.loads(f[b"payload"])["id"]: orjson.loads(f[b"payload"])
            for _e, f in client.xrange("corec_responses")
        }
        assert got["one"]["status"] == "ok" and got["two"]["result"]["pong"] is True
        assert got["3"]["error"]["type"] == "unknown_action"
        assert client.xlen("corec_dead_letters") == 1
    finally:
        client.close()
        server.stop()


def test_a_running_server_is_reused_and_left_to_its_starter(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / ".corec")
    server.ensure()
    assert server.owned
    pid = server.process.pid if server.process else 0
    try:
        done = kit(tmp_path, "send", "ping", "--id", "shared")
        assert done.returncode == 0, done.stderr
        assert pid_alive(pid) and socket_answers(server.socket)  # not stopped by the reuser
        again = EmbeddedValkey(tmp_path / ".corec")
        assert again.ensure() == server.url and not again.owned
        client = syncredis.Redis.from_url(server.url)
        assert client.xlen("corec_commands") == 1
        client.close()
    finally:
        server.stop()
    assert not pid_alive(pid)  # our child: stopped and reaped


def test_server_dies_with_its_starter_even_on_sigkill(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from corec_plugin_kit.runtime.embedded import EmbeddedValkey\n"
        "s = EmbeddedValkey(sys.argv[1]); s.ensure()\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / ".corec")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert starter.stdout is not None
        server_pid = int(starter.stdout.readline())
        assert pid_alive(server_pid)
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        # Not our child: an orphan that exited may stay a zombie of PID 1, which is dead enough.
        wait_until(
            lambda: not pid_alive(server_pid, zombie_alive=False),
            timeout=10,
            what="the embedded server to exit with its starter (orphaned?)",
        )
    finally:
        if starter.poll() is None:
            starter.kill()
        starter.communicate()


def test_bad_redis_url_and_unreachable_server_are_typed_errors(tmp_path: Path) -> None:
    bad = kit(tmp_path, "send", "ping", COREC_REDIS_URL="http://nope")
    assert bad.returncode == 3 and "redis_url must start with" in bad.stderr
    down = kit(tmp_path, "send", "ping", COREC_REDIS_URL="redis://127.0.0.1:1")
    assert down.returncode == 5 and "cannot reach Redis" in down.stderr
    assert "Traceback" not in down.stderr + bad.stderr


def test_check_reports_each_dependency(tmp_path: Path, corec_redis_url: str) -> None:
    ok = kit(tmp_path, "check", COREC_REDIS_URL=corec_redis_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[ok ] redis" in ok.stdout
    down = kit(tmp_path, "check", COREC_REDIS_URL="redis://127.0.0.1:1")
    assert down.returncode == 5 and "[FAIL] redis" in down.stdout
    broken = tmp_path / "broken.json"
    broken.write_text('{"kernel": {"concurrency": "many", "batch_size": -1}}')
    cfg = kit(tmp_path, "check", str(broken))
    assert cfg.returncode == 3
    assert "kernel.concurrency" in cfg.stdout and "kernel.batch_size" in cfg.stdout
