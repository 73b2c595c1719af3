"""The kit loaded by CoreC v4's loader (mixycronico/Lunareth 9b85eaf, corec_v4/src).

The test re-enacts src/plugins/plugin_manager.py PluginManager.cargar_plugins and
get_processor, with our own stand-in for src/core/processors/base.py ProcesadorBase.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from corec_standins import run_install

pytestmark = pytest.mark.postgres

PROCESADOR_BASE = '''from abc import ABC, abstractmethod


class ProcesadorBase(ABC):
    """Stand-in for CoreC v4's src/core/processors/base.py."""

    @abstractmethod
    async def procesar(self, datos, contexto):
        raise NotImplementedError
'''


def make_v4_tree(root: Path) -> Path:
    for pkg in ("src", "src/core", "src/core/processors", "src/plugins"):
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "src/core/processors/base.py").write_text(PROCESADOR_BASE)
    (root / "src/plugins/plugin_manager.py").write_text("# stand-in: detection only\n")
    (root / "configs" / "plugins").mkdir(parents=True)
    return root


def load_yaml(path: Path) -> Any:
    """src/utils/config.py load_secrets: yaml.safe_load (the file is JSON, which YAML reads)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is not a dependency of the kit
        return json.loads(path.read_text())
    return yaml.safe_load(path.read_text())


class V4Nucleus:
    """src/core/nucleus.py CoreCNucleus: db_config (v4 shape) and redis_client, no db_pool."""

    def __init__(self, db_config: dict[str, Any]) -> None:
        self.db_config = db_config
        self.redis_client = None
        self.canales_criticos: list[str] = []


async def cargar_plugins(nucleus: V4Nucleus, plugins: dict[str, Any]) -> None:
    """PluginManager.cargar_plugins, step by step (run from the tree's root)."""
    plugins_dir, config_dir = Path("src/plugins"), Path("configs/plugins")
    for plugin_dir in plugins_dir.iterdir():  # noqa: ASYNC240 - as upstream
        if plugin_dir.is_dir() and (plugin_dir / "plugin.json").exists():
            config = json.loads((plugin_dir / "plugin.json").read_text())
            module_path = config["main_class"].split(".")
            module = importlib.import_module(".".join(module_path[:-1]))
            plugin_class = getattr(module, module_path[-1])
            plugin_config = load_yaml(config_dir / config["config_file"])
            plugin = plugin_class(
                config=plugin_config, redis_client=nucleus.redis_client, db_config=nucleus.db_config
            )
            await plugin.inicializar(nucleus)
            plugins[config["name"]] = plugin


def get_processor(plugins: dict[str, Any], base: type, channel: str) -> Any:
    """PluginManager.get_processor: isinstance(plugin, ProcesadorBase) and channel in config."""
    for plugin in plugins.values():
        if isinstance(plugin, base) and channel in plugin.config.get("channels", []):
            return plugin
    return None


async def test_v4_loader_end_to_end(
    tmp_path: Path, fresh_database: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg

    root = make_v4_tree(tmp_path / "corec")
    result = run_install(str(root), "--channel", "kit_cmds")
    assert result.exit_code == 0, result.output
    assert "layout: v4" in result.output
    manifest = json.loads((root / "src/plugins/corec_kit/plugin.json").read_text())
    # config_file as v4 joins it: configs/plugins / config_file.
    assert (root / "configs/plugins" / manifest["config_file"]).is_file()

    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    base = importlib.import_module("src.core.processors.base").ProcesadorBase  # nucleus import
    nucleus = V4Nucleus(fresh_database)
    plugins: dict[str, Any] = {}
    await cargar_plugins(nucleus, plugins)
    plugin = plugins["corec_kit"]
    try:
        assert get_processor(plugins, base, "kit_cmds") is plugin
        assert get_processor(plugins, base, "other") is None
        plugin.set_nucleus(nucleus)  # CoreCNucleus.get_procesador does this
        pong = await plugin.procesar({"action": "ping", "id": "v4-1"}, {"canal": "kit_cmds"})
        assert pong["status"] == pong["estado"] == "ok"
        assert pong["message"] == "ok"
    finally:
        await plugin.detener()  # PluginManager.detener_plugins
    conn = await asyncpg.connect(**fresh_database)
    try:
        row = await conn.fetchrow(
            "SELECT action, status FROM corec_commands WHERE command_key='v4-1'"
        )
    finally:
        await conn.close()
    assert tuple(row) == ("ping", "ok")
