"""``--plugin MODULE`` naming the module of an installed processor (developing it from a
checkout) loads it once, under its installed name; through the real CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_plugin_of_an_installed_module_is_loaded_once_under_its_name(
    kit: Callable[..., Any],
) -> None:
    run = kit("--plugin", "corec_generator.processor", "list-processors", "--json")
    assert run.returncode == 0, run.stderr
    rows = {row["name"]: row for row in run.json()}
    assert rows["generator"]["status"] == "loaded"
    assert rows["generator"]["distribution"] == "corec-generator"
    assert "processor" not in rows  # not a second processor named after the module
    assert "already registered" not in run.stderr
    ran = kit("--plugin", "corec_generator.processor", "exec", "generate_plugin",
              "-p", "plugin_name=demo_plugin", "-p", "dry_run:=true")  # fmt: skip
    assert ran.returncode == 0, ran.stderr


def test_an_explicit_name_wins_and_the_installed_twin_is_not_loaded_again(
    kit: Callable[..., Any],
) -> None:
    run = kit("--plugin", "gen2=corec_generator.processor", "list-processors", "--json")
    assert run.returncode == 0, run.stderr
    names = {row["name"]: row["status"] for row in run.json()}
    assert names["gen2"] == "loaded"
    assert "generator" not in names  # the same module: once
    actions = kit("--plugin", "gen2=corec_generator.processor", "actions", "--json")
    assert actions.returncode == 0, actions.stderr
    assert actions.json()["generate_plugin"]["processor"] == "gen2"
