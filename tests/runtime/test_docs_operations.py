"""docs/operations.md and the Grafana dashboard name only metrics the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

import corec_plugin_kit.runtime.metrics  # noqa: F401 - registers the metrics
from corec_plugin_kit.hookspecs import HOOK_NAMES
from corec_plugin_kit.runtime.supervisor import Supervisor

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOT_METRICS = {"corec_plugin_kit", *HOOK_NAMES}


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
        # The kit's package and hook names are not metrics.
        for name in set(re.findall(r"\bcorec_[a-z_]+", source)) - NOT_METRICS:
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            assert name in known or base in known or f"{base}_total" in known, name
    # and every exported family is documented
    for family in ("corec_commands_total", "corec_command_duration_seconds", "corec_stream_lag",
                   "corec_pending_entries", "corec_dead_letters_total", "corec_circuit_state",
                   "corec_redeliveries_total", "corec_commands_in_flight"):  # fmt: skip
        assert family in text


def streams_examples(page: str) -> list[tuple[dict[str, str], str]]:
    """``corec-kit streams`` examples of a page: the environment they imply, and the output."""
    text = (DOCS / page).read_text()
    out = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL):
        first, _, printed = block.partition("\n")
        if "corec-kit streams" not in first:
            continue
        env = dict(re.findall(r"(COREC_[A-Z_]+)=(\S+)", first))
        if not env:  # operations.md: the JSON config just above the example
            config = re.findall(r"```json\n(.*?)```", text[: text.index(block)], re.DOTALL)[-1]
            for key, value in json.loads(config)["kernel"].items():
                env[f"COREC_KERNEL__{key.upper()}"] = str(value)
        out.append((env, printed))
    return out


def test_the_streams_examples_are_what_the_command_prints(corec_cli: Any) -> None:
    examples = streams_examples("operations.md") + streams_examples("cli.md")
    assert len(examples) == 2
    for env, printed in examples:
        result = corec_cli("streams", env=env)
        assert result.exit_code == 0, result.output
        assert result.output == printed
