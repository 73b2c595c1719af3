"""Prometheus metrics (docs/operations.md). Labels are bounded: unknown actions share ``unknown``.

The metric objects are created once per process in the default registry; the worker keeps
label children in dicts so the per-command cost is a dict lookup plus an increment.
"""

from __future__ import annotations

import os
import weakref
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# Per-command metrics are plain dict tallies, turned into metric families only when scraped:
# prometheus_client's Counter/Histogram take a lock per call, which the stream loop pays for
# every command. Reads from the scrape thread see a snapshot at most one command old.
_counts: defaultdict[tuple[str, str, str], float] = defaultdict(float)
_histograms: dict[tuple[str, str], list[float]] = {}  # bucket counts..., +Inf count, sum
_workers: weakref.WeakSet[Any] = weakref.WeakSet()


class _Collector:
    """corec_commands_total, corec_command_duration_seconds, corec_commands_in_flight."""

    def collect(self) -> Iterator[Metric]:
        commands = CounterMetricFamily(
            "corec_commands",
            "Commands finished, by outcome",
            labels=["processor", "action", "outcome"],
        )
        for outcome_labels, value in list(_counts.items()):
            commands.add_metric(list(outcome_labels), value)
        yield commands
        duration = HistogramMetricFamily(
            "corec_command_duration_seconds", "Handler duration", labels=["processor", "action"]
        )
        for labels, tally in list(_histograms.items()):
            counts = list(tally)
            cumulative, buckets = 0.0, list[tuple[str, float]]()
            for bound, count in zip((*BUCKETS, float("inf")), counts[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            duration.add_metric(list(labels), buckets, counts[-1])
        yield duration
        yield GaugeMetricFamily(
            "corec_commands_in_flight",
            "Commands being handled by this process's workers",
            value=sum(len(worker.inflight) for worker in list(_workers)),
        )


REGISTRY.register(_Collector())
LAG = Gauge("corec_stream_lag", "Entries not yet delivered to the group", ["stream", "group"])
PENDING = Gauge(
    "corec_pending_entries", "Entries delivered but not acknowledged", ["stream", "group"]
)
REDELIVERIES = Counter("corec_redeliveries", "Entries reclaimed from idle consumers")
DEAD_LETTERS = Counter("corec_dead_letters", "Entries moved to the dead-letter stream", ["action"])
CIRCUIT = Gauge("corec_circuit_state", "0 closed, 1 half-open, 2 open", ["processor"])
READS = Counter("corec_stream_reads", "XREADGROUP calls that returned entries")
REPLICATION_SHORT = Counter(
    "corec_replication_shortfalls",
    "Commits that fewer than kernel.min_replicas_ack replicas acknowledged in time",
)


class Recorder:
    """Per-worker front of the tallies; ``known`` bounds the action label to routed actions."""

    def __init__(self, known_actions: set[str], worker: Any = None) -> None:
        self.known = known_actions
        if worker is not None:
            _workers.add(worker)

    def finished(self, processor: str | None, action: str, outcome: str, seconds: float) -> None:
        action = action if action in self.known else "unknown"
        processor = processor or "none"
        _counts[(processor, action, outcome)] += 1
        tally = _histograms.get((processor, action))
        if tally is None:
            tally = _histograms[(processor, action)] = [0.0] * (len(BUCKETS) + 2)
        tally[bisect_left(BUCKETS, seconds)] += 1
        tally[-1] += seconds

    def dead_letter(self, action: str) -> None:
        DEAD_LETTERS.labels(action if action in self.known else "unknown").inc()


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve /metrics on ``addr:port`` in a daemon thread; returns the server (or None if 0).

    A port that cannot be bound (taken by another worker or program) is a
    :class:`~corec_plugin_kit.errors.ConfigError` that says what to change.
    """
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr, registry=registry)
    except OSError as exc:
        from ..errors import ConfigError

        raise ConfigError(
            f"the metrics port {addr}:{port} cannot be served ({exc.strerror or exc}): set "
            "kernel.metrics_port (env COREC_KERNEL__METRICS_PORT) to a free port, or 0 for no "
            "metrics; to run several workers on one host, start one `corec-kit run --workers N` "
            "(one metrics endpoint for all of them)"
        ) from None
    return server


# --------------------------------------------------------------------------- several workers
# `corec-kit run --workers N`: each worker process writes its metrics to a snapshot file once a
# second; the supervisor serves their sum on the one metrics port of the host. Counters and
# histograms of workers that died stay in the sum (their files stay), so they survive restarts.

#: Gauges summed over the live workers; every other gauge takes the live workers' maximum
#: (lag, pending and circuit state describe the shared stream and processors).
SUMMED_GAUGES = {"corec_commands_in_flight"}


def snapshot(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """This process's ``corec_*`` metrics as plain data (for :class:`SnapshotCollector`)."""
    families = []
    for family in REGISTRY.collect():
        if not family.name.startswith("corec_"):
            continue
        samples = [
            [sample.name, sample.labels, sample.value]
            for sample in family.samples
            if not sample.name.endswith("_created")
        ]
        families.append([family.name, family.type, family.documentation, samples])
    return {"pid": os.getpid(), "families": families, **(extra or {})}


def write_snapshot(path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write :func:`snapshot` to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(snapshot(extra)))
    os.replace(tmp, path)


def read_snapshots(folder: Path) -> list[dict[str, Any]]:
    """Every snapshot in ``folder`` (one per worker process that ever ran)."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):  # pragma: no cover - written atomically
            continue
    return out


class SnapshotCollector:
    """The supervisor's collector: the sum of its workers' snapshots (see :func:`snapshot`)."""

    def __init__(self, folder: Path, live: Callable[[], set[int]]) -> None:
        self.folder = folder
        self.live = live

    def collect(self) -> Iterator[Metric]:
        live = self.live()
        merged: dict[str, tuple[str, str, dict[tuple[str, tuple[Any, ...]], float]]] = {}
        for snap in read_snapshots(self.folder):
            alive = snap.get("pid") in live
            for name, kind, doc, samples in snap["families"]:
                if kind == "gauge" and not alive:
                    continue  # a dead worker has nothing in flight and no current view
                _, _, values = merged.setdefault(name, (kind, doc, {}))
                for sample, labels, value in samples:
                    key = (sample, tuple(sorted(labels.items())))
                    if kind != "gauge" or name in SUMMED_GAUGES:
                        values[key] = values.get(key, 0.0) + value
                    else:
                        values[key] = max(values.get(key, value), value)
        for name, (kind, doc, values) in merged.items():
            family = Metric(name, doc, kind)
            for (sample, labels), value in values.items():
                family.add_sample(sample, dict(labels), value)
            yield family
