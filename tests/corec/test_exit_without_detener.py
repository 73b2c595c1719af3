"""CoreC's current nucleus never calls a plugin's ``detener``: the kit's in-loop stream worker
must not keep the interpreter from exiting when CoreC's ``asyncio.run(main())`` returns."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from corec_standins import add_to_plugin_config, make_registry_tree, run_install

pytestmark = [pytest.mark.redis]

HERE = Path(__file__).resolve().parent

# What corec/bootstrap.py does, reduced to the plugin's part: asyncio.run(main()), where main
# loads the plugin (plugins/registry.py load_plugin) and returns without any plugin teardown.
SCRIPT = """
import asyncio, importlib, json, sys
import redis.asyncio as aioredis
from corec_standins import CoreCConfig, DBConfig, Nucleus, PluginConfig, RedisConfig

async def main():
    host, port, stream_in, stream_out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    config = CoreCConfig(
        db_config=DBConfig(dbname="unused", user="postgres", host="127.0.0.1"),
        redis_config=RedisConfig(host=host, port=port),
        plugins={"corec_kit": PluginConfig(enabled=True, path="plugins/corec_kit/config.json")},
    )
    redis = aioredis.Redis(host=host, port=port, decode_responses=True)
    nucleus = Nucleus(config, None, redis)
    conf = config.plugins["corec_kit"].model_dump()
    conf.update(json.load(open(conf["path"]))["corec_kit"])
    await importlib.import_module("plugins.corec_kit.main").inicializar(nucleus, conf)
    await redis.xadd(stream_in, {"data": json.dumps({"action": "ping", "id": "x-1"})})
    for _ in range(200):
        got = await redis.xrange(stream_out)
        if got:
            print("answered", json.loads(got[0][1]["data"])["status"], flush=True)
            break
        await asyncio.sleep(0.05)
    # No detener: CoreC's nucleus never calls it.

asyncio.run(main())
print("main returned", flush=True)
"""


def test_the_interpreter_exits_promptly_without_detener(
    tmp_path: Path, corec_streams: dict[str, Any], corec_redis_url: str
) -> None:
    root = make_registry_tree(tmp_path / "corec")
    stream_in, stream_out = corec_streams["stream_in"], corec_streams["stream_out"]
    result = run_install(str(root), "--stream-in", stream_in, "--stream-out", stream_out)
    assert result.exit_code == 0, result.output
    # records in the kit's SQLite under the state folder
    add_to_plugin_config(root, corec_streams, tmp_path / "state", database="kit")
    host, _, port = corec_redis_url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    env_path = f"{root}:{HERE}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, host, port, stream_in, stream_out],
        cwd=root,
        env={**_clean_env(), "PYTHONPATH": env_path},
        capture_output=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err[-3000:]
    assert "answered ok" in out
    assert "main returned" in out
    assert "Traceback" not in err, err[-3000:]
    assert "never awaited" not in err and "Task was destroyed" not in err, err[-3000:]
    assert elapsed < 30, f"exit took {elapsed:.1f}s"


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("COREC_")}
