"""``corec-kit reviser review`` as users run it: exit codes, formats, excludes, --fix, progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad.py").write_text("import os\nx=undefined\n")
    (tmp_path / "src" / "good.py").write_text("print(1)\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "gen.py").write_text("import sys\n")  # excluded by default
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "x.py").write_text("import json\n")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    return tmp_path


@pytest.mark.parametrize("backend", ["ruff", "black+pyflakes"])
def test_text_output_and_exit_codes(kit: Any, tree: Path, backend: str) -> None:
    found = kit("reviser", "review", ".", "--backend", backend)
    assert found.returncode == 1, found.stderr
    # the column of an unused import differs: ruff points at the name, pyflakes at the statement
    assert ("src/bad.py:1:8: F401" if backend == "ruff" else "src/bad.py:1:1: F401") in found.stdout
    assert "src/bad.py:2:3: F821" in found.stdout
    assert "src/bad.py: would reformat" in found.stdout
    assert "gen.py" not in found.stdout and "ignored" not in found.stdout
    clean = kit("reviser", "review", "src/good.py", "--backend", backend)
    assert clean.returncode == 0 and "0 finding(s)" in clean.stdout
    usage = kit("reviser", "review", "missing.py")
    assert usage.returncode == 2 and "does not exist" in usage.stderr
    nothing = kit("reviser", "review", "build", "--exclude", "build/")
    assert nothing.returncode == 2 and "no Python files" in nothing.stderr
    with_ignored = kit("reviser", "review", ".", "--no-gitignore", "--backend", backend)
    assert "ignored/x.py" in with_ignored.stdout


def test_json_format(kit: Any, tree: Path) -> None:
    out = kit("reviser", "review", "src", "--format", "json")
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["summary"] == {"files": 2, "findings": 2, "unformatted": 1, "errors": 0}
    assert data["clean"] is False and data["backend"] == "ruff"
    bad = next(f for f in data["files"] if f["file"] == "src/bad.py")
    assert {"file", "line", "column", "code", "message", "severity"} == set(bad["findings"][0])
    assert bad["diff"].startswith("--- a/src/bad.py")


def check_sarif(doc: dict[str, Any]) -> None:
    """The SARIF 2.1.0 shape code-scanning tools require (the subset we emit)."""
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(doc["runs"], list) and len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] and isinstance(driver["rules"], list)
    rule_ids = {r["id"] for r in driver["rules"]}
    for result in run["results"]:
        assert result["ruleId"] in rule_ids
        assert result["level"] in {"none", "note", "warning", "error"}
        assert result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        assert not physical["artifactLocation"]["uri"].startswith("/")
        assert physical["artifactLocation"]["uriBaseId"] in run["originalUriBaseIds"]
        assert physical["region"]["startLine"] >= 1 and physical["region"]["startColumn"] >= 1
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"].startswith("file:///")
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"].endswith("/")


@pytest.mark.parametrize("backend", ["ruff", "black+pyflakes"])
def test_sarif_format(kit: Any, tree: Path, backend: str) -> None:
    out = kit("reviser", "review", "src", "--format", "sarif", "--backend", backend)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    check_sarif(doc)
    results = doc["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"F401", "F821", "format"}
    undefined = next(r for r in results if r["ruleId"] == "F821")
    assert undefined["level"] == "error"
    assert undefined["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/bad.py"


def test_fix_writes_formatted_files(kit: Any, tree: Path) -> None:
    out = kit("reviser", "review", "src", "--fix")
    assert (tree / "src" / "bad.py").read_text() == "import os\n\nx = undefined\n"
    assert out.returncode == 1  # the lint findings remain
    again = kit("reviser", "review", "src/bad.py", "--format", "json")
    assert json.loads(again.stdout)["summary"]["unformatted"] == 0


@pytest.mark.parametrize("backend", ["ruff", "black+pyflakes"])
def test_many_files_in_parallel_with_progress(kit: Any, tmp_path: Path, backend: str) -> None:
    for i in range(60):
        (tmp_path / f"m{i:02}.py").write_text("import os\n" if i % 3 == 0 else "x = 1\n")
    out = kit("reviser", "review", ".", "--progress", "--jobs", "2", "--backend", backend)
    assert out.returncode == 1
    assert "60 file(s): 20 finding(s)" in out.stdout
    assert "reviewing" in out.stderr  # the progress bar, on stderr
    quiet = kit("reviser", "review", ".", "--no-progress", "--backend", backend)
    assert "reviewing" not in quiet.stderr
    # stderr is a pipe here, not a terminal: no progress unless asked
    default = kit("reviser", "review", ".", "--backend", backend)
    assert default.returncode == 1 and "reviewing" not in default.stderr


def test_a_model_that_cannot_load_is_a_usage_error(kit: Any, tree: Path) -> None:
    out = kit("reviser", "review", "src/good.py", "--model", str(tree / "no-model"))
    assert out.returncode == 2, out.stderr
    assert "reviser.model_path" in out.stderr and "Traceback" not in out.stderr
