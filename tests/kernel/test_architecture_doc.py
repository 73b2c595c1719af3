"""docs/architecture.md names every module of the package (as a path or a dotted name)."""

from __future__ import annotations

import ast
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


def table_rows(text: str) -> dict[str, str]:
    """Module path -> its "may import" cell, from the module map."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `corec_plugin_kit/"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells[2]
    return rows


def eager_imports(path: Path) -> set[str]:
    """The kit modules ``path`` imports when it is imported (not inside functions, not under
    ``TYPE_CHECKING``), as ``runtime/state``, ``errors``, ``storage``..."""
    package = path.relative_to(PACKAGE).parent.parts
    found: set[str] = set()

    def resolve(module: str | None, level: int, names: list[str]) -> None:
        if level == 0:
            if not (module or "").startswith("corec_plugin_kit"):
                return
            base = list((module or "").split(".")[1:])
        else:
            base = list(package[: len(package) - (level - 1)]) + (
                module.split(".") if module else []
            )
        for name in names:
            sub = [*base, name]
            if (PACKAGE.joinpath(*sub).with_suffix(".py")).exists() or PACKAGE.joinpath(
                *sub
            ).is_dir():
                found.add("/".join(sub))
            else:  # a name from a package's __init__ (the root's: ``__version__``)
                found.add("/".join(base) or name)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ImportFrom):
                resolve(node.module, node.level, [alias.name for alias in node.names])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("corec_plugin_kit."):
                        found.add("/".join(alias.name.split(".")[1:]))
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def test_modules_import_only_what_architecture_md_allows() -> None:
    """Each module's eager imports of other kit modules are named in its "may import" cell."""
    rows = table_rows(ARCHITECTURE_MD.read_text(encoding="utf-8"))
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        as_path = path.relative_to(ROOT).as_posix()
        cell = rows.get(as_path)
        assert cell is not None, f"{as_path} has no row in the module map"
        own = as_path.removeprefix("corec_plugin_kit/").removesuffix(".py")
        for name in sorted(eager_imports(path) - {own}):
            short = name.removesuffix("/__init__")
            if f"`{short}`" not in cell and f"`{short}/`" not in cell:
                wrong.append(f"{as_path} imports {short}")
    assert not wrong, "not in docs/architecture.md's may-import column: " + "; ".join(wrong)
