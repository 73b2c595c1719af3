"""End to end in a fresh virtualenv: the generator installed from a wheel (non-editable), the
plugin and the FastAPI site it generates installed there, listed, executed, served and tested.

One virtualenv per session (building it costs ~30 s): the kernel and the generator go in from
this checkout with plain ``pip install PATH`` (wheels built by hatchling, no editable mode), so
the templates must come from inside the generator's wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from shared_helpers import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass
class Venv:
    root: Path
    work: Path
    env: dict[str, str]

    @property
    def bin(self) -> Path:
        return self.root / ("Scripts" if os.name == "nt" else "bin")

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        exe = args[0]
        if (self.bin / exe).exists():
            exe = str(self.bin / exe)
        proc = subprocess.run(
            [exe, *args[1:]],
            cwd=cwd or self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("genvenv")
    # Not the outer run's PYTEST_ADDOPTS either (`-n 2` needs xdist, which this venv lacks).
    keep_out = ("COREC_", "PYTHON", "PIP_", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(keep_out)}
    env.pop("VIRTUAL_ENV", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["COREC_KERNEL__METRICS_PORT"] = "0"
    work = base / "work"
    work.mkdir()
    venv = Venv(base / "venv", work, env)
    subprocess.run([sys.executable, "-m", "venv", str(venv.root)], check=True, timeout=120)
    env["PATH"] = f"{venv.bin}{os.pathsep}{env.get('PATH', '')}"
    venv.run(
        "python",
        "-m",
        "pip",
        "install",
        "-q",
        str(REPO),
        str(REPO / "processors" / "generator"),
        "pytest>=8",
        "pytest-asyncio>=0.24",
        "httpx>=0.27",
    )
    # Generate with the installed (wheel) generator's own CLI, then install what it made.
    venv.run("corec-kit", "generator", "plugin", "demo_plugin", "--output", str(work))
    venv.run("corec-kit", "generator", "site", "fastapi", "demo_site", "--output", str(work))
    venv.run(
        "python", "-m", "pip", "install", "-q", str(work / "demo_plugin"), str(work / "demo_site")
    )
    return venv


def test_templates_come_from_the_wheel(venv: Venv) -> None:
    proc = venv.run(
        "python",
        "-c",
        "from corec_generator.engine import bundled_templates; print(bundled_templates())",
    )
    where = Path(proc.stdout.strip())
    assert "site-packages" in where.parts, where
    assert where.name == "templates" and where.parent.name == "corec_generator"
    assert REPO not in where.parents
    assert (where / "plugin" / "template.json").is_file()
    assert (venv.work / "demo_plugin" / "demo_plugin" / "processor.py").is_file()


def test_generated_plugin_is_listed_as_loaded(venv: Venv) -> None:
    proc = venv.run("corec-kit", "list-processors", "--json", "--strict")
    infos = {info["name"]: info for info in json.loads(proc.stdout)}
    assert infos["demo_plugin"]["status"] == "loaded", infos
    assert infos["demo_plugin"]["distribution"] == "corec-demo-plugin"
    assert infos["demo_plugin"]["actions"] == ["demo_plugin.hello"]
    assert infos["generator"]["status"] == "loaded"


def test_exec_reaches_the_generated_action(venv: Venv) -> None:
    proc = venv.run("corec-kit", "exec", "demo_plugin.hello", "-p", "who=venv")
    envelope = json.loads(proc.stdout)
    assert envelope["status"] == "ok"
    assert envelope["processor"] == "demo_plugin"
    assert envelope["result"]["greeting"] == "hello venv"
    bad = venv.run("corec-kit", "exec", "demo_plugin.hello", "-p", "who=", check=False)
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"]["type"] == "invalid_params"
    cli = venv.run("corec-kit", "demo_plugin", "hello", "there")
    assert cli.stdout.strip() == "hello there"


def test_generated_plugin_own_tests_pass(venv: Venv) -> None:
    proc = venv.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=venv.work / "demo_plugin"
    )
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout
    assert "7 passed" in proc.stdout, proc.stdout


def test_exec_generates_below_the_configured_root(venv: Venv) -> None:
    cwd = venv.work / "exec_here"
    cwd.mkdir()
    (cwd / "corec.json").write_text(json.dumps({"generator": {"output_plugins": "made"}}))
    proc = venv.run(
        "corec-kit", "exec", "generate_plugin", "-p", "plugin_name=p2", "-p", "output=t", cwd=cwd
    )
    assert json.loads(proc.stdout)["result"]["created"] == 11
    assert (cwd / "made" / "t" / "p2" / "pyproject.toml").is_file()
    refused = venv.run(
        "corec-kit",
        "exec",
        "generate_plugin",
        "-p",
        "plugin_name=p3",
        "-p",
        "output=../up",
        cwd=cwd,
        check=False,
    )
    assert refused.returncode == 2
    assert not (venv.work / "up").exists()


def test_fastapi_site_serves_health_under_uvicorn(venv: Venv) -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            str(venv.bin / "python"),
            "-m",
            "uvicorn",
            "demo_site.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=venv.work,
        env=venv.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"uvicorn exited {server.returncode}: {server.stdout.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = json.loads(r.read())
                    assert r.status == 200
                break
            except OSError:
                time.sleep(0.2)
        assert body == {"status": "ok", "version": "0.1.0"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/hello/CoreC", timeout=5) as r:
            assert json.loads(r.read()) == {"message": "hello CoreC"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_fastapi_site_own_tests_pass(venv: Venv) -> None:
    proc = venv.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=venv.work / "demo_site"
    )
    assert "3 passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout
