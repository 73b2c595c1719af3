"""Redis clients for the runtime: a configured URL, or the embedded Valkey server.

A ``rediss://`` URL is TLS: the server's certificate is checked against
``kernel.redis_tls_ca_file`` (else the system's CAs), and ``kernel.redis_tls_cert_file`` /
``redis_tls_key_file`` are the client certificate for a server that requires one. The files
are loaded once before connecting, so a bad one is a config error naming its key; TLS failures
when connecting say which key to look at. No message here quotes a file path: they can reach a
result stream (the manager's actions connect through :func:`kernel_redis`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import ConfigError, RedisUnavailable
from ..redaction import redact, redact_url

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..config import KernelConfig
    from ..kernel import Kernel

    #: What :meth:`RedisHandle.connect` returns: a cluster client when the node is part of a
    #: Redis Cluster, else a plain one.
    RedisClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster

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
        self.client: RedisClient | None = None

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

    async def connect(self) -> RedisClient:
        """Return a connected client; raises RedisUnavailable with what to do."""
        import redis.asyncio as aioredis
        from redis.exceptions import AuthenticationError, NoPermissionError, RedisError

        self.ensure_server()
        if self.client is None:
            self.client = aioredis.from_url(
                self.url,
                decode_responses=False,
                socket_connect_timeout=5,
                health_check_interval=30,
                **tls_options(self.config, self.url),
            )
        try:
            await self.client.ping()
        except (AuthenticationError, NoPermissionError) as exc:
            raise RedisUnavailable(
                f"Redis ({self.display}) refused this client: {redact(str(exc))}; "
                + _advice(exc, self.config, self.url)
            ) from None
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(
                f"cannot reach Redis ({self.display}): {redact(str(exc))}; "
                + _advice(exc, self.config, self.url)
            ) from None
        if await _is_cluster(self.client):
            self.client = await self._cluster_client()
        return self.client

    async def _cluster_client(self) -> aioredis.RedisCluster:
        """The node answered as part of a Redis Cluster: a cluster client, which follows slots
        as they move (MOVED/ASK, failover) and routes each command to its key's master."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        assert self.client is not None
        await self.client.aclose()
        cluster = aioredis.RedisCluster.from_url(
            self.url,
            decode_responses=False,
            socket_connect_timeout=5,
            health_check_interval=30,
            **tls_options(self.config, self.url),
        )
        try:
            await cluster.initialize()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(
                f"cannot reach the Redis Cluster ({self.display}): {redact(str(exc))}"
            ) from None
        return cluster

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.embedded is not None:
            self.embedded.stop()


async def _is_cluster(client: Any) -> bool:
    """Does the node say it is part of a Redis Cluster? ``HELLO`` (no arguments: nothing
    changes) answers with the server's ``mode``; every user may send it, whatever its ACL."""
    from redis.exceptions import ResponseError

    try:
        reply = await client.execute_command("HELLO")
    except ResponseError:  # a server before HELLO (Redis < 6): no cluster this kit can use
        return False
    if isinstance(reply, (list, tuple)):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    mode = reply.get(b"mode", reply.get("mode")) if isinstance(reply, dict) else None
    return mode in (b"cluster", "cluster")


class _EncryptedKeyError(Exception):
    """The private key asks for a password (never prompted for: see :func:`tls_options`)."""


def _no_password() -> bytes:
    raise _EncryptedKeyError


def tls_options(config: KernelConfig, url: str) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for a ``rediss://`` URL, from the TLS keys; ``{}`` for
    other URLs. Loads the files into a throwaway context first, so a file that is not what its
    key says is a :class:`ConfigError` naming the key (not a failure inside every connect)."""
    if not url.lower().startswith("rediss://"):
        return {}
    import ssl

    ca, cert, key = config.redis_tls_ca_file, config.redis_tls_cert_file, config.redis_tls_key_file
    if key is not None and cert is None:
        raise ConfigError(
            "kernel.redis_tls_key_file is set without kernel.redis_tls_cert_file: set both "
            "(the client certificate and its key), or neither"
        )
    context = ssl.create_default_context()
    name = "kernel.redis_tls_ca_file"
    try:
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
        if cert is not None:
            name = "kernel.redis_tls_cert_file"
            # A callable password: an encrypted key raises instead of OpenSSL prompting on the
            # terminal (or blocking a worker without one).
            context.load_cert_chain(str(cert), str(key) if key else None, password=_no_password)
    except _EncryptedKeyError:
        raise ConfigError(
            f"{'kernel.redis_tls_key_file' if key else name}: the private key is encrypted; "
            "corec-kit reads unencrypted keys only (keep the file readable by the worker alone)"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        reason = str(exc) if isinstance(exc, ssl.SSLError) else exc.strerror or type(exc).__name__
        if "KEY_VALUES_MISMATCH" in reason:
            what = "the private key (kernel.redis_tls_key_file) is not the certificate's"
        elif name.endswith("ca_file"):
            what = "cannot load it as PEM CA certificates"
        else:
            what = "cannot load the certificate and its key as PEM"
        raise ConfigError(f"{name}: {what} ({reason})") from None
    options: dict[str, Any] = {}
    if ca is not None:
        options["ssl_ca_certs"] = str(ca)
    if cert is not None:
        options["ssl_certfile"] = str(cert)
        options["ssl_keyfile"] = str(key) if key else None
    return options


#: How a server's close of the connection reads (reset, closed, EOF...), TLS or not.
_CLOSED = ("reset by peer", "closed by server", "eof occurred", "broken pipe", "unexpected eof")
_START = "start it, or set COREC_REDIS_URL (unset it to use the embedded server)"


def _advice(exc: BaseException, config: KernelConfig, url: str) -> str:
    """What to do about a failed connect, after what failed (no file paths: see the module)."""
    from redis.exceptions import AuthenticationError, NoPermissionError

    low = str(exc).lower()
    tls = url.lower().startswith("rediss://")
    closed = any(mark in low for mark in _CLOSED)
    if isinstance(exc, NoPermissionError):
        return (
            "the Redis user lacks a permission this needs (PING at least): see the ACLs in "
            "docs/operations.md, TLS and Redis users"
        )
    if isinstance(exc, AuthenticationError) or "wrongpass" in low or "noauth" in low:
        return "check the user name and password in kernel.redis_url (COREC_REDIS_URL)"
    if not tls:
        if closed and url.lower().startswith("redis://"):
            return f"if that port speaks TLS, write rediss://; else {_START}"
        return _START
    if "certificate verify failed" in low and "mismatch" in low:
        return (
            "the server's certificate does not name the host of kernel.redis_url: connect by a "
            "name or address it holds (or add ?ssl_check_hostname=false)"
        )
    if "certificate verify failed" in low:
        if config.redis_tls_ca_file is not None:
            return "the server's certificate does not chain to kernel.redis_tls_ca_file"
        return (
            "the server's certificate does not chain to a CA this system trusts: set "
            "kernel.redis_tls_ca_file to its CA"
        )
    if "wrong version number" in low or "record layer" in low or "timeout" in low:
        return f"if that port does not speak TLS, write redis://; else {_START}"
    if config.redis_tls_cert_file is None and ("certificate required" in low or closed):
        return (
            "the server closed the TLS connection: if it requires client certificates "
            "(tls-auth-clients), set kernel.redis_tls_cert_file and kernel.redis_tls_key_file"
        )
    if any(alert in low for alert in ("unknown ca", "bad certificate", "expired")) or closed:
        return (
            "the server closed the TLS connection: it must trust the client certificate "
            "(kernel.redis_tls_cert_file: valid, signed by its tls-ca-cert-file)"
        )
    return _START


async def kernel_redis(kernel: Kernel) -> Any:
    """The kernel's Redis client, connecting (and keeping the handle on the kernel) if needed.

    Lets actions such as ``stats`` work from ``corec-kit exec`` as well as inside the worker.
    """
    if kernel.redis is None:
        handle = RedisHandle(kernel.settings.kernel)
        kernel.redis = await handle.connect()
        kernel.redis_handle = handle
    return kernel.redis
