"""Throwaway ``redis-server`` processes for the TLS and ACL tests, and the certificates they use.

* :func:`make_certs`: a CA, a server certificate (CN and SAN 127.0.0.1 / localhost) and a client
  certificate signed by it, plus an unrelated second CA, made with ``openssl`` in a folder. EC
  P-256 keys, valid one day, with the extensions Python 3.13's strict X.509 checking wants
  (critical basicConstraints and keyUsage, key identifiers, extended key usage).
* :func:`start_tls_server`: ``redis-server --port 0 --tls-port <free>``: TLS only, client
  certificates required (``--tls-auth-clients yes``).
* :func:`start_acl_server`: a plain port whose ``default`` user is disabled; ``admin`` (all
  commands, all keys) sets up each test's users with ``ACL SETUSER``.

Each server is the test session's own, on a free port, so the shared Redis's users are never
touched. A missing ``openssl`` or ``redis-server`` (or one built without TLS) skips outside CI
and fails in CI (:func:`~corec_plugin_kit.runtime.testing.require_service`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as syncredis
from shared_helpers import free_port

from corec_plugin_kit.runtime.testing import require_service

TESTS = Path(__file__).resolve().parent.parent
COREC_KIT = str(Path(sys.executable).parent / "corec-kit")
ADMIN_PASSWORD = "admin-secret-pw"  # a throwaway server's superuser


@dataclass(frozen=True)
class Certs:
    """PEM files in ``folder``: ``ca`` signed ``server`` and ``client``; ``other_ca`` nothing."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


_LEAF = """basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage={usage}
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
{san}"""
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"openssl {' '.join(map(str, args))}: {done.stderr}"


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", "1", "-subj", f"/CN=corec test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=folder)  # fmt: skip


def _leaf(folder: Path, name: str, usage: str, san: str) -> None:
    (folder / f"{name}.ext").write_text(_LEAF.format(usage=usage, san=san))
    _openssl("req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
             "-extfile", f"{name}.ext", cwd=folder)  # fmt: skip


def make_certs(folder: Path) -> Certs:
    """Make the CA, server and client certificates (and an unrelated CA) in ``folder``."""
    require_service(shutil.which("openssl") is not None, "openssl", "is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _leaf(folder, "server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _leaf(folder, "client", "clientAuth", "")
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return Certs(
        folder=folder,
        ca=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.crt",
    )


@dataclass
class Server:
    """A running ``redis-server``; :meth:`admin` is a superuser client (sync, str replies)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    certs: Certs | None = None
    admin_user: str | None = None
    _clients: list[Any] = field(default_factory=list)

    def client(self, **kwargs: Any) -> syncredis.Redis:
        options: dict[str, Any] = {"host": "127.0.0.1", "port": self.port}
        options.update(decode_responses=True, socket_connect_timeout=5)
        if self.certs is not None:
            options.update(
                ssl=True,
                ssl_ca_certs=str(self.certs.ca),
                ssl_certfile=str(self.certs.client_cert),
                ssl_keyfile=str(self.certs.client_key),
            )
        options.update(kwargs)
        client = syncredis.Redis(**options)
        self._clients.append(client)
        return client

    def admin(self) -> syncredis.Redis:
        if self.admin_user is None:
            return self.client()
        return self.client(username=self.admin_user, password=ADMIN_PASSWORD)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _binary() -> str:
    found = shutil.which("redis-server")
    require_service(
        found is not None, "redis-server", "is not installed (apt-get install redis-server)"
    )
    assert found is not None
    return found


def _start(folder: Path, args: list[str], port: int, certs: Certs | None) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"redis-{port}.log"
    # 127.0.0.2 too where the loopback has it (Linux; "-": optional): an address the server
    # certificate does not name.
    base = [_binary(), "--bind", "127.0.0.1", "-127.0.0.2", "--save", "", "--appendonly", "no"]
    base += ["--dir", str(folder), "--logfile", str(log)]
    proc = subprocess.Popen([*base, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = Server(proc, port, log, certs)
    probe = server.client(socket_timeout=2)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            output = (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
            output += log.read_text(errors="replace") if log.exists() else ""
            require_service(False, "redis-server", f"did not start ({' '.join(args)}): {output}")
        try:
            probe.ping()
            return server
        except syncredis.AuthenticationError:  # up, and it wants a user: the caller's to set
            return server
        except (syncredis.ConnectionError, syncredis.TimeoutError):
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"redis-server on {port} did not answer within 15s") from None
            time.sleep(0.05)


def start_tls_server(folder: Path, certs: Certs) -> Server:
    """A TLS-only server (no plain port) that requires client certificates."""
    port = free_port()
    args = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certs.server_cert),
            "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "yes"]  # fmt: skip
    return _start(folder, args, port, certs)


def start_acl_server(folder: Path) -> Server:
    """A plain-port server whose only enabled user is ``admin`` (every command and key)."""
    port = free_port()
    server = _start(folder, ["--port", str(port)], port, None)
    setup = server.client()
    setup.acl_setuser(
        "admin",
        enabled=True,
        passwords=[f"+{ADMIN_PASSWORD}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    setup.acl_setuser("default", enabled=False)
    server.admin_user = "admin"
    return server


def acl_setuser(admin: syncredis.Redis, name: str, password: str, rules: list[str]) -> None:
    """``ACL SETUSER name reset on >password <rules...>`` (the rules as docs/operations.md
    writes them)."""
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)


def acl_denials(admin: syncredis.Redis, user: str) -> list[dict[str, Any]]:
    """The ACL LOG entries (refused commands or keys) of ``user``."""
    return [entry for entry in admin.acl_log() if entry.get("username") == user]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def kit_env(**settings: Any) -> dict[str, str]:
    """Environment for a ``corec-kit`` subprocess: echo_proc and the manager loaded, no
    metrics, records off, quick reads; ``settings`` are kernel keys (``redis_url``...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["COREC_PLUGINS"] = "echo_proc"
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,manager"
    values = {"records": False, "metrics_port": 0, "block_ms": 100, **settings}
    for key, value in values.items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        env[f"COREC_KERNEL__{key.upper()}"] = text
    return env


def kit(*args: str, env: dict[str, str], cwd: Path, timeout: float = 90) -> Run:
    """Run ``corec-kit args`` to the end."""
    done = subprocess.run(
        [COREC_KIT, *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    return Run(done.returncode, done.stdout, done.stderr)


def kit_popen(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``corec-kit args`` (a worker, a ``send --wait``) and return at once."""
    return subprocess.Popen(
        [COREC_KIT, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
