"""Settings that have no effect are said, not swallowed: a section that names no installed
processor, and what a processor's config model reports in ``config_warnings()``. ``check``
shows them as warnings (exit 0); ``--strict`` makes them config errors (exit 3). Through the
real CLI in subprocesses."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

REDIS = os.environ.get("COREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: A processor whose config model reports a folder that does not exist (as the generator's
#: templates_dir does), loaded with --plugin.
WARNER = """
from pathlib import Path

from pydantic import BaseModel

from corec_plugin_kit import hookimpl


class Settings(BaseModel):
    folder: Path = Path("exists")

    def config_warnings(self) -> list[str]:
        if not self.folder.is_dir():
            return [f"folder: {self.folder} does not exist; nothing is read from it"]
        return []


@hookimpl
def corec_config_model():
    return Settings


async def hello(params, ctx):
    return "hi"


@hookimpl
def corec_register_actions(register):
    register("hello", hello)
"""


def base_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "exists").mkdir(exist_ok=True)
    (tmp_path / "warner.py").write_text(WARNER)
    return {
        "COREC_REDIS_URL": REDIS,
        "COREC_KERNEL__RECORDS": "false",
        "PYTHONPATH": str(tmp_path),
    }


def test_an_unknown_section_is_a_warning_and_an_error_under_strict(
    kit: Callable[..., Any], tmp_path: Path
) -> None:
    # A CoreC-style plugin section, as a CoreC user would write it for a plugin of their own.
    (tmp_path / "corec.json").write_text(json.dumps({"mi_plugin": {"enabled": True}}))
    env = base_env(tmp_path)
    run = kit("check", "--json", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    config = run.json()["config"]
    assert config["ok"] is True
    (warning,) = config["warnings"]
    assert warning.startswith("mi_plugin: this section names no installed processor")
    assert "generator" in warning and "manager" in warning  # what is installed
    text = kit("check", env=env)
    assert "1 warning(s): mi_plugin: this section names no installed processor" in text.stdout
    strict = kit("--strict", "check", env=env)
    assert strict.returncode == 3, strict.stdout + strict.stderr
    assert "mi_plugin: this section names no installed processor" in strict.stdout
    # Any other command says it too (a warning on stderr), and runs.
    ran = kit("exec", "ping", env=env)
    assert ran.returncode == 0
    assert "mi_plugin: this section names no installed processor" in ran.stderr


def test_a_section_from_the_environment_is_checked_too(
    kit: Callable[..., Any], tmp_path: Path
) -> None:
    env = {**base_env(tmp_path), "COREC_GENERATR__OUTPUT_PLUGINS": "out"}  # a typo
    run = kit("check", "--json", env=env)
    assert run.returncode == 0
    assert run.json()["config"]["warnings"][0].startswith("generatr: this section names no")


def test_sections_of_installed_processors_that_are_not_loaded_are_fine(
    kit: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "corec.json").write_text(json.dumps({"generator": {"output_plugins": "out"}}))
    run = kit("--strict", "--disable", "generator", "check", "--json", env=base_env(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warnings" not in run.json()["config"]


def test_a_processor_reports_what_its_settings_will_not_do(
    kit: Callable[..., Any], tmp_path: Path
) -> None:
    env = base_env(tmp_path)
    good = kit("--plugin", "warner", "check", "--json", env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "warnings" not in good.json()["config"]
    (tmp_path / "corec.json").write_text(json.dumps({"warner": {"folder": "missing"}}))
    run = kit("--plugin", "warner", "check", "--json", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.json()["config"]["warnings"] == [
        "warner.folder: missing does not exist; nothing is read from it"
    ]
    strict = kit("--plugin", "warner", "--strict", "check", env=env)
    assert strict.returncode == 3
    assert "warner.folder: missing does not exist" in strict.stdout
