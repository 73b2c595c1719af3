"""Running the real console (``corec-kit manager console``) and a real worker for the console
tests, and a small HTTP client that keeps the session cookie as a browser does."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TESTS = Path(__file__).resolve().parent.parent


def console_env(streams: dict[str, Any], tmp_path: Path, **kernel: Any) -> dict[str, str]:
    """Environment for ``corec-kit`` subprocesses: the test streams, echo_proc and the manager,
    records in SQLite under ``tmp_path``, quick reads; ``kernel`` adds kernel keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["COREC_PLUGINS"] = "echo_proc"
    env["COREC_LOAD_PROCESSORS"] = "echo_proc,manager"
    values = {
        **streams,
        "metrics_port": 0,
        "block_ms": 100,
        "database_url": f"sqlite:///{tmp_path / 'records.db'}",
        "state_dir": str(tmp_path / ".corec"),
        **kernel,
    }
    for key, value in values.items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, (bool, dict, list)) else str(value)
        env[f"COREC_KERNEL__{key.upper()}"] = text
    return env


@dataclass
class Console:
    """A running console: its process, base URL and the token it prints (if it made one)."""

    proc: subprocess.Popen[str]
    url: str
    token: str | None
    output: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return self.url.rstrip("/")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_console(env: dict[str, str], *args: str, timeout: float = 30) -> Console:
    """``corec-kit manager console --port 0 ARGS``, once it prints where it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "corec_plugin_kit", "manager", "console", "--port", "0", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    url = token = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := re.match(r"console at (\S+)", line):
            url = match.group(1)
        if match := re.match(r"sign in: \S+\?token=([A-Za-z0-9_\-]+)$", line.strip()):
            token = match.group(1)
        if line.startswith("stop with"):
            assert url is not None, "".join(lines)
            return Console(proc, url, token, lines)
    proc.kill()
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.wait()
    raise AssertionError(f"the console did not start:\n{''.join(lines)}{rest}")


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "corec_plugin_kit", "run", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """HTTP to the console, keeping its session cookie as a browser does."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.cookie: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookie and "Cookie" not in sent:
            sent["Cookie"] = self.cookie
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            raw = conn.getresponse()
            text = raw.read().decode("utf-8", "replace")
            got = {k.lower(): v for k, v in raw.getheaders()}
            cookie = raw.getheader("set-cookie")
        finally:
            conn.close()
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return Response(raw.status, got, text)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def sign_in(self, token: str) -> Response:
        return self.get(f"/?token={token}")

    def csrf(self) -> str:
        page = self.get("/processors")
        match = re.search(r'<meta name="csrf-token" content="([0-9a-f]*)">', page.text)
        assert match is not None, page.text[:500]
        return match.group(1)
