"""CoreC-shaped trees and nuclei: our own stand-ins following upstream mixycronico/Lunareth.

Nothing here is CoreC's code: each stand-in re-enacts, step by step, what the upstream file and
function named in its docstring does with a plugin.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from corec_plugin_kit.cli import cli


def run_install(*args: str) -> Any:
    """The real CLI: ``corec-kit corec install ...`` through the top-level click group."""
    return CliRunner().invoke(cli, ["corec", "install", *args], catch_exceptions=False)


def forget_modules(*tops: str) -> None:
    """Drop a CoreC tree's packages from sys.modules (each test builds its own tree)."""
    for name in list(sys.modules):
        if name.split(".")[0] in tops:
            del sys.modules[name]


# --------------------------------------------------------------- the registry loader (HEAD)


class DBConfig(BaseModel):
    """corec/config_loader.py DBConfig: CoreC's current db_config shape."""

    dbname: str
    user: str
    password: str = ""
    host: str
    port: int = 5432


class RedisConfig(BaseModel):
    """corec/config_loader.py RedisConfig (host, port, username, password)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None


class PluginConfig(BaseModel):
    """corec/config_loader.py PluginConfig: an entry of config["plugins"]."""

    enabled: bool
    path: str


class CoreCConfig(BaseModel):
    db_config: DBConfig
    redis_config: RedisConfig
    plugins: dict[str, PluginConfig] = {}


class Nucleus:
    """corec/nucleus.py CoreCNucleus after ``inicializar()``: the attributes plugins use."""

    def __init__(self, config: CoreCConfig, db_pool: Any, redis_client: Any) -> None:
        self.logger = logging.getLogger("CoreCNucleus")
        self.config = config
        self.db_pool = db_pool
        self.redis_client = redis_client
        self.plugins: dict[str, Any] = {}

    async def ejecutar_plugin(self, plugin_id: str, comando: dict[str, Any]) -> Any:
        """corec/nucleus.py CoreCNucleus.ejecutar_plugin, step by step."""
        plugin = self.plugins.get(plugin_id)
        if not plugin:
            raise ValueError(f"Plugin {plugin_id} no encontrado")
        return await plugin.manejar_comando(comando)


def add_to_plugin_config(
    root: Path, streams: dict[str, Any], state_dir: Path, **sections: Any
) -> None:
    """The operator's own additions to ``plugins/corec_kit/config.json`` after ``install``:
    this test's group and dead-letter stream, a state folder, no metrics port, and ``sections``
    (top-level keys of the plugin's section, e.g. ``reviser=`` or ``database=``)."""
    conf_file = root / "plugins" / "corec_kit" / "config.json"
    conf = json.loads(conf_file.read_text())
    conf["corec_kit"]["kernel"] = {
        "group": streams["group"],
        "dead_letter_stream": streams["dead_letter_stream"],
        "state_dir": str(state_dir),
        "metrics_port": 0,
    }
    conf["corec_kit"].update(sections)
    conf_file.write_text(json.dumps(conf))


def make_registry_tree(root: Path) -> Path:
    """The parts of CoreC's tree the loader and `corec install` look at."""
    (root / "plugins").mkdir(parents=True)
    (root / "plugins" / "__init__.py").write_text("")
    # Detection only: the loading is re-enacted by load_registry_plugin below.
    (root / "plugins" / "registry.py").write_text("# stand-in for CoreC's plugins/registry.py\n")
    (root / "config").mkdir()
    return root


async def load_registry_plugin(
    root: Path, nucleus: Nucleus, name: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """corec/bootstrap.py load_plugins, then plugins/registry.py PluginRegistry.load_plugin.

    load_plugins: ``plugin_conf = info.model_dump()``, then ``plugin_conf.update(raw[name])``
    from the JSON file at ``info.path``; load_plugin: ``importlib.import_module(
    f"plugins.{name}.main")``, ``getattr(mod, "inicializar")``, ``await init_fn(nucleus,
    config)``. CoreC runs from its root, so the tree is on sys.path and paths are relative.
    """
    info = nucleus.config.plugins[name]
    plugin_conf = info.model_dump()
    conf_path = Path(info.path)
    raw = json.loads(conf_path.read_text(encoding="utf-8"))  # noqa: ASYNC240 - as upstream
    plugin_conf.update(raw[name])
    monkeypatch.syspath_prepend(str(root))
    plugin_mod = importlib.import_module(f"plugins.{name}.main")
    init_fn = getattr(plugin_mod, "inicializar", None)
    assert callable(init_fn)
    await init_fn(nucleus, plugin_conf)
    return plugin_conf
