"""A local Redis Cluster for tests: 3 masters and 3 replicas, real ``redis-server`` processes.

``LocalCluster.start()`` runs six ``redis-server --cluster-enabled yes`` on free ports in a
temporary folder, joins them with ``redis-cli --cluster create --cluster-replicas 1`` and waits
until every node reports ``cluster_state:ok``. ``cluster-node-timeout`` is short (1 s) so a
killed master's replica is promoted within seconds. Nothing is written to disk but the nodes'
``nodes.conf``.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE_TIMEOUT_MS = 1000


def cluster_port() -> int:
    """A free port ``p`` with ``p + 10000`` free too (the node's cluster bus), below 55536."""
    while True:
        port = random.randint(20_000, 45_000)
        if all(_free(p) for p in (port, port + 10_000)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_tools() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def cli(port: int, *args: str, timeout: float = 10) -> str:
    """``redis-cli -p port args...``: its output (raises on a non-zero exit)."""
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=timeout, check=True,
    )  # fmt: skip
    return done.stdout


@dataclass
class LocalCluster:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="corec-cluster-")))
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A seed URL (any node will do for a cluster client)."""
        live = [port for port in self.ports if self.procs[port].poll() is None]
        return f"redis://127.0.0.1:{live[0]}/0"

    def _start_node(self, port: int) -> None:
        folder = self.root / str(port)
        folder.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(folder),
                "--save", "", "--appendonly", "no", "--logfile", str(folder / "log"),
                "--repl-diskless-sync-delay", "0",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> LocalCluster:
        self.ports = []
        while len(self.ports) < 6:
            port = cluster_port()
            if not {port, port + 10_000} & {q for p in self.ports for q in (p, p + 10_000)}:
                self.ports.append(port)
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            self._wait(lambda p=port: cli(p, "PING").strip() == "PONG", f"node {port} to start")
        cli(
            self.ports[0], "--cluster", "create",
            *[f"127.0.0.1:{port}" for port in self.ports],
            "--cluster-replicas", "1", "--cluster-yes", timeout=60,
        )  # fmt: skip
        self.wait_ok()
        # A replica that never synced cannot take over: wait for every link to be up.
        self._wait(self.replicas_synced, "the replicas to sync")
        return self

    def replicas_synced(self) -> bool:
        for port in self.ports:
            if self.procs[port].poll() is not None:
                continue
            info = cli(port, "INFO", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on three masters."""

        def ok() -> bool:
            for port in self.ports:
                if self.procs[port].poll() is not None:
                    continue
                if "cluster_state:ok" not in cli(port, "CLUSTER", "INFO"):
                    return False
            return len(self.masters()) == 3

        self._wait(ok, "the cluster to be ok", timeout)

    def masters(self) -> list[int]:
        """Ports of the live masters that serve slots."""
        out = []
        for line in cli(self.url_port(), "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2] and len(parts) > 8:
                out.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        return out

    def url_port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        slot = int(cli(self.url_port(), "CLUSTER", "KEYSLOT", key))
        for line in cli(self.url_port(), "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                if span.startswith("["):
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise LookupError(f"no live master serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown: as a crash)."""
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait()

    def wait_promoted(self, killed: int, key: str, timeout: float = 60) -> int:
        """Until a replica took over ``key``'s slot from the killed master; its port."""
        self._wait(lambda: self.master_of(key) != killed, f"a replica to replace {killed}", timeout)
        self.wait_ok(timeout)
        return self.master_of(key)

    def revive(self, port: int, timeout: float = 60) -> None:
        """Restart a killed node from its ``nodes.conf``: it rejoins as a replica of the master
        that replaced it, so every master has a replica again (a later failover needs one)."""
        self._start_node(port)
        self._wait(lambda: cli(port, "PING").strip() == "PONG", f"node {port} to restart", timeout)
        self._wait(
            lambda: "role:slave" in cli(port, "INFO", "replication") and self.replicas_synced(),
            f"node {port} to sync as a replica",
            timeout,
        )
        self.wait_ok(timeout)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _wait(predicate: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():  # type: ignore[operator]
                    return
            except (subprocess.SubprocessError, OSError, ValueError, IndexError, LookupError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.1)
