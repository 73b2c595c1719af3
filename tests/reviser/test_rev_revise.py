"""``revise`` (CoreC codex's action) through the kernel, and ``corec-kit reviser revise``.

codex's manager answered ``revise {file}`` by formatting the file and writing it back when the
text changed: ``{"status": "ok", "message": "Archivo revisado", "path": ...}``, else
``"Sin cambios"``. These tests hold the kit's version to that contract, and to what codex did
not do: containment under ``reviser.root``, atomic writes that keep the mode, and a linter
crash or a syntax error never passed off as a clean "Sin cambios".
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import corec_reviser.processor as reviser
import pytest
from corec_reviser.backends import make_backend
from corec_reviser.config import ReviserConfig
from corec_reviser.findings import FileReview
from corec_reviser.revise import ReviseFailed, revise_file

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["ruff", "black+pyflakes"]

UGLY = "x=1\n\n\n\n\nimport os\ny = [1,2 ,3]\n"
FORMATTED = "x = 1\n\n\nimport os\n\ny = [1, 2, 3]\n"
CLEAN = "import sys\n\nprint(sys.argv)\n"
BROKEN = "def f(:\n  x=1\n"
# ruff overflows its stack on this (SIGABRT); pyflakes cannot compile it (RecursionError).
CRASHER = "x = " + "1+" * 100_000 + "1\n"


@pytest.fixture
def revise(corec_register: Any, corec_kernel: Any, tmp_path: Path) -> Any:
    corec_register(reviser, name="reviser")
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (tmp_path / "secret.py").write_text("import secret_stuff\n")

    async def run(
        file: str, backend: str | None = None, section: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        kernel = corec_kernel(sections={"reviser": {"root": str(root), **(section or {})}})
        params: dict[str, Any] = {"file": file}
        if backend is not None:
            params["backend"] = backend
        async with kernel:
            return await kernel.execute({"action": "revise", "params": params})

    run.root = root  # type: ignore[attr-defined]
    return run


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- codex's contract


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_ugly_file_is_rewritten_and_the_answer_is_archivo_revisado(
    revise: Any, backend: str
) -> None:
    path = revise.root / "pkg" / "ugly.py"
    path.write_text(UGLY)
    path.chmod(0o640)
    out = await revise("pkg/ugly.py", backend)
    assert out["status"] == "ok", out
    result = out["result"]
    assert {k: result[k] for k in ("status", "message", "path")} == {
        "status": "ok",
        "message": "Archivo revisado",
        "path": "pkg/ugly.py",
    }
    assert result["changed"] is True and result["reason"] is None
    assert result["backend"] == backend
    assert path.read_text() == FORMATTED
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the mode is kept
    assert leftovers(path.parent) == []  # the temporary file was renamed, not left
    assert result["diff"].startswith("--- a/pkg/ugly.py\n+++ b/pkg/ugly.py\n")
    # The findings are the written file's: `import os` moved from line 6 to line 4.
    assert [(f["code"], f["line"]) for f in result["findings"]] == [("F401", 4)]
    assert result["summary"] == {"files": 1, "findings": 1, "unformatted": 0, "errors": 0}
    # Sent again (at-least-once delivery), it changes nothing.
    again = await revise("pkg/ugly.py", backend)
    assert again["result"]["message"] == "Sin cambios"
    assert again["result"]["changed"] is False


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_clean_file_is_sin_cambios_and_left_untouched(revise: Any, backend: str) -> None:
    path = revise.root / "pkg" / "clean.py"
    path.write_text(CLEAN)
    before = path.stat()
    out = await revise("pkg/clean.py", backend)
    result = out["result"]
    assert {k: result[k] for k in ("status", "message", "path")} == {
        "status": "ok",
        "message": "Sin cambios",
        "path": "pkg/clean.py",
    }
    assert result["changed"] is False and result["reason"] is None and result["diff"] == ""
    assert result["clean"] is True and result["findings"] == []
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert path.read_text() == CLEAN


@pytest.mark.parametrize("backend", BACKENDS)
async def test_line_endings_and_a_byte_order_mark_are_kept(revise: Any, backend: str) -> None:
    crlf = revise.root / "crlf.py"
    crlf.write_bytes(b"x=1\r\ny = 2\r\n")
    bom = revise.root / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbfx=1\n")
    tidy = revise.root / "tidy_bom.py"
    tidy.write_bytes(b"\xef\xbb\xbfx = 1\n")
    assert (await revise("crlf.py", backend))["result"]["message"] == "Archivo revisado"
    assert crlf.read_bytes() == b"x = 1\r\ny = 2\r\n"
    assert (await revise("bom.py", backend))["result"]["message"] == "Archivo revisado"
    assert bom.read_bytes() == b"\xef\xbb\xbfx = 1\n"
    # Neither a false syntax error (pyflakes) nor a dropped mark (ruff on stdin).
    out = await revise("tidy_bom.py", backend)
    assert (out["result"]["message"], out["result"]["reason"]) == ("Sin cambios", None), out
    assert tidy.read_bytes() == b"\xef\xbb\xbfx = 1\n"


async def test_the_configured_backend_is_the_default(revise: Any) -> None:
    (revise.root / "m.py").write_text("x=1\n")
    out = await revise("m.py", section={"backend": "black+pyflakes"})  # the reviser section's
    assert out["result"]["backend"] == "black+pyflakes"
    assert out["result"]["message"] == "Archivo revisado"


async def test_a_symlink_inside_the_root_writes_its_target_and_stays_a_link(
    revise: Any,
) -> None:
    target = revise.root / "pkg" / "real.py"
    target.write_text("x=1\n")
    link = revise.root / "alias.py"
    os.symlink(target, link)
    out = await revise("alias.py")
    assert out["result"]["message"] == "Archivo revisado"
    assert out["result"]["path"] == "pkg/real.py"  # the file that was written
    assert link.is_symlink() and target.read_text() == "x = 1\n"


# --------------------------------------------------------------------------- what is refused


@pytest.mark.parametrize(
    "bad",
    ["../secret.py", "/etc/passwd", "C:/x.py", "\\\\server\\share\\x.py", "pkg/../../secret.py",
     "", "~/x.py", "pkg\\a.py", "missing.py", "pkg/missing.py"],
)  # fmt: skip
async def test_paths_outside_the_root_and_missing_files_are_invalid_params(
    revise: Any, tmp_path: Path, bad: str
) -> None:
    out = await revise(bad)
    assert out["status"] == "error", out
    assert out["error"]["type"] == "invalid_params", out
    assert out["error"]["details"][0]["loc"] == "file"
    assert "secret_stuff" not in json.dumps(out)
    assert (tmp_path / "secret.py").read_text() == "import secret_stuff\n"


async def test_a_symlink_out_of_the_root_is_refused(revise: Any, tmp_path: Path) -> None:
    secret = tmp_path / "secret.py"
    secret.write_text("x=1\n")  # would be rewritten if it were followed
    os.symlink(secret, revise.root / "link.py")
    os.symlink(tmp_path, revise.root / "up")
    for bad in ("link.py", "up/secret.py"):
        out = await revise(bad)
        assert out["error"]["type"] == "invalid_params", (bad, out)
        assert "outside the review root" in out["error"]["message"]
    assert secret.read_text() == "x=1\n"


@pytest.mark.timeout(60)
async def test_a_fifo_a_folder_and_a_non_python_file_are_refused(revise: Any) -> None:
    os.mkfifo(revise.root / "pkg" / "pipe.py")
    (revise.root / "notes.txt").write_text("x=1\n")  # parses as Python; still not revised
    expected = {
        "pkg/pipe.py": "not a regular file",
        "pkg": "a folder",
        "notes.txt": "only Python files",
    }
    for bad, why in expected.items():
        out = await revise(bad)  # a FIFO never blocks the review: it is not opened at all
        assert out["error"]["type"] == "invalid_params", (bad, out)
        assert why in out["error"]["message"], out
    assert (revise.root / "notes.txt").read_text() == "x=1\n"


async def test_unreadable_files_are_refused(revise: Any) -> None:
    (revise.root / "big.py").write_text("x=1\n" * 100)
    (revise.root / "latin1.py").write_bytes(b"s = '\xe9'\n")
    big = await revise("big.py", section={"max_source_bytes": 50})
    assert big["error"]["type"] == "invalid_params" and "max_source_bytes" in str(big)
    latin = await revise("latin1.py")
    assert latin["error"]["type"] == "invalid_params" and "not UTF-8" in str(latin)
    assert (revise.root / "big.py").read_text() == "x=1\n" * 100


async def test_without_a_root_revise_is_refused(corec_register: Any, corec_kernel: Any) -> None:
    corec_register(reviser, name="reviser")
    async with corec_kernel() as kernel:
        out = await kernel.execute({"action": "revise", "params": {"file": "x.py"}})
        extra = await kernel.execute({"action": "revise", "params": {"file": "x.py", "x": 1}})
        none = await kernel.execute({"action": "revise", "params": {}})
    assert out["error"]["type"] == "invalid_params" and "reviser.root" in out["error"]["message"]
    assert extra["error"]["type"] == "invalid_params"
    assert none["error"]["type"] == "invalid_params"


# ----------------------------------------------------------------- never a false "Sin cambios"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_syntax_error_is_not_rewritten_and_the_answer_says_why(
    revise: Any, backend: str
) -> None:
    path = revise.root / "broken.py"
    path.write_text(BROKEN)
    before = path.stat().st_mtime_ns
    out = await revise("broken.py", backend)
    result = out["result"]
    assert result["message"] == "Sin cambios" and result["changed"] is False
    assert result["reason"].startswith("not rewritten: the file does not parse (line 1, column")
    assert result["findings"][0]["code"] == "E999"
    assert result["clean"] is False
    assert path.read_text() == BROKEN and path.stat().st_mtime_ns == before


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_linter_crash_is_an_error_and_writes_nothing(revise: Any, backend: str) -> None:
    path = revise.root / "crash.py"
    path.write_text(CRASHER)
    out = await revise("crash.py", backend)
    assert out["status"] == "error", out
    assert out["error"]["type"] == "handler_error"
    assert "linter crashed, nothing written" in out["error"]["message"]
    assert out["error"]["details"] == {"path": "crash.py"}
    assert path.read_text() == CRASHER


async def test_a_read_only_file_is_not_replaced(revise: Any) -> None:
    path = revise.root / "ro.py"
    path.write_text("x=1\n")
    path.chmod(0o444)
    out = await revise("ro.py")
    assert out["error"]["type"] == "handler_error" and "read-only" in out["error"]["message"]
    assert path.read_text() == "x=1\n" and leftovers(revise.root) == []


class _EditsTheFile:
    """A back-end that formats, while someone else edits the file meanwhile."""

    name = "ruff"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.real = make_backend(ReviserConfig(), "ruff")

    async def areview(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        if fix:
            self.path.write_text("y=2\n")  # an editor saves while the review runs
        return await self.real.areview(source, name, fix=fix)


async def test_a_file_changed_while_revised_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("x=1\n")
    with pytest.raises(ReviseFailed, match="changed while it was revised"):
        await revise_file(_EditsTheFile(path), path.resolve(), "m.py", 10_000)  # type: ignore[arg-type]
    assert path.read_text() == "y=2\n"  # the editor's text, not ours
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- registration


def test_revise_is_registered_with_codex_params_and_no_timeout_of_its_own() -> None:
    from corec_plugin_kit.routing import Register

    register = Register("reviser")
    reviser.corec_register_actions(register)
    spec = next(s for s in register.specs if s.action == "revise")
    assert spec.timeout_s is None  # kernel.handler_timeout_s / action_timeouts.revise bound it
    schema = spec.params_model.model_json_schema()
    assert schema["required"] == ["file"]
    assert set(schema["properties"]) == {"file", "backend"}


async def test_the_operators_action_timeout_bounds_it(revise: Any, corec_kernel: Any) -> None:
    # About 10 s of black on the development machine; the operator allows 1 s.
    heavy = "".join(
        f"def f{i}(a,b):\n    return foo(a,b,[{i},{i + 1},{i + 2}],{{'k':a}})\n"
        for i in range(3000)
    )
    path = revise.root / "heavy.py"
    path.write_text(heavy)
    (revise.root / "warm.py").write_text("x = 1\n")
    section = {"reviser": {"root": str(revise.root), "backend": "black+pyflakes"}}
    async with corec_kernel(sections=section, action_timeouts={"revise": 1}) as kernel:
        # Starting the worker process and importing black may exceed 1 s on a loaded machine:
        # the warm-up gets room (the operator's limit is read at each call).
        kernel.dispatcher.action_timeouts["revise"] = 60
        warm = await kernel.execute({"action": "revise", "params": {"file": "warm.py"}})
        assert warm["result"]["message"] == "Sin cambios", warm  # the process pool is up
        kernel.dispatcher.action_timeouts["revise"] = 1
        start = time.monotonic()
        out = await kernel.execute({"action": "revise", "params": {"file": "heavy.py"}})
        took = time.monotonic() - start
    assert out["error"]["type"] == "timeout", out
    assert took < 2.5, took
    assert path.read_text() == heavy and leftovers(revise.root) == []


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_cli_revises_one_file(kit: Any, tmp_path: Path, backend: str) -> None:
    path = tmp_path / "ugly.py"
    path.write_text(UGLY)
    out = kit("reviser", "revise", "ugly.py", "--backend", backend)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "Archivo revisado: ugly.py"
    assert path.read_text() == FORMATTED
    again = kit("reviser", "revise", "ugly.py", "--backend", backend, "--format", "json")
    assert again.returncode == 0
    data = again.json()
    assert (data["message"], data["path"], data["changed"]) == ("Sin cambios", "ugly.py", False)


def test_the_cli_exit_codes(kit: Any, tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN)
    broken = kit("reviser", "revise", "broken.py")
    assert broken.returncode == 1, broken
    assert "Sin cambios: broken.py" in broken.stdout and "does not parse" in broken.stdout
    assert (tmp_path / "broken.py").read_text() == BROKEN
    (tmp_path / "crash.py").write_text(CRASHER)
    crash = kit("reviser", "revise", "crash.py")
    assert crash.returncode == 1 and "linter crashed" in crash.stderr, crash
    missing = kit("reviser", "revise", "missing.py")
    assert missing.returncode == 2
    (tmp_path / "notes.txt").write_text("x=1\n")
    other = kit("reviser", "revise", "notes.txt")
    assert other.returncode == 2 and "only Python files" in other.stderr
