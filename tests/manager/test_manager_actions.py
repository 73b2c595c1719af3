"""The manager processor's own actions: ping, list_processors, describe_action, health.

``stats`` and the dead-letter actions are tested with the runtime (tests/runtime).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import corec_manager
import pytest
from corec_manager import processor as manager
from shared_helpers import free_port


@pytest.fixture
def kernel(corec_register: Any, corec_kernel: Any) -> Any:
    corec_register(manager, name="manager", distribution="corec-manager", version="0.1.0")
    return corec_kernel()


def test_manager_is_installed_and_registered() -> None:
    (ep,) = [ep for ep in metadata.entry_points(group="corec.processors") if ep.name == "manager"]
    assert ep.value == "corec_manager.processor"
    assert ep.dist is not None
    assert ep.dist.metadata["Name"] == "corec-manager"
    assert ep.dist.version == corec_manager.__version__


def test_actions_registered(kernel: Any) -> None:
    info = kernel.processors.infos["manager"]
    assert info.status == "loaded"
    assert {"ping", "list_processors", "describe_action", "health"} <= set(info.actions)
    for action in ("ping", "list_processors", "describe_action", "health"):
        assert kernel.routing.route(action).description  # each one documents itself


async def test_ping(kernel: Any) -> None:
    async with kernel:
        result = await kernel.execute(
            {"action": "ping", "params": {"echo": {"a": [1]}}, "id": "p1"}
        )
    assert result["status"] == "ok"
    assert result["result"]["pong"] is True
    assert result["result"]["echo"] == {"a": [1]}
    assert result["result"]["key"] == "p1"
    async with kernel:
        bad = await kernel.execute({"action": "ping", "params": {"other": 1}})
    assert bad["error"]["type"] == "invalid_params"


async def test_list_processors(kernel: Any, corec_register: Any) -> None:
    async with kernel:
        result = await kernel.execute({"action": "list_processors"})
    (info,) = result["result"]
    assert info["name"] == "manager"
    assert info["distribution"] == "corec-manager"
    assert info["status"] == "loaded"
    assert "ping" in info["actions"]


async def test_describe_action(kernel: Any) -> None:
    async with kernel:
        found = await kernel.execute({"action": "describe_action", "params": {"action": "ping"}})
        missing = await kernel.execute({"action": "describe_action", "params": {"action": "nope"}})
    assert found["result"]["processor"] == "manager"
    assert found["result"]["params_schema"]["additionalProperties"] is False
    assert missing["error"]["type"] == "invalid_params"
    assert "no action 'nope' is routed" in missing["error"]["message"]


async def test_health_in_process(kernel: Any, corec_register: Any) -> None:
    async with kernel:
        result = await kernel.execute({"action": "health"})
    report = result["result"]
    assert report["status"] == "ok"
    assert report["processors"]["loaded"] == ["manager"]
    assert report["redis"] == "not connected (in-process dispatch)"
    assert report["records"] == "off"
    assert report["actions"] == len(kernel.routing)


async def test_health_degraded_when_a_processor_failed(
    corec_register: Any, corec_kernel: Any
) -> None:
    corec_register(manager, name="manager")

    async def boom(kernel: Any) -> None:
        raise RuntimeError("down")

    from corec_plugin_kit import hookimpl

    corec_register(
        type("Failing", (), {"corec_startup": staticmethod(hookimpl(boom))}), name="failing"
    )
    kernel = corec_kernel()
    async with kernel:
        report = (await kernel.execute({"action": "health"}))["result"]
    assert report["status"] == "degraded"
    assert report["processors"]["failed"] == ["failing"]


async def test_health_reports_unreachable_redis_and_records(kernel: Any) -> None:
    import redis.asyncio

    # A real client to a port nothing listens on: the connection really fails.
    kernel.redis = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)

    from corec_plugin_kit.storage import PostgresStore

    port = free_port()  # a port nothing listens on
    # A real store whose server is unreachable: its ping answers False (it never raises).
    kernel.store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/test")
    try:
        async with kernel:
            report = (await kernel.execute({"action": "health"}))["result"]
    finally:
        await kernel.redis.aclose()
        kernel.redis = None
        kernel.store = None
    assert report["status"] == "degraded"
    assert report["redis"].startswith("unreachable: ConnectionError")
    assert report["records"] == "unreachable"
