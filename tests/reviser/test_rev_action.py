"""``review_code`` through the kernel: source, paths under the root, limits, containment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import corec_reviser.processor as reviser
import pytest


@pytest.fixture
def review(corec_register: Any, corec_kernel: Any, tmp_path: Path) -> Any:
    corec_register(reviser, name="reviser")
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("import os\n")
    (root / "pkg" / "b.py").write_text("x = 1\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "c.py").write_text("import sys\n")
    (tmp_path / "secret.py").write_text("import secret_stuff\n")

    async def run(params: dict[str, Any], **section: Any) -> dict[str, Any]:
        kernel = corec_kernel(sections={"reviser": {"root": str(root), **section}})
        async with kernel:
            return await kernel.execute({"action": "review_code", "params": params})

    run.root = root  # type: ignore[attr-defined]
    return run


async def test_source_review(review: Any) -> None:
    out = await review({"source": "import os\n", "filename": "m.py"})
    assert out["status"] == "ok"
    assert out["result"]["files"][0]["findings"][0]["code"] == "F401"
    assert out["result"]["files"][0]["file"] == "m.py"
    assert out["result"]["clean"] is False


@pytest.mark.parametrize("backend", ["ruff", "black+pyflakes"])
async def test_paths_under_the_root_with_excludes(review: Any, backend: str) -> None:
    out = await review({"paths": ["pkg"], "backend": backend})
    files = {f["file"]: f for f in out["result"]["files"]}
    assert set(files) == {"pkg/a.py", "pkg/b.py"}  # __pycache__ excluded
    assert [f["code"] for f in files["pkg/a.py"]["findings"]] == ["F401"]
    assert out["result"]["backend"] == backend


async def test_fix_returns_text_and_writes_nothing(review: Any) -> None:
    path = review.root / "pkg" / "ugly.py"
    path.write_text("x=1\n")
    out = await review({"paths": ["pkg/ugly.py"], "fix": True})
    assert out["result"]["files"][0]["fixed"] == "x = 1\n"
    assert path.read_text() == "x=1\n"


@pytest.mark.parametrize(
    "bad",
    ["../secret.py", "/etc/passwd", "C:/x.py", "\\\\server\\share\\x.py", "pkg/../../secret.py",
     "a\x00b", "", "~/x.py", "pkg\\a.py", "missing.py"],
)  # fmt: skip
async def test_paths_escaping_the_root_are_refused(review: Any, bad: str) -> None:
    out = await review({"paths": [bad]})
    # A NUL is refused by the kernel before the reviser sees it (no command may carry one).
    expected = "invalid_command" if "\x00" in bad else "invalid_params"
    assert out["error"]["type"] == expected, out
    assert "secret_stuff" not in str(out)


async def test_a_symlink_out_of_the_root_is_refused(review: Any, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.py", review.root / "link.py")
    os.symlink(tmp_path, review.root / "up")
    for bad in ("link.py", "up/secret.py", "up"):
        out = await review({"paths": [bad]})
        assert out["error"]["type"] == "invalid_params", bad
    # a symlinked file inside a reviewed folder is skipped, never followed
    os.symlink(tmp_path / "secret.py", review.root / "pkg" / "inner_link.py")
    out = await review({"paths": ["pkg"]})
    assert "pkg/inner_link.py" not in {f["file"] for f in out["result"]["files"]}


async def test_every_bad_path_is_reported_at_once(review: Any) -> None:
    out = await review({"paths": ["../a.py", "/abs.py", "pkg/a.py"]})
    details = out["error"]["details"]
    assert len(details) == 2 and all(d["loc"] == "paths" for d in details)


async def test_limits_and_missing_root(review: Any, corec_kernel: Any) -> None:
    big = await review({"source": "x = 1\n" * 100}, max_source_bytes=50)
    assert (
        big["error"]["type"] == "invalid_params" and "max_source_bytes" in big["error"]["message"]
    )
    many = await review({"paths": ["pkg"]}, max_files=1)
    assert many["error"]["type"] == "invalid_params" and "max_files" in many["error"]["message"]
    kernel = corec_kernel()
    async with kernel:
        out = await kernel.execute({"action": "review_code", "params": {"paths": ["x.py"]}})
    assert out["error"]["type"] == "invalid_params" and "reviser.root" in out["error"]["message"]
    both = await review({"source": "x", "paths": ["pkg"]})
    assert both["error"]["type"] == "invalid_params"
