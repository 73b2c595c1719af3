"""The kit loaded by CoreC's current loader (upstream HEAD of mixycronico/Lunareth).

`corec-kit corec install` writes plugins/<name>/ into a CoreC-shaped tree; the test then does
what corec/bootstrap.py load_plugins and plugins/registry.py PluginRegistry.load_plugin do, and
drives the plugin through corec/nucleus.py CoreCNucleus.ejecutar_plugin.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from corec_standins import (
    CoreCConfig,
    DBConfig,
    Nucleus,
    PluginConfig,
    RedisConfig,
    add_to_plugin_config,
    load_registry_plugin,
    make_registry_tree,
    run_install,
)
from pydantic import BaseModel

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


class GeneratePluginParams(BaseModel):
    plugin_name: str


class CmdGeneratePlugin(BaseModel):
    """Shaped like plugins/codex/processors/schema.py CmdGeneratePlugin (a pydantic command)."""

    action: str = "generate_plugin"
    params: GeneratePluginParams


def safe_params(action: str, tmp: Path) -> dict[str, Any]:
    """Params each installed action accepts without touching anything outside ``tmp``."""
    return {
        "ping": {"echo": "hola"},
        "describe_action": {"action": "ping"},
        "dlq_replay": {"ids": ["0-1"]},
        "dlq_delete": {"ids": ["0-1"]},
        "generate_plugin": {"plugin_name": "demo_proc", "dry_run": True},
        "generate_website": {
            "template": "fastapi",
            "project_name": "kit_demo_site",
            "dry_run": True,
        },
        "review_code": {"source": "import os\n"},
        "revise": {"file": "mod.py"},
    }.get(action, {})


async def read_reply(client: Any, stream: str, command_id: str) -> dict[str, Any]:
    """The reply to ``command_id`` on ``stream`` (codex's ``data`` field, or the kit's fields)."""
    last = "0-0"
    for _ in range(100):
        entries = await client.xread({stream: last}, count=10, block=100)
        for _, messages in entries or []:
            for entry_id, fields in messages:
                last = entry_id
                body = json.loads(fields["data"]) if "data" in fields else dict(fields)
                if body.get("id") == command_id:
                    return dict(body)
    raise AssertionError(f"no reply to {command_id} on {stream}")


async def test_registry_loader_end_to_end(
    tmp_path: Path,
    corec_db_pool: Any,
    corec_streams: dict[str, Any],
    corec_redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis.asyncio as aioredis

    root = make_registry_tree(tmp_path / "corec")
    result = run_install(
        str(root),
        "--stream-in",
        corec_streams["stream_in"],
        "--stream-out",
        corec_streams["stream_out"],
    )
    assert result.exit_code == 0, result.output
    assert "layout: registry" in result.output
    assert '"path": "plugins/corec_kit/config.json"' in result.output
    for rel in ("__init__.py", "main.py", "config.json"):
        assert (root / "plugins" / "corec_kit" / rel).is_file()
    # where codex's `revise` may write
    add_to_plugin_config(root, corec_streams, tmp_path / "state", reviser={"root": str(root)})

    monkeypatch.chdir(root)  # CoreC runs from its root: config paths are relative to it
    host_port = corec_redis_url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    config = CoreCConfig(
        db_config=DBConfig(dbname="unused", user="postgres", host="127.0.0.1"),
        redis_config=RedisConfig(host=host, port=int(port)),
        plugins={"corec_kit": PluginConfig(enabled=True, path="plugins/corec_kit/config.json")},
    )
    # corec/utils/db_utils.py init_redis: CoreC's own client decodes responses.
    corec_redis = aioredis.Redis(host=host, port=int(port), decode_responses=True)
    nucleus = Nucleus(config, corec_db_pool, corec_redis)
    (root / "mod.py").write_text("import os\n")  # for codex's `revise`, when it is claimed
    try:
        await load_registry_plugin(root, nucleus, "corec_kit", monkeypatch)
        plugin = nucleus.plugins["corec_kit"]
        assert plugin.kernel is not None
        assert plugin.kernel.settings.kernel.stream_in == corec_streams["stream_in"]

        # Every action the installed processors claim, through CoreC's ejecutar_plugin.
        actions = sorted(plugin.kernel.routing)
        assert {"ping", "health", "stats", "generate_plugin", "review_code"} <= set(actions)
        ids = []
        for n, action in enumerate(actions):
            command = {"action": action, "params": safe_params(action, tmp_path), "id": f"r-{n}"}
            reply = await nucleus.ejecutar_plugin("corec_kit", command)
            ids.append(command["id"])
            assert reply["id"] == command["id"]
            assert reply["estado"] == reply["status"], reply
            if action == "dlq_replay":  # an id that is not a dead letter: a typed error
                continue
            assert reply["status"] == "ok", reply["error"]
            assert isinstance(reply["message"], str)
        health = await nucleus.ejecutar_plugin("corec_kit", {"action": "health"})
        assert health["result"]["redis"] == "ok"

        # codex's command forms: a pydantic command, JSON text, {"data": JSON}.
        model = await nucleus.ejecutar_plugin(
            "corec_kit", CmdGeneratePlugin(params=GeneratePluginParams(plugin_name="p_one"))
        )
        assert model["action"] == "generate_plugin"
        assert model["status"] == "ok", model  # written below generator.output_plugins
        # A codex-shaped command reaches the handler as codex's: a CoreC plugin folder.
        assert model["result"]["template"] == "corec_plugin", model["result"]
        kit = await nucleus.ejecutar_plugin(
            "corec_kit",
            {"action": "generate_plugin", "params": {"plugin_name": "p_two", "dry_run": True}},
        )
        assert kit["result"]["template"] == "plugin", kit["result"]
        text = await nucleus.ejecutar_plugin("corec_kit", '{"action": "ping", "id": "t-1"}')
        assert text["status"] == "ok"
        data = await nucleus.ejecutar_plugin(
            "corec_kit", {"data": json.dumps({"action": "ping", "id": "d-1"})}
        )
        assert data["status"] == "ok"
        unknown = await nucleus.ejecutar_plugin("corec_kit", {"action": "nope"})
        assert unknown["status"] == "error"
        assert unknown["message"] == unknown["mensaje"] == unknown["error"]["message"]

        # The stream worker, running inside CoreC's loop, answers a codex `data` command.
        await corec_redis.xadd(
            corec_streams["stream_in"],
            {"data": json.dumps({"action": "ping", "params": {"echo": "s"}, "id": "s-1"})},
        )
        reply = await read_reply(corec_redis, corec_streams["stream_out"], "s-1")
        assert reply["status"] == "ok", reply

        # Records: in CoreC's own PostgreSQL, through its pool.
        async with corec_db_pool.acquire() as conn:
            rows = await conn.fetch("SELECT command_key, action, status FROM corec_commands")
        recorded = {row["command_key"]: (row["action"], row["status"]) for row in rows}
        for key in [*ids, "t-1", "d-1", "s-1"]:
            assert key in recorded, key
        assert recorded["s-1"] == ("ping", "ok")
        stats = await nucleus.ejecutar_plugin("corec_kit", {"action": "stats"})
        assert stats["result"]["actions"]["ping"]["ok"] >= 3
    finally:
        plugin = nucleus.plugins.get("corec_kit")
        if plugin is not None:
            await plugin.detener()
            assert plugin.kernel is None
            assert plugin._worker_task is None
        # What CoreC owns is still usable: the kit never closes it.
        assert await corec_redis.ping()
        async with corec_db_pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        await corec_redis.aclose()
    await asyncio.sleep(0)
