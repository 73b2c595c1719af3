"""The processors use the kit's public surface only: ``corec_plugin_kit`` and
``corec_plugin_kit.api`` (and ``corec_plugin_kit.testing`` in their tests), never its other
modules, whose layout may change (docs/writing-processors.md, "The public API"); and of the
kernel (``ctx.kernel``, ``kernel``) only the attributes that page lists ("What a processor may
use of the kernel")."""

from __future__ import annotations

import ast
import inspect
import re
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


# --------------------------------------------------------------------------- ctx.kernel

WRITING_PROCESSORS_MD = ROOT / "docs" / "writing-processors.md"
KERNEL_SECTION = "### What a processor may use of the kernel"


def allowed_kernel_attributes() -> set[str]:
    """The attributes of the kernel docs/writing-processors.md lets processors use: the first
    cell of each row of the table under :data:`KERNEL_SECTION` (``processor_config(name)``
    gives ``processor_config``)."""
    text = WRITING_PROCESSORS_MD.read_text("utf-8")
    assert KERNEL_SECTION in text, f"docs/writing-processors.md has no {KERNEL_SECTION!r}"
    section = text.split(KERNEL_SECTION, 1)[1].split("\n#", 1)[0]
    rows = section.split("\n|---", 1)[1].splitlines()[1:]  # the table's rows, past its head
    names = set()
    for line in rows:
        if not line.startswith("|"):
            break
        match = re.match(r"\|\s*`([A-Za-z_]\w*)[^`]*`\s*\|", line)
        assert match, f"not a kernel attribute row: {line}"
        names.add(match.group(1))
    return names


def is_kernel(node: ast.expr, aliases: set[str]) -> bool:
    """Is ``node`` a kernel: the name ``kernel`` (or an alias of one), or ``<anything>.kernel``
    but ``settings.kernel`` (the kernel section of the config, not the kernel)?"""
    if isinstance(node, ast.Name):
        return node.id == "kernel" or node.id in aliases
    if isinstance(node, ast.Attribute) and node.attr == "kernel":
        owner = node.value
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        return owner_name != "settings"
    return False


def kernel_aliases(tree: ast.AST) -> set[str]:
    """Other names a kernel goes by in a module: ``k = ctx.kernel``, ``def f(k: Kernel)``."""
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and is_kernel(node.value, set()):
            aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif (
            isinstance(node, ast.arg)
            and node.annotation is not None
            and re.search(r"\bKernel\b", ast.unparse(node.annotation))
        ):
            aliases.add(node.arg)
    return aliases


def kernel_attributes(tree: ast.AST) -> list[tuple[int, str, str]]:
    """``(line, expression, attribute)`` for every attribute of a kernel the code uses
    (``ctx.kernel.routing``, ``kernel.redis``, ``getattr(kernel, "store")``)."""
    aliases = kernel_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_kernel(node.value, aliases):
            found.append((node.lineno, ast.unparse(node), node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "setattr"}
            and len(node.args) >= 2
            and is_kernel(node.args[0], aliases)
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            found.append((node.lineno, ast.unparse(node), node.args[1].value))
    return sorted(found)


def test_the_allowed_kernel_attributes_are_the_kernels() -> None:
    """What the docs allow exists on ``Kernel``, and the internals are not allowed."""
    from corec_plugin_kit.kernel import Kernel

    allowed = allowed_kernel_attributes()
    assert {"settings", "redis", "store"} <= allowed
    assert not allowed & {"processors", "routing", "dispatcher", "runtime", "redis_handle"}
    source = Path(inspect.getsourcefile(Kernel) or "").read_text("utf-8")
    init = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    assigned = {
        node.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self"
    }
    missing = sorted(name for name in allowed if not hasattr(Kernel, name) and name not in assigned)
    assert not missing, f"docs/writing-processors.md allows what Kernel does not have: {missing}"


@pytest.mark.parametrize(
    "path",
    [p for p in sources() if not is_test(p)],
    ids=lambda p: str(p.relative_to(PROCESSORS)),
)
def test_processors_use_only_the_documented_kernel_attributes(path: Path) -> None:
    allowed = allowed_kernel_attributes()
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    bad = [
        f"line {line}: {expr}"
        for line, expr, attr in kernel_attributes(tree)
        if attr not in allowed and not attr.startswith("__")
    ]
    assert not bad, (
        f"{path.relative_to(ROOT)} uses kernel attributes docs/writing-processors.md does not "
        f"list ({'; '.join(bad)}): use a corec_plugin_kit.api function, or document the "
        f"attribute under {KERNEL_SECTION!r}"
    )


def test_the_check_sees_kernel_attributes() -> None:
    code = (
        "async def h(params, ctx):\n"
        "    pool = ctx.kernel.dispatcher.pool\n"
        "    k = ctx.kernel\n"
        "    k.routing.get('x')\n"
        "    self.kernel.settings.kernel.stream_in\n"
        "    getattr(kernel, 'store')\n"
        "def f(kern: 'Kernel', settings):\n"
        "    kern.processors.infos\n"
        "    settings.kernel.stream_in\n"
    )
    found = [(line, attr) for line, _, attr in kernel_attributes(ast.parse(code))]
    assert found == [
        (2, "dispatcher"),
        (4, "routing"),
        (5, "settings"),
        (6, "store"),
        (8, "processors"),
    ]
    allowed = allowed_kernel_attributes()
    assert [attr for _, attr in found if attr not in allowed] == [
        "dispatcher",
        "routing",
        "processors",
    ]
