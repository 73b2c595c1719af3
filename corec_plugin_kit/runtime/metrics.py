"""Prometheus metrics (DESIGN.md section 10). Labels are bounded: unknown actions share ``unknown``.

The metric objects are created once per process in the default registry; the worker keeps
label children in dicts so the per-command cost is a dict lookup plus an increment.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

COMMANDS = Counter(
    "corec_commands", "Commands finished, by outcome", ["processor", "action", "outcome"]
)
DURATION = Histogram(
    "corec_command_duration_seconds",
    "Handler duration",
    ["processor", "action"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("corec_commands_in_flight", "Commands being handled by this worker")
LAG = Gauge("corec_stream_lag", "Entries not yet delivered to the group", ["stream", "group"])
PENDING = Gauge(
    "corec_pending_entries", "Entries delivered but not acknowledged", ["stream", "group"]
)
REDELIVERIES = Counter("corec_redeliveries", "Entries reclaimed from idle consumers")
DEAD_LETTERS = Counter("corec_dead_letters", "Entries moved to the dead-letter stream", ["action"])
CIRCUIT = Gauge("corec_circuit_state", "0 closed, 1 half-open, 2 open", ["processor"])
READS = Counter("corec_stream_reads", "XREADGROUP calls that returned entries")


class Recorder:
    """Caches label children; ``known`` bounds the action label to routed actions."""

    def __init__(self, known_actions: set[str]) -> None:
        self.known = known_actions
        self._done: dict[tuple[str, str, str], Any] = {}
        self._duration: dict[tuple[str, str], Any] = {}

    def finished(self, processor: str | None, action: str, outcome: str, seconds: float) -> None:
        action = action if action in self.known else "unknown"
        processor = processor or "none"
        key = (processor, action, outcome)
        child = self._done.get(key)
        if child is None:
            child = self._done[key] = COMMANDS.labels(processor, action, outcome)
        child.inc()
        dkey = (processor, action)
        hist = self._duration.get(dkey)
        if hist is None:
            hist = self._duration[dkey] = DURATION.labels(processor, action)
        hist.observe(seconds)

    def dead_letter(self, action: str) -> None:
        DEAD_LETTERS.labels(action if action in self.known else "unknown").inc()


def serve(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve /metrics on ``addr:port`` in a daemon thread; returns the server (or None if 0)."""
    if not port:
        return None
    server, _thread = start_http_server(port, addr)
    return server
