"""Redis clients for the runtime: a configured URL, or the embedded Valkey server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, RedisUnavailable
from ..redaction import redact, redact_url

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..config import KernelConfig
    from ..kernel import Kernel

from .embedded import EmbeddedValkey

SCHEMES = ("redis://", "rediss://", "unix://")


class RedisHandle:
    """A client plus, in embedded mode, the server it may own. ``close()`` releases both."""

    def __init__(self, config: KernelConfig) -> None:
        self.config = config
        url = config.redis_url.get_secret_value() if config.redis_url else None
        self.embedded: EmbeddedValkey | None = None
        if url is None:
            self.embedded = EmbeddedValkey(config.state_dir)
            self.url = self.embedded.url
        elif url.lower().startswith(SCHEMES):
            self.url = url
        else:
            # KernelConfig refuses such URLs already; this guards configs built unvalidated.
            raise ConfigError(
                f"kernel.redis_url must start with one of {', '.join(SCHEMES)}; "
                "leave it unset for the embedded server"
            )
        self.client: aioredis.Redis | None = None

    @property
    def display(self) -> str:
        """The URL without its password, for messages."""
        if self.embedded is not None:
            return f"embedded Valkey at {self.embedded.socket}"
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:  # config validation refuses such ports; never fail a message on it
            return redact_url(self.url)
        host = parts.hostname or parts.path
        return f"{parts.scheme}://{host}{port}{parts.path if parts.hostname else ''}"

    def ensure_server(self) -> None:
        """Embedded mode: (re)start the server if it does not answer. Call from the main thread."""
        if self.embedded is not None:
            self.embedded.ensure()

    async def connect(self) -> aioredis.Redis:
        """Return a connected client; raises RedisUnavailable with what to do."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self.ensure_server()
        if self.client is None:
            self.client = aioredis.from_url(
                self.url,
                decode_responses=False,
                socket_connect_timeout=5,
                health_check_interval=30,
            )
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(
                f"cannot reach Redis ({self.display}): {redact(str(exc))}; start it, or set "
                "COREC_REDIS_URL (unset it to use the embedded server)"
            ) from None
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.embedded is not None:
            self.embedded.stop()


async def kernel_redis(kernel: Kernel) -> Any:
    """The kernel's Redis client, connecting (and keeping the handle on the kernel) if needed.

    Lets actions such as ``stats`` work from ``corec-kit exec`` as well as inside the worker.
    """
    if kernel.redis is None:
        handle = RedisHandle(kernel.settings.kernel)
        kernel.redis = await handle.connect()
        kernel.redis_handle = handle
    return kernel.redis
