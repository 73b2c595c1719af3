"""docs/architecture.md names every module of the package (as a path or a dotted name)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "corec_plugin_kit"
ARCHITECTURE_MD = ROOT / "docs" / "architecture.md"


def module_names(path: Path) -> tuple[str, str]:
    """``corec_plugin_kit/runtime/worker.py`` and ``corec_plugin_kit.runtime.worker``."""
    relative = path.relative_to(ROOT)
    return relative.as_posix(), ".".join(relative.with_suffix("").parts)


def mentions(text: str, name: str) -> bool:
    """``name`` as a whole name: ``corec_plugin_kit.cli`` is not found in ``...cli_x``."""
    return re.search(rf"(?<![\w./]){re.escape(name)}(?![\w/]|\.\w)", text) is not None


def test_every_module_is_in_architecture_md() -> None:
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 1
    missing = [
        as_path
        for as_path, dotted in map(module_names, modules)
        if not mentions(text, as_path) and not mentions(text, dotted)
    ]
    assert not missing, f"docs/architecture.md does not mention: {', '.join(missing)}"


def test_mentions_needs_the_whole_name() -> None:
    assert mentions("see `corec_plugin_kit/cli.py`.", "corec_plugin_kit/cli.py")
    assert mentions("see corec_plugin_kit.cli.", "corec_plugin_kit.cli")
    assert not mentions("corec_plugin_kit/runtime/cli.py", "corec_plugin_kit/cli.py")
    assert not mentions("corec_plugin_kit.runtime.worker", "corec_plugin_kit.runtime")
    assert not mentions("corec_plugin_kit.cli_x", "corec_plugin_kit.cli")
