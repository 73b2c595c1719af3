"""No function is longer than 60 lines.

The rule: every function and method (``def`` or ``async def``, nested ones included) of the kit
(``corec_plugin_kit/``) and of the processors shipped here (``processors/``) spans at most
:data:`MAX_LINES` lines, counted from its ``def`` line (decorators excluded) to its last line
(``end_lineno``), its docstring included. A longer one is split into helpers. Tests are not held
to it, nor are templates (``templates/`` folders: Jinja, HTML, not Python modules); only real
``.py`` modules are read.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (ROOT / "corec_plugin_kit", ROOT / "processors")
MAX_LINES = 60


def modules() -> list[Path]:
    """The ``.py`` modules under :data:`SOURCES`, but tests, templates and caches."""
    found = []
    for source in SOURCES:
        for path in sorted(source.rglob("*.py")):
            parts = set(path.relative_to(source).parts[:-1])
            if parts & {"tests", "templates", "__pycache__"} or path.name.startswith("test_"):
                continue
            found.append(path)
    return found


def too_long(tree: ast.AST, limit: int = MAX_LINES) -> list[tuple[int, str, int]]:
    """``(def line, name, lines)`` of every function or method of ``tree`` over ``limit``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append((node.lineno, node.name, lines))
    return sorted(found)


def test_modules_are_found() -> None:
    paths = modules()
    assert ROOT / "corec_plugin_kit" / "runtime" / "ops.py" in paths
    assert any(path.is_relative_to(ROOT / "processors") for path in paths)
    assert not any("templates" in path.parts for path in paths)


def test_no_function_is_over_60_lines() -> None:
    long = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        long += [
            f"{path.relative_to(ROOT).as_posix()}:{line} {name} ({lines} lines)"
            for line, name, lines in too_long(tree)
        ]
    assert not long, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(long)


def test_the_count_starts_at_def_and_ends_at_the_last_line() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    code = f"@decorator\n@another\ndef f():\n    '''Doc.'''\n{body}\n"  # 60 lines from `def`
    assert too_long(ast.parse(code)) == []
    code = f"class C:\n    async def m(self):\n        '''Doc.'''\n{body}\n        return 1\n"
    assert too_long(ast.parse(code.replace("\n    x", "\n        x"))) == [(2, "m", 61)]
