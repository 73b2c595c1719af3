"""docs/operations.md and the Grafana dashboard name only metrics the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import corec_plugin_kit.runtime.metrics  # noqa: F401 - registers the metrics
from corec_plugin_kit.runtime.supervisor import Supervisor

DOCS = Path(__file__).resolve().parents[2] / "docs"


def exported() -> set[str]:
    """What a worker exports, and what the supervisor of ``run --workers`` adds."""
    supervisor = Supervisor(lambda consumer, snapshots: [], 1, "docs", grace=1)
    try:
        collected = [*REGISTRY.collect(), *supervisor.registry().collect()]
    finally:
        supervisor.close()
    names = set()
    for metric in collected:
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
    return {n for n in names if n.startswith("corec_")}


def test_every_metric_named_in_the_docs_and_dashboard_exists() -> None:
    known = exported()
    text = (DOCS / "operations.md").read_text()
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for source in (text, exprs):
        for name in set(re.findall(r"\bcorec_[a-z_]+", source)):
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            assert name in known or base in known or f"{base}_total" in known, name
    # and every exported family is documented
    for family in ("corec_commands_total", "corec_command_duration_seconds", "corec_stream_lag",
                   "corec_pending_entries", "corec_dead_letters_total", "corec_circuit_state",
                   "corec_redeliveries_total", "corec_commands_in_flight"):  # fmt: skip
        assert family in text
