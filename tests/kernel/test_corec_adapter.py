"""The CoreC adapter, driven the way CoreC's plugin loader drives it.

CoreC finds ``plugin.json``, imports ``main_class``, constructs it with
``(config, redis_client, db_config)`` and awaits ``inicializar``, ``procesar``, ``detener``.
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from pathlib import Path

import orjson
import pytest

import corec_plugin_kit
from corec_plugin_kit import ConfigError


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("COREC_"):
            monkeypatch.delenv(name)
    return tmp_path


def load_main_class() -> type:
    """What CoreC's loader does: read the installed plugin.json, import its main_class."""
    manifest = json.loads(resources.files("corec_plugin_kit").joinpath("plugin.json").read_text())
    module_name, _, class_name = manifest["main_class"].rpartition(".")
    cls: type = getattr(importlib.import_module(module_name), class_name)
    return cls


def test_plugin_json_is_shipped_and_matches_the_package() -> None:
    manifest = json.loads(resources.files("corec_plugin_kit").joinpath("plugin.json").read_text())
    assert manifest["main_class"] == "corec_plugin_kit.corec_adapter.CorecKitPlugin"
    assert manifest["version"] == corec_plugin_kit.__version__
    from corec_plugin_kit.corec_adapter import plugin_manifest

    assert plugin_manifest() == manifest


class FakeRedisClient:
    """Stands in for CoreC's redis client: only ``ping`` is used (by the health action)."""

    def __init__(self) -> None:
        self.pings = 0
        self.closed = False

    async def ping(self) -> bool:
        self.pings += 1
        return True

    async def close(self) -> None:  # pragma: no cover - the adapter must never call it
        self.closed = True


async def test_corec_drives_the_three_calls(isolated: Path) -> None:
    cls = load_main_class()
    redis_client = FakeRedisClient()
    db_config = {"host": "db", "port": 5432}
    config = {"enabled": True, "kernel": {"state_dir": str(isolated / "s"), "metrics_port": 0}}
    plugin = cls(config, redis_client, db_config)
    await plugin.inicializar({"nucleus": "stand-in"})
    try:
        assert plugin.kernel.corec_db_config == db_config
        pong = await plugin.procesar(
            {"action": "ping", "params": {"echo": "hola"}, "id": "c-1"}, {}
        )
        assert pong["status"] == pong["estado"] == "ok"
        assert pong["result"]["echo"] == "hola"
        assert pong["id"] == "c-1"
        assert pong["processor"] == "manager"
        assert "mensaje" not in pong

        unknown = await plugin.procesar({"action": "nope"}, None)
        assert unknown["estado"] == unknown["status"] == "error"
        assert unknown["error"]["type"] == "unknown_action"
        assert unknown["mensaje"] == unknown["error"]["message"]

        invalid = await plugin.procesar({"action": "ping", "params": {"bad": 1}}, None)
        assert invalid["error"]["type"] == "invalid_params"

        # The stream forms and JSON text are accepted too.
        flat = await plugin.procesar({"action": "ping", "params": '{"echo": 2}'}, None)
        assert flat["result"]["echo"] == 2
        wire = await plugin.procesar({"payload": orjson.dumps({"action": "ping"})}, None)
        assert wire["estado"] == "ok"
        text = await plugin.procesar('{"action": "ping", "params": {"echo": 3}}', None)
        assert text["result"]["echo"] == 3

        broken = await plugin.procesar(42, None)
        assert broken["error"]["type"] == "invalid_command"
        not_json = await plugin.procesar("{", None)
        assert not_json["error"]["type"] == "invalid_command"

        health = await plugin.procesar({"action": "health"}, {"canal": "x"})
        assert health["result"]["redis"] == "ok"
        assert redis_client.pings == 1
    finally:
        await plugin.detener()
    await plugin.detener()  # twice is fine
    assert not redis_client.closed
    after = await plugin.procesar({"action": "ping"}, None)
    assert after["estado"] == "error"
    assert "inicializar" in after["mensaje"]


async def test_contexto_reaches_handlers_as_meta(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corec_plugin_kit.corec_adapter import CorecKitPlugin

    # COREC_PLUGINS is how an uninstalled module joins; write one for this test.
    (isolated / "look_proc.py").write_text(
        "from corec_plugin_kit import hookimpl\n"
        "async def look(params, ctx):\n    return ctx.meta\n"
        "@hookimpl\ndef corec_register_actions(register):\n    register('look', look)\n"
    )
    monkeypatch.syspath_prepend(str(isolated))
    monkeypatch.setenv("COREC_PLUGINS", "look_proc")
    plugin = CorecKitPlugin({"kernel": {"state_dir": str(isolated / "s")}})
    await plugin.inicializar(None)
    with_ctx = await plugin.procesar({"action": "look"}, {"canal": "c1"})
    own_meta = await plugin.procesar({"action": "look", "meta": {"m": 1}}, {"canal": "c1"})
    await plugin.detener()
    assert with_ctx["result"] == {"canal": "c1"}
    assert own_meta["result"] == {"m": 1}


async def test_config_sections_and_file_are_honoured(isolated: Path) -> None:
    from corec_plugin_kit.corec_adapter import CorecKitPlugin

    (isolated / "kit.toml").write_text('[kernel]\ngroup = "from-file"\nhandler_timeout_s = 9\n')
    plugin = CorecKitPlugin(
        {"config_file": str(isolated / "kit.toml"), "kernel": {"handler_timeout_s": 3}, "x": 1}
    )
    await plugin.inicializar(None)
    assert plugin.kernel is not None
    assert plugin.kernel.settings.kernel.group == "from-file"
    assert plugin.kernel.settings.kernel.handler_timeout_s == 3
    await plugin.detener()


async def test_bad_config_fails_inicializar(isolated: Path) -> None:
    from corec_plugin_kit.corec_adapter import CorecKitPlugin

    plugin = CorecKitPlugin({"kernel": {"concurrency": 0}, "generator": "not a section"})
    with pytest.raises(ConfigError, match=r"kernel\.concurrency"):
        await plugin.inicializar(None)
