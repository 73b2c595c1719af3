"""``corec-kit run --workers N``: N worker processes on one host, watched by one supervisor.

The supervisor starts each worker as ``corec-kit ... run --consumer <base>-<i>`` (the same
global options, so the same config and processors), restarts one that dies (capped exponential
backoff; counted in ``corec_worker_restarts_total`` and logged), forwards SIGTERM and SIGINT, and
exits 0 once every worker finished within its grace period. A worker that stops for a problem
no restart can fix (a config error, exit 3; a processor error, exit 4) stops them all, with its
exit code.

A restarted worker keeps its consumer name, so it starts by finishing what its predecessor was
handing (XREADGROUP from ID 0) instead of waiting ``claim_idle_ms`` for a reclaim. The host's one
metrics endpoint is the supervisor's: each worker writes a snapshot of its metrics once a second
(:func:`~corec_plugin_kit.runtime.metrics.write_snapshot`) and the supervisor serves their sum.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EXIT_CONFIG_ERROR, EXIT_HANDLER_ERROR, EXIT_PROCESSOR_ERROR

log = logging.getLogger("corec_plugin_kit.supervisor")

#: Exit codes no restart can fix: the supervisor stops every worker and exits with it.
FATAL = {EXIT_CONFIG_ERROR, EXIT_PROCESSOR_ERROR}
#: A worker that ran this long before dying restarts at once (its backoff is reset).
STABLE_S = 30.0
#: Extra seconds past the grace period before a worker that does not exit is killed.
KILL_MARGIN_S = 10.0


def worker_count(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` (one per CPU this process may use)."""
    if value == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--workers takes a number of at least 1, or auto (not {value!r})")
    return count


@dataclass
class Slot:
    """One worker position: its consumer name, its process, its restarts."""

    index: int
    consumer: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    finished: bool = False  # exited 0 (drained, --max-commands, a signal), or while stopping
    exit_code: int | None = None
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Runs ``count`` workers; ``command(consumer)`` is the argv of one worker process."""

    def __init__(
        self,
        command: Callable[[str, Path], list[str]],
        count: int,
        base: str,
        *,
        grace: float,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.slots = [Slot(i, f"{base}-{i}") for i in range(count)]
        self.grace = grace
        self.env = {**os.environ, **(env or {})}
        self.snapshots = Path(tempfile.mkdtemp(prefix="corec-workers-"))
        self.stopping = False
        self.restarts = 0
        self.fatal: int | None = None
        self._restarts_metric: Any = None

    # ------------------------------------------------------------------ metrics

    def live_pids(self) -> set[int]:
        return {s.process.pid for s in self.slots if s.process and s.process.poll() is None}

    def registry(self) -> Any:
        """The host's metrics: the workers' summed snapshots, plus ``corec_workers`` and
        ``corec_worker_restarts_total`` (a ``prometheus_client.CollectorRegistry``)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge

        from . import metrics

        registry = CollectorRegistry()
        registry.register(metrics.SnapshotCollector(self.snapshots, self.live_pids))
        self._restarts_metric = Counter(
            "corec_worker_restarts",
            "Worker processes the supervisor restarted",
            registry=registry,
        )
        workers = Gauge("corec_workers", "Worker processes running", registry=registry)
        workers.set_function(lambda: len(self.live_pids()))
        return registry

    def serve_metrics(self, port: int, addr: str) -> Any:
        """Serve :meth:`registry` on ``addr:port`` (``None`` when the port is 0)."""
        from . import metrics

        return metrics.serve(port, addr, self.registry())

    # ------------------------------------------------------------------ processes

    def _start(self, slot: Slot) -> None:
        argv = self.command(slot.consumer, self.snapshots)
        slot.process = subprocess.Popen(argv, env=self.env)
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.info("worker %s started (pid %d)", slot.consumer, slot.process.pid)

    def _exited(self, slot: Slot, code: int) -> None:
        """A worker's process ended with ``code``: finish, restart later, or stop all."""
        slot.exit_code = code
        slot.history.append(code)
        slot.process = None
        if self.stopping or code == 0:
            # A worker exits 0 only when it was meant to: drained (--burst), --max-commands
            # reached, or stopped by a signal. It is done, not restarted.
            slot.finished = True
            return
        if code in FATAL:
            log.error("worker %s exited %d (a problem no restart fixes): stopping all",
                      slot.consumer, code)  # fmt: skip
            self.fatal = code
            self.stop()
            slot.finished = True
            return
        now = time.monotonic()
        slot.failures = 0 if now - slot.started_at >= STABLE_S else slot.failures + 1
        delay = min(30.0, 0.5 * 2 ** max(0, slot.failures - 1)) if slot.failures else 0.0
        slot.restart_at = now + delay
        self.restarts += 1
        if self._restarts_metric is not None:
            self._restarts_metric.inc()
        log.warning("worker %s exited %d; restarting it in %.1fs (restart %d of this host)",
                    slot.consumer, code, delay, self.restarts)  # fmt: skip

    def stop(self, *_args: Any) -> None:
        """Stop every worker: each finishes its in-flight commands within the grace period."""
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping %d workers", len(self.live_pids()))
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    def reload(self, *_args: Any) -> None:
        """``SIGHUP``: every worker loads the processors installed since it started (a worker
        still starting, before its handlers are in place, ends and is restarted: it loads
        them too)."""
        log.info("SIGHUP: passing it to %d workers", len(self.live_pids()))
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGHUP)

    # ------------------------------------------------------------------ the loop

    def _tick(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is not None:
                code = slot.process.poll()
                if code is not None:
                    self._exited(slot, code)
            elif not slot.finished and not self.stopping and (slot.restart_at or 0) <= now:
                self._start(slot)

    def run(self) -> int:
        """Run until stopped, or until every worker finished (exited 0: drained in burst mode,
        ``--max-commands`` reached); the exit code."""
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.reload)
        try:
            for slot in self.slots:
                self._start(slot)
            while not all(slot.finished for slot in self.slots):
                self._tick()
                if self.stopping:
                    return self._wait_all()
                time.sleep(0.1)
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_rest()

    def _wait_all(self) -> int:
        """Wait for every worker to exit within the grace period (plus a margin), then kill."""
        deadline = time.monotonic() + self.grace + KILL_MARGIN_S
        while time.monotonic() < deadline and self.live_pids():
            self._tick()
            time.sleep(0.05)
        self._tick()
        late = self._kill_rest()
        if self.fatal is not None:
            return self.fatal
        # A worker our SIGTERM ended by its default action had not yet installed its handlers
        # (it was starting): it had read nothing, so it stopped cleanly too.
        clean = (0, None, -signal.SIGTERM)
        failed = [s for s in self.slots if s.exit_code not in clean]
        return EXIT_HANDLER_ERROR if late or failed else 0

    def _kill_rest(self) -> bool:
        killed = False
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                log.error("worker %s did not exit in time; killing it", slot.consumer)
                slot.process.kill()
                slot.process.wait()
                killed = True
        return killed

    def stats(self) -> dict[str, int]:
        """The workers' counts of this run, summed (from their last snapshots)."""
        from . import metrics

        total: dict[str, int] = {}
        for snap in metrics.read_snapshots(self.snapshots):
            for key, value in (snap.get("stats") or {}).items():
                total[key] = total.get(key, 0) + int(value)
        total["restarts"] = self.restarts
        return total

    def close(self) -> None:
        shutil.rmtree(self.snapshots, ignore_errors=True)


def worker_argv(global_args: list[str], run_args: list[str]) -> Callable[[str, Path], list[str]]:
    """The argv of one worker process: this CLI, the same options, its consumer name."""

    def command(consumer: str, snapshots: Path) -> list[str]:
        return [
            sys.executable, "-m", "corec_plugin_kit", *global_args,
            "run", *run_args, "--consumer", consumer, "--quiet",
            "--metrics-snapshot", str(snapshots),
        ]  # fmt: skip

    return command
