"""Stream fixtures for ``corec_plugin_kit.testing`` (imported there; not a plugin of its own).

* ``corec_redis_url``: the test server (``COREC_TEST_REDIS_URL``, default the local Redis);
  when it does not answer the test is skipped outside CI and fails in CI (``CI`` set);
* ``corec_streams``: unique stream and group names for this test (deleted afterwards), as the
  ``kernel`` overrides to pass to ``corec_kernel(**corec_streams)``;
* ``corec_redis``: a ``redis.asyncio.Redis`` on that server (bytes responses);
* ``corec_worker``: ``await corec_worker(kernel, **kw)`` runs a burst-mode worker over the
  kernel and returns its :class:`~corec_plugin_kit.runtime.worker.WorkerStats`.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .worker import WorkerStats

__all__ = ["corec_redis", "corec_redis_url", "corec_streams", "corec_worker"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def require_service(ok: bool, what: str, problem: str = "is not reachable") -> None:
    """Skip (outside CI, with the reason) or fail (in CI) when a test service is missing.

    ``what`` and ``problem`` make the reason: "Redis at ... is not reachable", "initdb (the
    PostgreSQL server binaries) is not installed".
    """
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} {problem}, and CI is set: CI must provide that (.ci/run does)")
    pytest.skip(f"{what} {problem} (set CI=1 to make this a failure)")


@pytest.fixture(scope="session")
def corec_redis_url() -> str:
    url = os.environ.get("COREC_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    require_service(_answers(url), f"Redis at {url}")
    return url


@pytest.fixture
async def corec_redis(corec_redis_url: str) -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(corec_redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def corec_streams(corec_redis_url: str) -> AsyncIterator[dict[str, Any]]:
    """Kernel overrides with unique, hash-tagged stream names on the test Redis."""
    import redis.asyncio as aioredis

    tag = uuid.uuid4().hex[:12]
    names = {
        "redis_url": corec_redis_url,
        "stream_in": f"{{t{tag}}}:commands",
        "stream_out": f"{{t{tag}}}:results",
        "dead_letter_stream": f"{{t{tag}}}:dead",
        "group": f"g{tag}",
    }
    yield names
    client = aioredis.from_url(corec_redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{{t{tag}}}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def corec_worker() -> Callable[..., Awaitable[WorkerStats]]:
    """``await corec_worker(kernel, burst=True, max_commands=None, ...)`` -> WorkerStats."""
    from .service import run_worker

    async def run(kernel: Kernel, **kwargs: Any) -> WorkerStats:
        kwargs.setdefault("burst", True)
        return await run_worker(kernel, **kwargs)

    return run
