"""The generated React site builds with Vite and passes its Vitest test (real npm).

Skipped only when npm is missing outside CI; with ``CI`` set a missing npm is a failure, so CI
can never go green without having run the build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("npm is not installed, and CI is set: install Node.js 20+ and npm")
        pytest.skip("npm is not installed (set CI to make this a failure)")
    return found


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # No colours: CI sets CI=true, which makes vitest colour its summary.
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def test_react_site_builds_and_tests(npm: str, corec_cli: Any, tmp_path: Path) -> None:
    result = corec_cli(
        "generator", "site", "react", "demo-web", "--output", str(tmp_path), "--json"
    )
    assert result.exit_code == 0, result.output
    site = tmp_path / "demo-web"
    run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], site)
    run([npm, "run", "build"], site)
    index = (site / "dist" / "index.html").read_text()
    scripts = re.findall(r'<script type="module" crossorigin src="/([^"]+\.js)"', index)
    assert scripts, index
    bundle = (site / "dist" / scripts[0]).read_text()
    assert "demo-web" in bundle  # the title made it into the bundle
    assert "<title>demo-web</title>" in index
    proc = run([npm, "test"], site)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert re.search(r"Tests\s+2 passed", out), out
    assert json.loads((site / "package.json").read_text())["scripts"]["test"] == "vitest run"
