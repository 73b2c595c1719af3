"""Commands from the Redis stream write only below the configured roots (real Redis, worker in
burst mode), exactly like ``exec``: the worker runs the same dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import corec_generator.processor as generator
import orjson
import pytest

pytestmark = pytest.mark.redis


async def test_stream_commands_stay_below_the_roots(
    corec_register: Any,
    corec_kernel: Any,
    corec_streams: dict[str, Any],
    corec_redis: Any,
    corec_worker: Any,
    roots: dict[str, Path],
    snapshot: Any,
) -> None:
    corec_register(generator, name="generator")
    kernel = corec_kernel(
        sections={
            "generator": {
                "output_plugins": str(roots["plugins"]),
                "output_websites": str(roots["websites"]),
            }
        },
        records=False,
        block_ms=100,
        **corec_streams,
    )
    (roots["plugins"] / "link").symlink_to(roots["outside"], target_is_directory=True)
    commands = {
        "ok-plugin": ("generate_plugin", {"plugin_name": "streamed", "output": "team"}),
        "ok-site": ("generate_website", {"template": "fastapi", "project_name": "svc"}),
        "abs": ("generate_plugin", {"plugin_name": "x", "output": str(roots["outside"])}),
        "dotdot": ("generate_plugin", {"plugin_name": "x", "output": "../../outside"}),
        "name": ("generate_website", {"template": "react", "project_name": "../../outside"}),
        "link": ("generate_plugin", {"plugin_name": "x", "output": "link"}),
    }
    for key, (action, params) in commands.items():
        body = {"action": action, "params": params, "id": key}
        await corec_redis.xadd(corec_streams["stream_in"], {"payload": orjson.dumps(body)})
    await corec_worker(kernel)
    results = {}
    for _eid, fields in await corec_redis.xrange(corec_streams["stream_out"]):
        body = orjson.loads(fields[b"payload"])
        results[body["id"]] = body
    assert set(results) == set(commands)
    assert results["ok-plugin"]["status"] == "ok", results["ok-plugin"]
    assert results["ok-site"]["status"] == "ok", results["ok-site"]
    assert (roots["plugins"] / "team" / "streamed" / "pyproject.toml").is_file()
    assert (roots["websites"] / "svc" / "svc" / "main.py").is_file()
    for key in ("abs", "dotdot", "name"):
        assert results[key]["error"]["type"] == "invalid_params", results[key]
    assert results["link"]["error"]["type"] == "handler_error"
    assert "symlink" in results["link"]["error"]["message"]
    assert snapshot(roots["outside"]) == {}
