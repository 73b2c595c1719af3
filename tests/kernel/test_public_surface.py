"""The processors use the kit's public surface only: ``corec_plugin_kit`` and
``corec_plugin_kit.api`` (and ``corec_plugin_kit.testing`` in their tests), never its other
modules, whose layout may change (docs/writing-processors.md, "The public API")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import corec_plugin_kit

ROOT = Path(__file__).resolve().parents[2]
PROCESSORS = ROOT / "processors"
KIT = "corec_plugin_kit"
PUBLIC = {KIT, f"{KIT}.api"}
TESTS_ALSO = {f"{KIT}.testing"}
#: The kit's submodules and subpackages, to catch ``from corec_plugin_kit import cli``.
SUBMODULES = {
    path.stem if path.is_file() else path.name
    for path in Path(corec_plugin_kit.__file__).parent.iterdir()
    if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()
}


def sources() -> list[Path]:
    return sorted(p for p in PROCESSORS.rglob("*.py") if "__pycache__" not in p.parts)


def is_test(path: Path) -> bool:
    return "tests" in path.relative_to(PROCESSORS).parts or path.name.startswith("test_")


def kit_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` for every kit module the code imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == KIT:  # ``from corec_plugin_kit import dispatch``
                found += [
                    (node.lineno, f"{KIT}.{alias.name}")
                    for alias in node.names
                    if alias.name in SUBMODULES
                ]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if name == KIT or name.startswith(f"{KIT}.")]


def test_processors_exist() -> None:
    assert {p.name for p in PROCESSORS.iterdir() if p.is_dir()} >= {
        "generator",
        "manager",
        "reviser",
    }
    assert len(sources()) >= 10
    assert {"api", "dispatch", "cli", "runtime"} <= SUBMODULES


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PROCESSORS)))
def test_processors_import_only_the_public_surface(path: Path) -> None:
    allowed = PUBLIC | TESTS_ALSO if is_test(path) else PUBLIC
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    bad = [f"line {line}: {name}" for line, name in kit_imports(tree) if name not in allowed]
    assert not bad, (
        f"{path.relative_to(ROOT)} imports kit internals ({'; '.join(bad)}): import from "
        f"corec_plugin_kit or corec_plugin_kit.api instead (re-export it there if it is missing)"
    )


def test_the_check_sees_private_imports() -> None:
    code = (
        "import corec_plugin_kit.cli\n"
        "from corec_plugin_kit.runtime.ops import dlq_list\n"
        "from corec_plugin_kit import dispatch, HandlerError\n"
        "from corec_plugin_kit.api import echo_json\n"
        "import importlib\n"
        "importlib.import_module('corec_plugin_kit.procpool')\n"
    )
    names = [name for _, name in kit_imports(ast.parse(code)) if name not in PUBLIC]
    assert names == [
        "corec_plugin_kit.cli",
        "corec_plugin_kit.runtime.ops",
        "corec_plugin_kit.dispatch",
        "corec_plugin_kit.procpool",
    ]


def test_api_names_resolve() -> None:
    import corec_plugin_kit.api as api

    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError):
        api.no_such_name  # noqa: B018
