"""The must-show of issue 2, in a fresh virtualenv with non-editable installs.

One virtualenv per test session: ``pip install`` of the kit and the three processor directories
(not editable), plus two packages these tests build: ``corec-broken``, whose entry point raises
on import, and ``corec-rival``, which claims ``ping`` as the manager does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "0.0.1"
dependencies = []

[project.entry-points."corec.processors"]
{name} = "{module}"

[tool.hatch.build.targets.wheel]
packages = ["{module}"]
"""


def write_package(root: Path, dist: str, name: str, module: str, source: str) -> Path:
    folder = root / dist
    (folder / module).mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(dist=dist, name=name, module=module))
    (folder / module / "__init__.py").write_text(textwrap.dedent(source))
    return folder


BROKEN = """
# A processor whose import fails, as one with a missing dependency does.
import corec_missing_dependency_for_tests  # noqa: F401
"""

RIVAL = """
from corec_plugin_kit import hookimpl

async def ping(params, ctx):
    return {"pong": "rival"}

@hookimpl
def corec_register_actions(register):
    register("ping", ping)
"""


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    broken = write_package(root, "corec-broken", "broken", "corec_broken", BROKEN)
    rival = write_package(root, "corec-rival", "rival", "corec_rival", RIVAL)
    targets = [ROOT, *(ROOT / "processors" / p for p in ("manager", "generator", "reviser"))]
    pip = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *map(str, targets),
            str(broken),
            str(rival),
        ],
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return env_dir


@pytest.fixture
def venv_kit(venv: Path, tmp_path: Path) -> Callable[..., Any]:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "PYTHON"))}
        full["COREC_KERNEL__STATE_DIR"] = str(tmp_path / ".corec")
        full.update(env or {})
        return subprocess.run(
            [str(venv / "bin" / "corec-kit"), *args],
            capture_output=True,
            text=True,
            env=full,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    return run


def test_installed_non_editable(venv: Path) -> None:
    proc = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import corec_plugin_kit, corec_manager; print(corec_plugin_kit.__file__);"
            "print(corec_manager.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=venv,
        check=True,
    )
    for line in proc.stdout.splitlines():
        assert line.startswith(str(venv)), line  # inside the venv, not the checkout


def test_list_processors_in_a_fresh_venv(venv_kit: Callable[..., Any]) -> None:
    proc = venv_kit("list-processors", "--json")
    assert proc.returncode == 0, proc.stderr
    infos = {info["name"]: info for info in json.loads(proc.stdout)}
    assert infos["generator"]["status"] == "loaded"
    assert {"generate_plugin", "generate_website"} <= set(infos["generator"]["actions"])
    assert infos["reviser"]["status"] == "loaded"
    assert "review_code" in infos["reviser"]["actions"]
    assert infos["manager"]["status"] == "loaded"
    assert {"ping", "health", "list_processors", "describe_action"} <= set(
        infos["manager"]["actions"]
    )
    broken = infos["broken"]
    assert broken["status"] == "failed"
    assert broken["distribution"] == "corec-broken"
    assert broken["version"] == "0.0.1"
    assert broken["reason"] == (
        "import of corec_broken failed: ModuleNotFoundError: "
        "No module named 'corec_missing_dependency_for_tests'"
    )
    assert infos["rival"]["status"] == "loaded"
    assert "Traceback" not in proc.stderr


def test_strict_exits_4(venv_kit: Callable[..., Any]) -> None:
    for args in (["list-processors", "--strict"], ["--strict", "list-processors"]):
        proc = venv_kit(*args)
        assert proc.returncode == 4, (args, proc.stderr)
        assert "broken" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_conflict_is_the_typed_error_naming_both(venv_kit: Callable[..., Any]) -> None:
    for args in (["exec", "ping"], ["actions", "--json"]):
        proc = venv_kit(*args)
        assert proc.returncode == 4, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert (
            "action 'ping' is claimed by both manager (corec-manager) and rival (corec-rival)"
            in proc.stderr
        )


def test_others_still_work(venv_kit: Callable[..., Any]) -> None:
    proc = venv_kit("--disable", "rival", "exec", "ping")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"]["pong"] is True
    pinned = venv_kit("exec", "ping", env={"COREC_KERNEL__ACTION_OWNERS": '{"ping": "rival"}'})
    assert pinned.returncode == 0, pinned.stderr
    assert json.loads(pinned.stdout)["result"] == {"pong": "rival"}
    unknown = venv_kit("--disable", "rival", "exec", "nope")
    assert unknown.returncode == 2
    assert json.loads(unknown.stdout)["error"]["type"] == "unknown_action"
