"""``generate_plugin`` with ``kind="corec"``: a CoreC plugin folder that CoreC itself can load.

What CoreC (mixycronico/Lunareth) does with a plugin, described here rather than imported:

* ``plugins/registry.py``, ``PluginRegistry.load_plugin(nucleus, name, config)``: imports the
  module ``plugins.<name>.main`` with ``importlib.import_module``, takes its module-level
  ``inicializar`` (an ``AttributeError`` when it is missing or not callable) and awaits
  ``inicializar(nucleus, config)``;
* ``corec/bootstrap.py``: ``config`` is the plugin's entry of ``corec_config.json``
  (``enabled``, ``path``, ...) updated with the ``<name>`` section of the JSON file at ``path``;
* ``corec/nucleus.py``, ``CoreCNucleus``: carries ``plugins`` (a dict), ``logger``,
  ``redis_client`` and ``db_pool`` (``None`` until connected);
  ``ejecutar_plugin(plugin_id, comando)`` looks the plugin up in ``nucleus.plugins`` (a
  ``ValueError`` when absent) and returns ``await plugin.manejar_comando(comando)``;
  ``detener()`` awaits each component's ``detener()``.

Upstream codex's own ``generate_plugin`` renders a ``main.py`` whose ``inicializar`` is a plain
function returning the plugin (so the registry's ``await`` fails) and which imports a
``corec.plugins.base`` module that CoreC does not have: the tests below load ours the way the
registry does, which that scaffold would not survive.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import corec_generator.processor as generator
import pytest
from corec_generator.engine import ANSWERS_FILE, bundled_templates
from corec_generator.processor import GeneratePluginParams, GeneratorConfig
from pydantic import BaseModel, Field

from corec_plugin_kit import CommandContext, InvalidParams

REPO = Path(__file__).resolve().parents[2]

COREC_FILES = {
    "__init__.py",
    "main.py",
    "config.json",
    "README.md",
    "requirements.txt",
    "pytest.ini",
    "tests/test_weather.py",
    ANSWERS_FILE,
}


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def new_entries(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {path for path, value in after.items() if before.get(path) != value} | (
        set(before) - set(after)
    )


class StandInNucleus:
    """What CoreCNucleus lends a plugin: ``plugins``, ``logger``, no Redis, no PostgreSQL."""

    def __init__(self) -> None:
        self.plugins: dict[str, Any] = {}
        self.logger = logging.getLogger("test.corec.nucleus")
        self.redis_client = None
        self.db_pool = None

    async def ejecutar_plugin(self, plugin_id: str, comando: Any) -> Any:
        # CoreCNucleus.ejecutar_plugin: look up, ValueError when absent, await manejar_comando.
        plugin = self.plugins.get(plugin_id)
        if not plugin:
            raise ValueError(f"Plugin {plugin_id} no encontrado")
        return await plugin.manejar_comando(comando)


class PluginCommand(BaseModel):
    """Shaped like CoreC's ``plugins.PluginCommand`` (a pydantic command with action, params)."""

    action: str
    params: dict[str, Any] = Field(default_factory=dict)


@pytest.fixture
def corec_import(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``corec_import(parent, name)``: ``plugins.<name>.main`` imported as CoreC's registry does
    (``importlib.import_module`` with ``parent``, the folder holding ``plugins/``, on sys.path);
    every ``plugins`` module is forgotten afterwards."""

    def forget() -> None:
        for key in [k for k in sys.modules if k == "plugins" or k.startswith("plugins.")]:
            monkeypatch.delitem(sys.modules, key)

    forget()

    def load(parent: Path, name: str) -> Any:
        monkeypatch.syspath_prepend(str(parent))
        importlib.invalidate_caches()
        return importlib.import_module(f"plugins.{name}.main")

    yield load
    for key in [k for k in sys.modules if k == "plugins" or k.startswith("plugins.")]:
        del sys.modules[key]


async def load_plugin(module: Any, nucleus: Any, config: dict[str, Any]) -> Any:
    """The body of CoreC's ``PluginRegistry.load_plugin`` after its import."""
    init_fn = getattr(module, "inicializar", None)
    if not callable(init_fn):
        raise AttributeError("no expone función inicializar")
    return await init_fn(nucleus, config)


def bootstrap_config(plugin_dir: Path, name: str) -> dict[str, Any]:
    """What CoreC's bootstrap passes: the corec_config.json entry updated with config.json's
    ``<name>`` section."""
    conf = {"enabled": True, "path": str(plugin_dir / "config.json")}
    raw = json.loads((plugin_dir / "config.json").read_text())
    conf.update(raw[name])
    return conf


# --------------------------------------------------------------------------- the folder


async def test_corec_kind_writes_the_guide_layout_and_nothing_else(
    gen_exec: Any, roots: dict[str, Path], snapshot: Any, tmp_path: Path
) -> None:
    before = snapshot(tmp_path)
    envelope = await gen_exec(
        "generate_plugin", {"plugin_name": "weather", "kind": "corec", "author": "Ana"}
    )
    assert envelope["status"] == "ok", envelope["error"]
    result = envelope["result"]
    project = roots["plugins"] / "weather"
    assert result["template"] == "corec_plugin"
    assert result["project_dir"] == str(project)
    assert files_of(project) == COREC_FILES
    assert result["created"] == len(COREC_FILES)
    # Every new entry anywhere below tmp_path is the project folder or inside it.
    changed = new_entries(before, snapshot(tmp_path))
    assert changed, "nothing was written"
    prefix = project.relative_to(tmp_path).as_posix()
    assert all(p == prefix or p.startswith(prefix + "/") for p in changed), changed - {prefix}
    for path in project.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")
    config = json.loads((project / "config.json").read_text())
    assert config == {"weather": {"greeting": "hello"}}
    answers = json.loads((project / ANSWERS_FILE).read_text())
    assert answers["_template"] == "corec_plugin"
    assert answers["answers"] == {
        "plugin_name": "weather",
        "kind": "corec",
        "description": None,
        "author": "Ana",
    }
    readme = (project / "README.md").read_text()
    assert "plugins.weather.main" in readme and "Ana" in readme


async def test_corec_dry_run_writes_nothing(
    gen_exec: Any, roots: dict[str, Path], snapshot: Any, tmp_path: Path
) -> None:
    before = snapshot(tmp_path)
    params = {"plugin_name": "weather", "kind": "corec", "dry_run": True, "output": "team"}
    envelope = await gen_exec("generate_plugin", params)
    assert envelope["status"] == "ok", envelope["error"]
    assert {f["path"] for f in envelope["result"]["files"]} == COREC_FILES
    assert snapshot(tmp_path) == before


async def test_processor_kind_is_unchanged(gen_exec: Any, roots: dict[str, Path]) -> None:
    envelope = await gen_exec("generate_plugin", {"plugin_name": "demo", "kind": "processor"})
    assert envelope["status"] == "ok", envelope["error"]
    assert envelope["result"]["template"] == "plugin"
    assert (roots["plugins"] / "demo" / "demo" / "processor.py").is_file()
    assert not (roots["plugins"] / "demo" / "main.py").exists()


# --------------------------------------------------------------------------- loaded as CoreC does


async def test_generated_main_loads_like_corec_registry(
    gen_exec: Any, roots: dict[str, Path], corec_import: Any
) -> None:
    envelope = await gen_exec(
        "generate_plugin", {"plugin_name": "weather", "kind": "corec", "description": 'say "hi"'}
    )
    assert envelope["status"] == "ok", envelope["error"]
    project = roots["plugins"] / "weather"
    assert roots["plugins"].name == "plugins"  # the output root plays CoreC's plugins/ folder
    main = corec_import(roots["plugins"].parent, "weather")
    assert Path(main.__file__) == project / "main.py"
    assert main.DESCRIPTION == 'say "hi"'
    assert inspect.iscoroutinefunction(main.inicializar), "the registry awaits inicializar"

    nucleus = StandInNucleus()
    plugin = await load_plugin(main, nucleus, bootstrap_config(project, "weather"))
    assert nucleus.plugins == {"weather": plugin}
    assert plugin.config["enabled"] is True and plugin.config["greeting"] == "hello"

    answer = await nucleus.ejecutar_plugin(
        "weather", {"action": "hello", "params": {"who": "CoreC"}}
    )
    assert answer == {
        "status": "ok",
        "plugin": "weather",
        "action": "hello",
        "result": {"greeting": "hello CoreC"},
    }
    answer = await nucleus.ejecutar_plugin("weather", PluginCommand(action="ping"))
    assert answer["status"] == "ok"
    assert answer["result"] == {"pong": True, "redis": False, "db": False}
    answer = await nucleus.ejecutar_plugin(
        "weather", PluginCommand(action="hello", params={"who": "model"})
    )
    assert answer["result"] == {"greeting": "hello model"}

    for comando, kind in [
        ({"action": "launch"}, "unknown_action"),
        ({"params": {}}, "invalid_command"),
        (["hello"], "invalid_command"),
        ({"action": "hello", "params": {"who": 3}}, "invalid_params"),
        ({"action": "hello", "params": {"who": "x", "extra": 1}}, "invalid_params"),
    ]:
        answer = await nucleus.ejecutar_plugin("weather", comando)
        assert answer["status"] == "error", (comando, answer)
        assert answer["error"] == kind and answer["message"], (comando, answer)

    await plugin.detener()
    await plugin.detener()
    answer = await nucleus.ejecutar_plugin("weather", {"action": "ping"})
    assert (answer["status"], answer["error"]) == ("error", "stopped")


async def test_generated_main_reads_config_as_corec_passes_it(
    gen_exec: Any, roots: dict[str, Path], corec_import: Any
) -> None:
    assert (await gen_exec("generate_plugin", {"plugin_name": "greeter", "kind": "corec"}))[
        "status"
    ] == "ok"
    project = roots["plugins"] / "greeter"
    (project / "config.json").write_text(json.dumps({"greeter": {"greeting": "hola"}}))
    main = corec_import(roots["plugins"].parent, "greeter")
    for config in (bootstrap_config(project, "greeter"), None, {"greeter": {"greeting": "hola"}}):
        nucleus = StandInNucleus()
        plugin = await load_plugin(main, nucleus, config)  # type: ignore[arg-type]
        answer = await plugin.manejar_comando({"action": "hello", "params": {"who": "x"}})
        assert answer["result"] == {"greeting": "hola x"}, config
    # An invalid configuration is a ValueError, as CoreC's registry documents for load_plugin.
    with pytest.raises(ValueError, match="greeting"):
        await load_plugin(main, StandInNucleus(), {"enabled": True, "greeting": 5})


@pytest.mark.parametrize("autoload", [True, False], ids=["with-plugins", "pytest-only"])
async def test_generated_plugin_own_tests_pass(
    gen_exec: Any, roots: dict[str, Path], autoload: bool
) -> None:
    """``python -m pytest`` in the generated folder: with this venv's pytest plugins loaded,
    and with none (the tests need nothing but pytest)."""
    params = {"plugin_name": "weather", "kind": "corec", "description": 'it\'s "quoted" \\'}
    assert (await gen_exec("generate_plugin", params))["status"] == "ok"
    project = roots["plugins"] / "weather"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "13 passed" in proc.stdout, proc.stdout
    assert "warning" not in proc.stdout.lower(), proc.stdout


# --------------------------------------------------------------------------- kind by wire


def _ctx(wire: str, roots: dict[str, Path]) -> CommandContext:
    config = GeneratorConfig(output_plugins=roots["plugins"])
    # No kernel: generate_plugin reads only the config and the wire from its context.
    kernel: Any = None
    return CommandContext(
        "k1", "generate_plugin", "generator", 1, None, None, config, kernel, wire=wire
    )


@pytest.mark.parametrize(
    ("wire", "kind", "template"),
    [
        ("codex", None, "corec_plugin"),
        ("kit", None, "plugin"),
        ("codex", "processor", "plugin"),
        ("kit", "corec", "corec_plugin"),
    ],
)
def test_handler_picks_the_kind_by_wire(
    roots: dict[str, Path], wire: str, kind: str | None, template: str
) -> None:
    params = GeneratePluginParams(plugin_name="weather", kind=kind)  # type: ignore[arg-type]
    result = generator.generate_plugin(params, _ctx(wire, roots))
    assert result["template"] == template
    project = roots["plugins"] / "weather"
    marker = "main.py" if template == "corec_plugin" else "pyproject.toml"
    assert (project / marker).is_file()
    answers = json.loads((project / ANSWERS_FILE).read_text())["answers"]
    assert answers["kind"] == ("corec" if template == "corec_plugin" else "processor")


async def test_codex_wire_through_the_dispatcher_defaults_to_corec(
    corec_register: Any, corec_kernel: Any, roots: dict[str, Path]
) -> None:
    corec_register(generator, name="generator")
    kernel = corec_kernel(sections={"generator": {"output_plugins": str(roots["plugins"])}})
    async with kernel:
        results = {}
        for key, wire in [("c", "codex"), ("k", "kit"), ("none", None)]:
            command: dict[str, Any] = {
                "action": "generate_plugin",
                "params": {"plugin_name": "weather", "output": key},
                "id": key,
            }
            if wire is not None:
                command["wire"] = wire
            envelope, error = await kernel.dispatcher.dispatch(command)
            assert error is None, envelope
            results[key] = envelope["result"]
    assert results["c"]["template"] == "corec_plugin"
    assert (roots["plugins"] / "c" / "weather" / "main.py").is_file()
    assert results["k"]["template"] == "plugin"
    assert results["none"]["template"] == "plugin"
    assert (roots["plugins"] / "none" / "weather" / "weather" / "processor.py").is_file()


# --------------------------------------------------------------------------- refused names

HOSTILE = [
    "../evil",
    "a/b",
    "a\\b",
    "/etc",
    "..",
    "C:",
    "con",
    "nul.txt",
    "os",
    "kernel",
    "tests",
    "class",
    "9lives",
    " lead",
    "plug\nin",
    "a\u202eb",
    "x" * 65,
]


async def test_hostile_names_and_outputs_are_refused_for_corec(
    gen_exec: Any, tmp_path: Path, snapshot: Any
) -> None:
    before = snapshot(tmp_path)
    cases = [{"plugin_name": name} for name in HOSTILE]
    cases += [
        {"plugin_name": "fine", "output": out}
        for out in ("../up", "/abs", "a/../../x", "~/x", "C:/x", "\\\\host\\share", "a/CON")
    ]
    for params in cases:
        envelope = await gen_exec("generate_plugin", {**params, "kind": "corec"})
        assert envelope["status"] == "error", params
        assert envelope["error"]["type"] == "invalid_params", (params, envelope["error"])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "hint"),
    [("Weather", "'weather'"), ("my-plugin", "'my_plugin'"), ("a__b", "'a_b'"), ("registry", "")],
)
async def test_corec_names_must_be_their_package_name(
    gen_exec: Any, roots: dict[str, Path], name: str, hint: str
) -> None:
    """CoreC imports ``plugins.<name>.main`` and keys ``nucleus.plugins`` by ``name``: the name
    is refused (never transformed) unless it is already its package name, and ``registry``
    would shadow CoreC's ``plugins/registry.py``. A processor may still be called so."""
    envelope = await gen_exec("generate_plugin", {"plugin_name": name, "kind": "corec"})
    assert envelope["error"]["type"] == "invalid_params"
    details = envelope["error"]["details"]
    assert [d["loc"] for d in details] == ["plugin_name"]
    assert hint in details[0]["msg"]
    assert list(roots["plugins"].iterdir()) == []
    if name != "registry":
        ok = await gen_exec("generate_plugin", {"plugin_name": name, "dry_run": True})
        assert ok["status"] == "ok", ok["error"]


def test_codex_wire_checks_corec_names_in_the_handler(roots: dict[str, Path]) -> None:
    """Without ``kind`` the params model cannot know the kind; the handler checks the name
    once the wire has decided (and a kit command may still use the name for a processor)."""
    params = GeneratePluginParams(plugin_name="My-Plugin", dry_run=True)
    with pytest.raises(InvalidParams) as info:
        generator.generate_plugin(params, _ctx("codex", roots))
    assert [d["loc"] for d in info.value.details] == ["plugin_name"]  # type: ignore[union-attr]
    assert "'my_plugin'" in str(info.value)
    assert generator.generate_plugin(params, _ctx("kit", roots))["template"] == "plugin"
    assert list(roots["plugins"].iterdir()) == []


async def test_corec_name_reported_with_every_other_problem(
    gen_exec: Any, roots: dict[str, Path]
) -> None:
    params = {"plugin_name": "My-Plugin", "kind": "corec", "output": "../x", "author": "a\nb"}
    envelope = await gen_exec("generate_plugin", params)
    assert envelope["error"]["type"] == "invalid_params"
    locs = sorted(d["loc"] for d in envelope["error"]["details"])
    assert locs == ["author", "output", "plugin_name"]
    assert list(roots["plugins"].iterdir()) == []


# --------------------------------------------------------------------------- CLI


def test_cli_kind_option(corec_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "plugins"
    result = corec_cli("generator", "plugin", "weather", "--kind", "corec", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert files_of(out / "weather") == COREC_FILES
    result = corec_cli("generator", "plugin", "proc", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["template"] == "plugin"  # default: processor
    result = corec_cli("generator", "plugin", "x", "--kind", "codex", "-o", str(out))
    assert result.exit_code == 2
    result = corec_cli("generator", "plugin", "My-Plugin", "--kind", "corec", "-o", str(out))
    assert result.exit_code == 2
    assert "my_plugin" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["proc", "weather"]


def test_cli_reuses_corec_answers(corec_cli: Any, tmp_path: Path) -> None:
    first = tmp_path / "a" / "plugins"
    result = corec_cli(
        "generator", "plugin", "weather", "--kind", "corec", "-o", str(first), "--author", "Bo"
    )
    assert result.exit_code == 0, result.output
    answers = str(first / "weather" / ANSWERS_FILE)
    second = tmp_path / "b" / "plugins"
    result = corec_cli("generator", "plugin", "--answers", answers, "-o", str(second))
    assert result.exit_code == 0, result.output
    for rel in COREC_FILES:
        assert (first / "weather" / rel).read_bytes() == (second / "weather" / rel).read_bytes()
    # The flag overrides the file's kind.
    third = tmp_path / "c"
    result = corec_cli(
        "generator", "plugin", "--answers", answers, "--kind", "processor", "-o", str(third)
    )
    assert result.exit_code == 0, result.output
    assert (third / "weather" / "pyproject.toml").is_file()
    result = corec_cli("generator", "site", "fastapi", "--answers", answers, "-o", str(third))
    assert result.exit_code == 2
    assert "not 'fastapi_app'" in result.output


# --------------------------------------------------------------------------- shipped templates


def test_corec_templates_are_bundled() -> None:
    corec = bundled_templates() / "corec_plugin"
    assert (corec / "template.json").is_file()
    assert (corec / "main.py.jinja").is_file()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_ships_the_corec_templates(tmp_path: Path) -> None:
    """The build hook copies the whole templates/ folder: corec_plugin/ is in the wheel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO / "processors" / "generator"),
        ],
        check=True,
        env=env,
        timeout=540,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("corec_generator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    source = REPO / "templates" / "corec_plugin"
    expected = {
        "corec_generator/templates/corec_plugin/" + p.relative_to(source).as_posix()
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected and expected <= names, expected - names
