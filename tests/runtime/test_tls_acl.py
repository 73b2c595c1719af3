"""Redis over TLS, least-privilege Redis users (ACL), PostgreSQL ``sslmode``: the real CLI in
subprocesses against servers this module starts (docs/operations.md, "TLS and Redis users").

* TLS: a TLS-only ``redis-server`` requiring client certificates, with a CA, server and client
  certificate made by ``openssl`` (redis_servers.py). ``run --burst``, ``send --wait`` and
  ``check`` work with the ``kernel.redis_tls_*`` keys; no client certificate, or a CA that did
  not sign the server's, is one line and exit 5; a missing CA file is one line and exit 3.
* ACL: a plain ``redis-server`` whose users are made from the ``ACL SETUSER`` lines of
  docs/operations.md, as written (stream names and passwords substituted). The worker runs end
  to end under its user (results, dead letters, the manager's commands, a reclaim after
  SIGKILL) with nothing refused in ``ACL LOG``; a producer sends and waits on its own reply
  stream and is refused everything else.
* PostgreSQL: ``sslmode`` in ``kernel.database_url`` reaches asyncpg.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis
from redis_servers import (
    Certs,
    Run,
    Server,
    acl_denials,
    acl_setuser,
    kit,
    kit_env,
    kit_popen,
    make_certs,
    start_acl_server,
    start_tls_server,
)
from shared_helpers import wait_until

from corec_plugin_kit.config import KernelConfig, load_settings
from corec_plugin_kit.errors import ConfigError
from corec_plugin_kit.runtime.connection import tls_options

pytestmark = pytest.mark.timeout(240)

OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SECRET = "hunter2-tls-secret"  # must never be printed


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def tls_redis(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_tls_server(tmp_path_factory.mktemp("tls-redis"), certs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_acl_server(tmp_path_factory.mktemp("acl-redis"))
    try:
        yield server
    finally:
        server.stop()


def new_streams() -> dict[str, str]:
    """Kernel keys for streams and group of one test: ``{t<tag>}:commands``..."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    return {
        "stream_in": f"{{{tag}}}:commands",
        "stream_out": f"{{{tag}}}:results",
        "dead_letter_stream": f"{{{tag}}}:dead",
        "group": f"g{tag}",
    }


def tls_keys(server: Server, certs: Certs, **override: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "redis_url": f"rediss://127.0.0.1:{server.port}/0",
        "redis_tls_ca_file": certs.ca,
        "redis_tls_cert_file": certs.client_cert,
        "redis_tls_key_file": certs.client_key,
    }
    keys.update(override)
    return keys


def one_line_error(run: Run, says: str) -> None:
    """Failed with exactly one ``Error:`` line on stderr that says ``says``, no traceback."""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.output
    assert says in lines[0], run.output
    assert "Traceback" not in run.output


def entries(client: syncredis.Redis, stream: str) -> dict[str, dict[str, Any]]:
    """Results (or dead letters) on ``stream`` by command id."""
    out = {}
    for _entry_id, fields in client.xrange(stream):
        body = json.loads(fields["payload"]) if "payload" in fields else {}
        out[fields.get("id") or body.get("id") or _entry_id] = {**fields, "body": body}
    return out


# --------------------------------------------------------------------------- TLS


def test_worker_send_wait_and_check_over_tls(
    tls_redis: Server, certs: Certs, tmp_path: Path
) -> None:
    streams = new_streams()
    env = kit_env(**tls_keys(tls_redis, certs), **streams)
    admin = tls_redis.admin()

    checked = kit("check", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.output
    assert f"[ok ] redis: rediss://127.0.0.1:{tls_redis.port}/0 answers" in checked.stdout

    for n in range(3):
        sent = kit("send", "echo", "-p", f"n:={n}", "--id", f"e{n}", env=env, cwd=tmp_path)
        assert sent.returncode == 0, sent.output
    waiter = kit_popen("send", "echo", "-p", "n:=99", "--id", "waited", "--wait",
                       "--timeout", "90", env=env, cwd=tmp_path)  # fmt: skip
    try:
        wait_until(lambda: admin.xlen(streams["stream_in"]) == 4, 60, "send --wait's XADD")
        worker = kit("run", "--burst", env=env, cwd=tmp_path)
        out, err = waiter.communicate(timeout=90)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert worker.returncode == 0, worker.output
    assert waiter.returncode == 0, out + err
    answer = json.loads(out)
    assert (answer["id"], answer["status"], answer["result"]["n"]) == ("waited", "ok", 99)

    results = entries(admin, streams["stream_out"])
    assert {key: r["status"] for key, r in results.items()} == {
        "e0": "ok", "e1": "ok", "e2": "ok", "waited": "ok"
    }  # fmt: skip
    assert admin.xpending(streams["stream_in"], streams["group"])["pending"] == 0
    # The start-up line names the server, never a certificate or key file.
    assert f"rediss://127.0.0.1:{tls_redis.port}/0" in worker.stderr
    for run in (checked, worker):
        assert str(certs.folder) not in run.output, run.output


COMMANDS = {
    "check": ("check",),
    "send": ("send", "echo", "-p", "n:=1"),
    "send --wait": ("send", "echo", "-p", "n:=1", "--wait", "--timeout", "5"),
    "run": ("run", "--burst"),
}


def failed_redis(run: Run, command: tuple[str, ...], says: str, code: int) -> None:
    assert run.returncode == code, run.output
    if command[0] == "check":
        [line] = [x for x in run.stdout.splitlines() if x.startswith("[FAIL]")]
        assert says in line, run.output
        assert "Traceback" not in run.output
    else:
        one_line_error(run, says)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_client_without_certificate_is_refused_in_one_line(
    tls_redis: Server, certs: Certs, tmp_path: Path, command: str
) -> None:
    keys = tls_keys(tls_redis, certs, redis_tls_cert_file=None, redis_tls_key_file=None)
    keys["redis_url"] = f"rediss://corec:{SECRET}@127.0.0.1:{tls_redis.port}/0"
    run = kit(*COMMANDS[command], env=kit_env(**keys, **new_streams()), cwd=tmp_path)
    failed_redis(run, COMMANDS[command], "cannot reach Redis", 5)
    assert "set kernel.redis_tls_cert_file and kernel.redis_tls_key_file" in run.output
    assert SECRET not in run.output


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_ca_that_did_not_sign_the_server_is_refused_in_one_line(
    tls_redis: Server, certs: Certs, tmp_path: Path, command: str
) -> None:
    keys = tls_keys(tls_redis, certs, redis_tls_ca_file=certs.other_ca)
    keys["redis_url"] = f"rediss://corec:{SECRET}@127.0.0.1:{tls_redis.port}/0"
    run = kit(*COMMANDS[command], env=kit_env(**keys, **new_streams()), cwd=tmp_path)
    failed_redis(run, COMMANDS[command], "does not chain to kernel.redis_tls_ca_file", 5)
    assert "CERTIFICATE_VERIFY_FAILED" in run.output
    assert SECRET not in run.output and str(certs.folder) not in run.output


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_ca_file_is_a_config_error_naming_key_and_path(
    tls_redis: Server, certs: Certs, tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "no-such-ca.pem"
    keys = tls_keys(tls_redis, certs, redis_tls_ca_file=missing)
    run = kit(*COMMANDS[command], env=kit_env(**keys, **new_streams()), cwd=tmp_path)
    assert run.returncode == 3, run.output
    says = f"kernel.redis_tls_ca_file: no such file: {missing}"
    if command == "check":
        assert run.stdout.startswith(f"[FAIL] config: invalid configuration (1 problem): {says}")
        assert "Traceback" not in run.output
    else:
        one_line_error(run, says)


def test_the_host_must_be_in_the_server_certificate(
    tls_redis: Server, certs: Certs, tmp_path: Path
) -> None:
    # The server also listens on 127.0.0.2 (where the loopback has it: Linux), which its
    # certificate does not name.
    probe = socket.socket()
    try:
        probe.settimeout(2)
        probe.connect(("127.0.0.2", tls_redis.port))
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    finally:
        probe.close()
    keys = tls_keys(tls_redis, certs, redis_url=f"rediss://127.0.0.2:{tls_redis.port}/0")
    run = kit("check", env=kit_env(**keys), cwd=tmp_path)
    failed_redis(run, ("check",), "does not name the host of kernel.redis_url", 5)
    assert "IP address mismatch" in run.output
    keys["redis_url"] += "?ssl_check_hostname=false"
    assert kit("check", env=kit_env(**keys), cwd=tmp_path).returncode == 0


# ------------------------------------------------------------------ TLS config, no server


def test_tls_keys_need_a_rediss_url_and_existing_files(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("not checked here")
    for url in ("redis://127.0.0.1:6379/0", "unix:///run/redis.sock"):
        problems = load_settings(
            environ={"COREC_REDIS_URL": url, "COREC_REDIS_TLS_CA_FILE": str(pem)}
        ).problems
        assert problems == [
            "kernel.redis_tls_ca_file: set, but kernel.redis_url is not a rediss:// URL, so "
            "TLS is off; write rediss://host:port, or unset this key"
        ]
    # Unset: the embedded server (a unix socket) is used and the keys are not read.
    assert load_settings(environ={"COREC_REDIS_TLS_CA_FILE": str(pem)}).problems == []
    problems = load_settings(
        environ={
            "COREC_REDIS_URL": "rediss://h:6380/0",
            "COREC_REDIS_TLS_CERT_FILE": str(tmp_path),
            "COREC_REDIS_TLS_KEY_FILE": str(tmp_path / "gone.key"),
        }
    ).problems
    assert problems == [
        f"kernel.redis_tls_cert_file: not a file: {tmp_path} (it must hold the client "
        "certificate, PEM, that the Redis server checks)",
        f"kernel.redis_tls_key_file: no such file: {tmp_path / 'gone.key'} (it must hold the "
        "unencrypted private key, PEM, of redis_tls_cert_file)",
    ]
    # A bad URL and a TLS key: the URL's problem alone (the key is not judged against it).
    problems = load_settings(
        environ={"COREC_REDIS_URL": "rediss://h:99999/0", "COREC_REDIS_TLS_CA_FILE": str(pem)}
    ).problems
    assert len(problems) == 1 and problems[0].startswith("kernel.redis_url: the port"), problems


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("ssl_ca_certs=/etc/ca.pem", "set kernel.redis_tls_ca_file (COREC_REDIS_TLS_CA_FILE)"),
        ("ssl_certfile=/c.pem", "set kernel.redis_tls_cert_file"),
        ("ssl_keyfile=/k.pem", "set kernel.redis_tls_key_file"),
        ("ssl_ca_cert=/etc/ca.pem", "'ssl_ca_cert' is not one redis-py reads here"),
        (f"password={SECRET}&foo=1", "'foo' is not one redis-py reads here"),
        ("ssl_cert_reqs=maybe", "ssl_cert_reqs must be none, optional or required"),
        ("ssl_check_hostname=off", "ssl_check_hostname must be true or false"),
        ("socket_timeout=soon", "socket_timeout must be seconds"),
        ("db=zero", "db must be a database number"),
    ],
)
def test_redis_url_query_is_checked(query: str, says: str) -> None:
    problems = load_settings(environ={"COREC_REDIS_URL": f"rediss://h:6380/0?{query}"}).problems
    assert len(problems) == 1 and problems[0].startswith("kernel.redis_url: "), problems
    assert says in problems[0]
    assert SECRET not in problems[0]


def test_tls_query_parameters_need_rediss() -> None:
    [problem] = load_settings(
        environ={"COREC_REDIS_URL": "redis://h:6379/0?ssl_cert_reqs=none"}
    ).problems
    assert "ssl_cert_reqs is a TLS setting: it needs a rediss:// URL" in problem


@pytest.mark.parametrize(
    "url",
    [
        "rediss://h:6380/0?ssl_cert_reqs=required&ssl_check_hostname=false",
        "rediss://u:p@h:6380/0?socket_timeout=2.5&socket_connect_timeout=3&protocol=2",
        "redis://h/0?db=2&client_name=corec&health_check_interval=10&retry_on_timeout=yes",
        "unix:///run/redis.sock?db=1&password=x&max_connections=50",
    ],
)
def test_redis_url_query_that_redis_py_reads_passes(url: str) -> None:
    assert load_settings(environ={"COREC_REDIS_URL": url}).problems == []


def tls_config(**keys: Any) -> KernelConfig:
    return KernelConfig.model_validate({"redis_url": "rediss://127.0.0.1:6380/0", **keys})


def test_tls_files_are_loaded_before_connecting(certs: Certs, tmp_path: Path) -> None:
    good = tls_config(
        redis_tls_ca_file=certs.ca,
        redis_tls_cert_file=certs.client_cert,
        redis_tls_key_file=certs.client_key,
    )
    url = "rediss://127.0.0.1:6380/0"
    assert tls_options(good, url) == {
        "ssl_ca_certs": str(certs.ca),
        "ssl_certfile": str(certs.client_cert),
        "ssl_keyfile": str(certs.client_key),
    }
    assert tls_options(good, "redis://127.0.0.1:6379/0") == {}
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(certs.client_key), "-aes256", "-passout", "pass:x",
         "-out", str(encrypted)], check=True, capture_output=True,
    )  # fmt: skip
    cases = [
        ({"redis_tls_ca_file": garbage}, "kernel.redis_tls_ca_file: cannot load it as PEM"),
        (
            {"redis_tls_cert_file": certs.client_cert, "redis_tls_key_file": certs.server_key},
            "the private key (kernel.redis_tls_key_file) is not the certificate's",
        ),
        (
            {"redis_tls_cert_file": certs.client_cert, "redis_tls_key_file": encrypted},
            "kernel.redis_tls_key_file: the private key is encrypted",
        ),
        (
            {"redis_tls_key_file": certs.client_key},
            "kernel.redis_tls_key_file is set without kernel.redis_tls_cert_file",
        ),
        ({"redis_tls_cert_file": certs.client_cert}, "kernel.redis_tls_cert_file: cannot load"),
    ]
    for keys, says in cases:
        with pytest.raises(ConfigError) as caught:
            tls_options(tls_config(**keys), url)
        assert says in caught.value.message
        assert str(tmp_path) not in caught.value.message
        assert str(certs.folder) not in caught.value.message
    # Certificate and key in one file: no key file needed.
    both = tmp_path / "client-and-key.pem"
    both.write_text(certs.client_cert.read_text() + certs.client_key.read_text())
    assert tls_options(tls_config(redis_tls_cert_file=both), url)["ssl_keyfile"] is None


# --------------------------------------------------------------------------- ACL


def documented_acl() -> dict[str, list[list[str]]]:
    """The ``ACL SETUSER`` lines of docs/operations.md's TLS and ACL section, by user."""
    text = OPERATIONS_MD.read_text(encoding="utf-8")
    section = text.split("## TLS and Redis users (ACL)", 1)[1].split("\n## ", 1)[0]
    users: dict[str, list[list[str]]] = {}
    for line in section.splitlines():
        if line.startswith("ACL SETUSER "):
            _acl, _setuser, user, *rules = line.split()
            users.setdefault(user, []).append(rules)
    assert set(users) == {"corec-worker", "corec-alice"}, users
    return users


class Users:
    """The documented users on ``server`` for one test's streams (``{t<tag>}:...``), named
    ``<documented name>-<tag>`` so the ACL LOG of each test is its own."""

    def __init__(self, server: Server, streams: dict[str, str]) -> None:
        self.server = server
        self.streams = streams
        self.tag = streams["stream_in"].split("}", 1)[0].lstrip("{")
        self.admin = server.admin()
        self.passwords: dict[str, str] = {}
        docs = documented_acl()
        self.create("worker", docs["corec-worker"])
        for producer in ("alice", "bob"):
            rules = [
                [rule.replace("alice", producer) for rule in line] for line in docs["corec-alice"]
            ]
            self.create(producer, rules)

    def name(self, who: str) -> str:
        return f"corec-{who}-{self.tag}"

    def create(self, who: str, lines: list[list[str]]) -> None:
        password = uuid.uuid4().hex
        self.passwords[who] = password
        for rules in lines:
            rules = [rule.replace("{corec}", f"{{{self.tag}}}") for rule in rules]
            if rules[:2] == ["reset", "on"]:
                acl_setuser(self.admin, self.name(who), password, rules[3:])
            else:
                self.admin.execute_command("ACL", "SETUSER", self.name(who), *rules)

    def url(self, who: str) -> str:
        return f"redis://{self.name(who)}:{self.passwords[who]}@127.0.0.1:{self.server.port}/0"

    def client(self, who: str) -> syncredis.Redis:
        return self.server.client(username=self.name(who), password=self.passwords[who])

    def reply(self, who: str, name: str = "1") -> str:
        return f"{{{self.tag}}}:replies:{who}:{name}"

    def env(self, who: str, **settings: Any) -> dict[str, str]:
        pattern = rf"\{{{self.tag}\}}:replies:[a-z0-9-]+:[A-Za-z0-9_.:-]+"
        return kit_env(redis_url=self.url(who), reply_to_pattern=pattern, **self.streams,
                       **settings)  # fmt: skip

    def denials(self, who: str) -> list[dict[str, Any]]:
        return acl_denials(self.admin, self.name(who))


@pytest.fixture
def users(acl_redis: Server) -> Users:
    return Users(acl_redis, new_streams())


def test_documented_acls_are_the_tested_ones() -> None:
    docs = documented_acl()
    worker = " ".join(" ".join(rules) for rules in docs["corec-worker"])
    for command in ("+xreadgroup", "+xack", "+xautoclaim", "+xclaim", "+multi", "+exec", "+eval"):
        assert command in worker.split()
    assert "~{corec}:commands" in worker and "%W~{corec}:replies:*" in worker
    producer = " ".join(" ".join(rules) for rules in docs["corec-alice"])
    assert "%W~{corec}:commands %R~{corec}:replies:alice:* +ping +xadd +xread" in producer
    assert "{corec}:results" not in producer and "{corec}:dead" not in producer


def send(users: Users, who: str, *args: str, cwd: Path) -> Run:
    run = kit("send", *args, env=users.env(who), cwd=cwd)
    assert run.returncode == 0, run.output
    return run


def test_the_worker_runs_end_to_end_under_its_acl(users: Users, tmp_path: Path) -> None:
    s, admin, mine = users.streams, users.admin, users.reply("alice")
    send(users, "alice", "echo", "-p", "n:=1", "--id", "ok1", "--reply-to", mine, cwd=tmp_path)
    send(users, "alice", "fail", "--id", "refused", "--reply-to", mine, cwd=tmp_path)
    send(users, "alice", "no_such_action", "--id", "unknown", "--reply-to", mine, cwd=tmp_path)
    send(users, "alice", "boom", "--id", "boom", "--reply-to", mine, cwd=tmp_path)
    # Outside reply_to_pattern: refused, answered on stream_out, dead-lettered.
    elsewhere = f"{{{users.tag}}}:not-a-reply-stream"
    send(users, "alice", "echo", "-p", "n:=2", "--id", "outside", "--reply-to", elsewhere,
         cwd=tmp_path)  # fmt: skip

    worker_env = users.env("worker", max_deliveries=1)
    run = kit("run", "--burst", env=worker_env, cwd=tmp_path)
    assert run.returncode == 0, run.output
    assert "processed=5" in run.stderr, run.stderr

    replies = entries(admin, mine)
    assert {k: r["status"] for k, r in replies.items()} == {
        "ok1": "ok", "refused": "error", "unknown": "error", "boom": "error"
    }  # fmt: skip
    assert replies["refused"]["body"]["error"]["type"] == "handler_error"
    assert replies["unknown"]["body"]["error"]["type"] == "unknown_action"
    assert replies["boom"]["body"]["error"]["type"] == "dead_letter"
    outside = entries(admin, s["stream_out"])["outside"]["body"]
    assert (
        outside["error"]["type"] == "invalid_command" and "reply_to" in outside["error"]["message"]
    )
    assert not admin.exists(elsewhere)
    assert admin.xlen(s["dead_letter_stream"]) == 3
    assert admin.xpending(s["stream_in"], s["group"])["pending"] == 0

    # The operators' commands under the worker's user: stats, consumers, dead letters, check.
    for args in (("manager", "stats"), ("manager", "consumers", "--prune"),
                 ("manager", "dlq", "list", "--json"), ("check",)):  # fmt: skip
        done = kit(*args, env=worker_env, cwd=tmp_path)
        assert done.returncode == 0, (args, done.output)
    listed = json.loads(
        kit("manager", "dlq", "list", "--json", env=worker_env, cwd=tmp_path).stdout
    )
    assert sorted(e["action"] for e in listed["entries"]) == ["boom", "echo", "no_such_action"]
    replayed = kit("manager", "dlq", "replay", "--all", env=worker_env, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.output
    assert admin.xlen(s["dead_letter_stream"]) == 0
    assert admin.xinfo_groups(s["stream_in"])[0]["lag"] == 3

    assert users.denials("worker") == []


def test_a_worker_killed_is_reclaimed_under_the_worker_acl(users: Users, tmp_path: Path) -> None:
    s, admin, mine = users.streams, users.admin, users.reply("alice")
    send(users, "alice", "sleep", "-p", "seconds:=1", "--id", "slow", "--reply-to", mine,
         cwd=tmp_path)  # fmt: skip
    env = users.env("worker", claim_idle_ms=600)
    doomed = kit_popen("run", "--consumer", "doomed", env=env, cwd=tmp_path)
    try:
        wait_until(
            lambda: (
                admin.xpending(s["stream_in"], s["group"])["pending"] == 1
                if admin.exists(s["stream_in"]) and admin.xinfo_groups(s["stream_in"])
                else False
            ),
            60,
            "the first worker to take the command",
        )
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)

    def reclaimable() -> bool:
        [row] = admin.xpending_range(s["stream_in"], s["group"], "-", "+", 1)
        return bool(row["consumer"] == "doomed" and row["time_since_delivered"] > 700)

    wait_until(reclaimable, 30, "the killed worker's entry to be idle past claim_idle_ms")
    rescued = kit("run", "--burst", "--consumer", "rescuer", env=env, cwd=tmp_path)
    assert rescued.returncode == 0, rescued.output
    assert "reclaimed=1" in rescued.stderr, rescued.stderr
    answer = entries(admin, mine)["slow"]["body"]
    assert (answer["status"], answer["attempt"]) == ("ok", 2)
    # The dead consumer is pruned under the worker's user (EVAL of the prune script).
    pruned = kit("manager", "consumers", "--prune", "--idle-ms", "1", env=env, cwd=tmp_path)
    assert pruned.returncode == 0, pruned.output
    assert "doomed" not in [c["name"] for c in admin.xinfo_consumers(s["stream_in"], s["group"])]
    assert users.denials("worker") == []


def test_a_producer_sends_and_waits_on_its_own_reply_stream(users: Users, tmp_path: Path) -> None:
    worker = kit_popen("run", env=users.env("worker"), cwd=tmp_path)
    try:
        waited = kit("send", "echo", "-p", "n:=7", "--id", "w1", "--wait", "--timeout", "60",
                     "--reply-to", users.reply("alice", "host1"), env=users.env("alice"),
                     cwd=tmp_path)  # fmt: skip
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert waited.returncode == 0, waited.output
    answer = json.loads(waited.stdout)
    assert (answer["id"], answer["status"], answer["result"]["n"]) == ("w1", "ok", 7)
    assert worker.returncode == 0, err
    assert users.denials("alice") == [] and users.denials("worker") == []


def test_a_producer_may_not_read_or_write_other_streams(users: Users, tmp_path: Path) -> None:
    s, admin = users.streams, users.admin
    for stream in (users.reply("bob"), s["stream_out"], s["dead_letter_stream"]):
        admin.xadd(stream, {"id": "x", "payload": "{}"})
    alice = users.client("alice")
    alice.xadd(s["stream_in"], {"payload": '{"action": "echo", "params": {"n": 1}}'})
    assert alice.xread({users.reply("alice"): "0"}) == []

    refused = {
        "read bob's reply stream": lambda: alice.xread({users.reply("bob"): "0"}),
        "read stream_out": lambda: alice.xread({s["stream_out"]: "0"}),
        "read the dead letters": lambda: alice.xread({s["dead_letter_stream"]: "0"}),
        "write a dead letter": lambda: alice.xadd(s["dead_letter_stream"], {"id": "forged"}),
        "write to bob's reply stream": lambda: alice.xadd(users.reply("bob"), {"id": "forged"}),
        "write to stream_out": lambda: alice.xadd(s["stream_out"], {"id": "forged"}),
        "read stream_in": lambda: alice.xread({s["stream_in"]: "0"}),
        "XRANGE (not granted)": lambda: alice.xrange(users.reply("alice")),
        "XDEL (not granted)": lambda: alice.xdel(s["stream_in"], "0-1"),
    }
    allowed = []
    for what, call in refused.items():
        try:
            call()
        except syncredis.exceptions.NoPermissionError:
            continue
        allowed.append(what)
    assert not allowed, f"alice may {allowed}"
    # ACL LOG counts repeats of one refusal (same user, key or command) in one entry.
    assert sum(int(entry["count"]) for entry in users.denials("alice")) == len(refused)

    # The CLI: `send --wait` reads stream_out unless told its own reply stream: refused, in
    # one line, no traceback (the command itself was queued: XADD is allowed).
    run = kit("send", "echo", "-p", "n:=1", "--wait", "--timeout", "5", env=users.env("alice"),
              cwd=tmp_path)  # fmt: skip
    assert run.returncode != 0, run.output
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no permissions" in lines[0], run.output
    assert "Traceback" not in run.output
    assert users.passwords["alice"] not in run.output


def test_a_wrong_password_or_a_user_without_ping_fail_in_one_line(
    users: Users, tmp_path: Path
) -> None:
    right = users.passwords["alice"]
    users.passwords["alice"] = SECRET
    run = kit("send", "echo", "-p", "n:=1", env=users.env("alice"), cwd=tmp_path)
    one_line_error(run, "refused this client")
    assert "check the user name and password in kernel.redis_url" in run.stderr
    assert run.returncode == 5 and SECRET not in run.output

    users.passwords["alice"] = right
    users.admin.execute_command("ACL", "SETUSER", users.name("alice"), "-ping")
    run = kit("send", "echo", "-p", "n:=1", env=users.env("alice"), cwd=tmp_path)
    one_line_error(run, "the Redis user lacks a permission this needs (PING at least)")
    assert run.returncode == 5 and right not in run.output


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_sslmode_reaches_asyncpg(
    corec_postgres_schema_url: str, tls_redis: Server, certs: Certs, tmp_path: Path
) -> None:
    import asyncio

    import asyncpg

    async def server_has_tls() -> bool:
        try:
            conn = await asyncpg.connect(corec_postgres_schema_url, ssl="require", timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        await conn.close()
        return True

    base = {**tls_keys(tls_redis, certs), **new_streams(), "records": True}
    disable = kit_env(**base, database_url=f"{corec_postgres_schema_url}&sslmode=disable")
    require = kit_env(**base, database_url=f"{corec_postgres_schema_url}&sslmode=require")
    # Whatever the server: verification against a CA that signed nothing must fail.
    verify = kit_env(**base, database_url=f"{corec_postgres_schema_url}&sslmode=verify-full"
                     f"&sslrootcert={certs.other_ca}")  # fmt: skip

    assert (
        kit("send", "echo", "-p", "n:=1", "--id", "pg1", env=disable, cwd=tmp_path).returncode == 0
    )
    ran = kit("run", "--burst", env=disable, cwd=tmp_path)
    assert ran.returncode == 0, ran.output
    history = kit("history", env=disable, cwd=tmp_path)
    assert history.returncode == 0 and "pg1" in history.stdout, history.output

    refused = [verify] if asyncio.run(server_has_tls()) else [verify, require]
    for env in refused:
        for args in (("history",), ("run", "--burst"), ("check",)):
            run = kit(*args, env=env, cwd=tmp_path)
            assert run.returncode == 6, (args, run.output)
            assert "Traceback" not in run.output
            text = run.stderr if args[0] != "check" else run.stdout
            [line] = [x for x in text.splitlines() if "PostgreSQL at" in x]
            assert "cannot be reached" in line, run.output
            if env is require:
                assert "rejected SSL upgrade" in line, run.output
    [problem] = load_settings(
        environ={"COREC_DATABASE_URL": f"{corec_postgres_schema_url}&sslmode=required"}
    ).problems
    assert re.match(r"kernel\.database_url: the query parameter sslmode must be one of", problem)
