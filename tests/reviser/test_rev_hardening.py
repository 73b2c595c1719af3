"""The reviser under load and on hostile input: concurrent reviews give the sequential verdicts,
a linter that crashes is a per-file error (never a clean review), CPU-heavy reviews are bounded
by the action's timeout, and FIFOs never hang a review."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corec_reviser.processor as reviser
import pytest
from corec_reviser.backends import BlackPyflakes, make_backend, review_source
from corec_reviser.config import ReviserConfig
from shared_helpers import pid_alive

from corec_plugin_kit.procpool import WorkerDied

pytestmark = pytest.mark.timeout(120)

# Sources with known verdicts: clean, a finding, unformatted, a syntax error, an undefined name.
SOURCES = [
    "x = 1\n",
    "import os\n",
    "x=1\ny = [1,2 ,3]\n",
    "def f(:\n    pass\n",
    "def g():\n    return undefined_name\n",
    "import sys\n\n\ndef h(a, b):\n    return a + b\n",
    "class A:\n    def m(self):\n        l = 1\n        return 2\n",
    "print('hi')\n",
]

# ruff overflows its stack on this (SIGABRT); pyflakes cannot compile it (RecursionError).
CRASHER = "x = " + "1+" * 100_000 + "1\n"


@pytest.fixture
def kernel_for(corec_register: Any, corec_kernel: Any, tmp_path: Path) -> Callable[..., Any]:
    corec_register(reviser, name="reviser")

    def build(**kernel: Any) -> Any:
        return corec_kernel(**kernel, sections={"reviser": {"root": str(tmp_path)}})

    return build


def review(source: str, backend: str, n: int = 0) -> dict[str, Any]:
    return {
        "action": "review_code",
        "params": {"source": source, "backend": backend, "filename": f"s{n}.py"},
    }


@pytest.mark.parametrize("concurrency", [8, 32])
async def test_concurrent_black_pyflakes_reviews_match_a_sequential_run(
    kernel_for: Callable[..., Any], concurrency: int
) -> None:
    commands = [review(SOURCES[i % len(SOURCES)], "black+pyflakes", i) for i in range(concurrency)]
    async with kernel_for() as kernel:
        # Concurrent first, on fresh pool workers: black is imported by the first reviews.
        together = await asyncio.gather(*(kernel.execute(c) for c in commands))
        one_by_one = [await kernel.execute(c) for c in commands]
    for got, want in zip(together, one_by_one, strict=True):
        assert got["status"] == "ok", got
        assert got["result"] == want["result"]
        file = got["result"]["files"][0]
        assert file["error"] is None, file
        codes = [f["code"] for f in file["findings"]]
        assert "E999" not in codes or file["file"] in {
            f"s{i}.py" for i in range(concurrency) if i % len(SOURCES) == 3
        }, file
    verdicts = {c["params"]["source"]: r["result"] for c, r in zip(commands, together, strict=True)}
    assert verdicts["x = 1\n"]["clean"] is True
    assert [f["code"] for f in verdicts["import os\n"]["files"][0]["findings"]] == ["F401"]
    assert verdicts["x=1\ny = [1,2 ,3]\n"]["files"][0]["formatted"] is False
    assert [f["code"] for f in verdicts["def f(:\n    pass\n"]["files"][0]["findings"]] == ["E999"]


def test_first_imports_of_black_from_many_threads_at_once() -> None:
    """The original race: eight threads importing black at once (a fresh interpreter)."""
    script = (
        "import json\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from corec_reviser.backends import review_source\n"
        "from corec_reviser.config import ReviserConfig\n"
        "config = ReviserConfig()\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    out = list(pool.map(lambda i: review_source(config, 'import os\\n', 'm.py')"
        ".model_dump(), range(8)))\n"
        "print(json.dumps(out))\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    reviews = json.loads(ran.stdout)
    assert len(reviews) == 8
    for item in reviews:
        assert item["error"] is None, item
        assert [f["code"] for f in item["findings"]] == ["F401"], item


# --------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("backend", ["ruff", "black+pyflakes"])
async def test_a_linter_crash_on_a_source_is_an_error_not_a_clean_review(
    kernel_for: Callable[..., Any], backend: str
) -> None:
    async with kernel_for() as kernel:
        out = await kernel.execute(review(CRASHER, backend))
    assert out["status"] == "ok", out
    result = out["result"]
    file = result["files"][0]
    assert file["error_kind"] == "crash", file
    assert result["clean"] is False
    assert result["summary"]["errors"] == 1
    assert not any(f["code"] == "E999" for f in file["findings"])  # not a syntax error either
    if backend == "ruff":
        assert "ruff" in file["error"] and "SIGABRT" in file["error"], file["error"]


def test_ruff_crash_details_are_kept() -> None:
    crashed = make_backend(ReviserConfig(), "ruff").review(CRASHER, "c.py")
    assert crashed.error_kind == "crash"
    assert crashed.error is not None and "overflowed its stack" in crashed.error
    assert not crashed.findings


@pytest.mark.parametrize("backend", ["ruff", "black+pyflakes"])
async def test_a_crash_in_a_folder_is_that_files_error_alone(
    kernel_for: Callable[..., Any], tmp_path: Path, backend: str
) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a_crash.py").write_text(CRASHER)
    (pkg / "b_finding.py").write_text("import os\n")
    (pkg / "c_clean.py").write_text("x = 1\n")
    async with kernel_for() as kernel:
        out = await kernel.execute(
            {"action": "review_code", "params": {"paths": ["pkg"], "backend": backend}}
        )
    assert out["status"] == "ok", out
    files = {f["file"]: f for f in out["result"]["files"]}
    assert files["pkg/a_crash.py"]["error_kind"] == "crash"
    assert [f["code"] for f in files["pkg/b_finding.py"]["findings"]] == ["F401"]
    assert files["pkg/b_finding.py"]["error"] is None
    assert files["pkg/c_clean.py"] == {
        "file": "pkg/c_clean.py",
        "formatted": True,
        "diff": "",
        "findings": [],
        "fixed": None,
        "error": None,
        "error_kind": None,
    }
    assert out["result"]["clean"] is False


def test_the_cli_reports_a_crash_and_exits_1(kit: Any, tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text(CRASHER)
    (tmp_path / "ok.py").write_text("x = 1\n")
    for backend in ("ruff", "black+pyflakes"):
        out = kit("reviser", "review", ".", "--backend", backend, "--no-progress")
        assert out.returncode == 1, out.stderr
        assert "crash.py: linter crashed:" in out.stdout, out.stdout
        sarif = kit("reviser", "review", ".", "--backend", backend, "--format", "sarif")
        run = json.loads(sarif.stdout)["runs"][0]
        assert run["invocations"][0]["executionSuccessful"] is False
        assert (
            "crash.py" in run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]
        )


def test_black_or_pyflakes_exceptions_are_crashes_and_syntax_errors_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import black

    config = ReviserConfig()
    assert review_source(config, "def (:\n", "s.py").findings[0].code == "E999"
    assert review_source(config, "def (:\n", "s.py").error is None

    def recurse(*_a: Any, **_k: Any) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(black, "format_str", recurse)
    crashed = review_source(config, "x = 1\n", "s.py")
    assert crashed.error_kind == "crash"
    assert crashed.error == "black crashed: RecursionError: maximum recursion depth exceeded"


async def test_a_worker_process_that_dies_is_a_crash_of_that_file_only(tmp_path: Path) -> None:
    names = [f"m{i}.py" for i in range(6)] + ["kills.py"]
    for name in names:
        (tmp_path / name).write_text("import os\n")

    async def runner(fn: Callable[..., Any], *args: Any) -> Any:
        items = args[-1]
        if isinstance(items, list) and any(n == "kills.py" for _p, n in items):
            raise WorkerDied(-int(signal.SIGSEGV))
        return fn(*args)

    backend = BlackPyflakes(ReviserConfig(), runner=runner)
    reviews = await backend.areview_files([tmp_path / n for n in names], names)
    by_name = {r.file: r for r in reviews}
    assert [r.file for r in reviews] == names
    assert by_name["kills.py"].error_kind == "crash"
    assert by_name["kills.py"].error == (
        "black+pyflakes crashed: the worker process died (killed by SIGSEGV)"
    )
    assert all(by_name[n].findings[0].code == "F401" for n in names[:-1])


# --------------------------------------------------------------------------- bounded work


async def test_a_cpu_heavy_black_pyflakes_review_is_bounded_by_the_action_timeout(
    kernel_for: Callable[..., Any],
) -> None:
    # About 10 s of black on the development machine.
    heavy = "".join(
        f"def f{i}(a,b):\n    return foo(a,b,[{i},{i + 1},{i + 2}],{{'k':a}})\n"
        for i in range(3000)
    )
    async with kernel_for(action_timeouts={"review_code": 1}) as kernel:
        # Starting a worker process and importing black may take longer than the limit on a
        # loaded machine: the calls around the heavy one get room (the operator's limit is
        # read at each call).
        limits = kernel.dispatcher.action_timeouts
        limits["review_code"] = 60
        warm = await kernel.execute(review("x = 1\n", "black+pyflakes"))  # the pool is up
        assert warm["status"] == "ok", warm
        limits["review_code"] = 1
        start = time.monotonic()
        out = await kernel.execute(review(heavy, "black+pyflakes"))
        took = time.monotonic() - start
        assert out["error"]["type"] == "timeout", out
        assert took < 2.0, took
        limits["review_code"] = 60  # a new worker process replaces the one killed
        after = await kernel.execute(review("import os\n", "black+pyflakes"))
    assert after["result"]["files"][0]["findings"][0]["code"] == "F401"


def test_review_code_registers_no_timeout_of_its_own() -> None:
    from corec_plugin_kit.routing import Register

    register = Register("reviser")
    reviser.corec_register_actions(register)
    assert register.specs[0].timeout_s is None  # kernel.handler_timeout_s bounds it


# --------------------------------------------------------------------------- FIFOs


@pytest.fixture
def with_fifo(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("import os\n")
    os.mkfifo(pkg / "pipe.py")
    return pkg


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["ruff", "black+pyflakes"])
async def test_a_fifo_in_a_reviewed_folder_is_skipped(
    kernel_for: Callable[..., Any], with_fifo: Path, backend: str
) -> None:
    async with kernel_for() as kernel:
        folder = await kernel.execute(
            {"action": "review_code", "params": {"paths": ["pkg"], "backend": backend}}
        )
        named = await kernel.execute(
            {"action": "review_code", "params": {"paths": ["pkg/pipe.py"], "backend": backend}}
        )
    assert [f["file"] for f in folder["result"]["files"]] == ["pkg/a.py"], folder
    file = named["result"]["files"][0]
    assert file["error_kind"] == "read"
    assert "not a regular file" in file["error"]


@pytest.mark.timeout(60)
def test_a_fifo_does_not_hang_the_cli(kit: Any, with_fifo: Path) -> None:
    for backend in ("ruff", "black+pyflakes"):
        out = kit(
            "reviser", "review", "pkg", "--backend", backend, timeout=30, cwd=with_fifo.parent
        )
        assert out.returncode == 1
        assert "pkg/a.py:1:" in out.stdout and "pipe.py" not in out.stdout
        named = kit(
            "reviser", "review", "pkg/pipe.py", "--backend", backend, timeout=30,
            cwd=with_fifo.parent,
        )  # fmt: skip
        assert named.returncode == 1
        assert "pkg/pipe.py: cannot review: not a regular file" in named.stdout


# --------------------------------------------------------------------------- ruff is killed


def _read_pids(folder: Path) -> list[int]:
    return [int(p.read_text()) for p in folder.glob("*.pid") if p.read_text()]


@pytest.mark.parametrize("many", [False, True])
async def test_ruff_subprocesses_are_killed_when_the_review_is_cancelled(
    tmp_path: Path, many: bool
) -> None:
    """A ruff that hangs (a stand-in script) dies with the task that awaits it."""
    pids = tmp_path / "pids"
    pids.mkdir()
    fake = tmp_path / "ruff"
    fake.write_text(f'#!/bin/sh\necho $$ > "{pids}/$$.pid"\nexec sleep 60\n')
    fake.chmod(0o755)
    backend = make_backend(ReviserConfig(), "ruff")
    backend.binary = str(fake)  # type: ignore[attr-defined]
    (tmp_path / "m.py").write_text("x = 1\n")
    if many:
        task = asyncio.ensure_future(backend.areview_files([tmp_path / "m.py"], ["m.py"]))
    else:
        task = asyncio.ensure_future(backend.areview("x = 1\n", "m.py"))
    deadline = time.monotonic() + 20
    while len(_read_pids(pids)) < 2:  # format and check run at once
        assert time.monotonic() < deadline, "the stand-in ruff never started"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for pid in _read_pids(pids):
        assert not pid_alive(pid), pid
