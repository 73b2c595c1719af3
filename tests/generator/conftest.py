"""Generator test helpers: a kernel with the generator processor and its output roots in tmp."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import corec_generator.processor as generator
import pytest


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    """The configured output roots, plus an ``outside`` folder nothing may ever reach."""
    paths = {
        "plugins": tmp_path / "roots" / "plugins",
        "websites": tmp_path / "roots" / "websites",
        "outside": tmp_path / "outside",
    }
    for path in paths.values():
        path.mkdir(parents=True)
    return paths


@pytest.fixture
def gen_exec(
    corec_register: Any, corec_kernel: Any, roots: dict[str, Path]
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``await gen_exec(action, params, **section)``: one command through the real dispatch."""
    corec_register(generator, name="generator")

    async def run(action: str, params: dict[str, Any], **section: Any) -> dict[str, Any]:
        config = {
            "output_plugins": str(roots["plugins"]),
            "output_websites": str(roots["websites"]),
            **section,
        }
        kernel = corec_kernel(sections={"generator": config})
        async with kernel:
            return await kernel.execute({"action": action, "params": params})

    return run


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, bytes | str]]:
    """``snapshot(root)``: every entry below ``root``, to prove a refused run changed nothing."""
    return tree


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry below ``root``: file bytes, ``"dir"`` or ``"-> target"`` for symlinks."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out
