"""The worker's raw Redis transport: its XREADGROUP, and one MULTI ... EXEC per batch packed
in one buffer, replies parsed by hiredis.

The only module that touches redis-py's internals (a pooled connection's ``_parser``, a
cluster node's connections): redis-py's pipeline packs each argument in Python, which was a
third of the stream loop's time, and its ``xreadgroup`` builds a dict per entry in Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .compat import timeout_ctx

if TYPE_CHECKING:
    from .connection import RedisClient

try:  # what redis-py's hiredis reader returns for a reply not yet complete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _PARTIAL
except ImportError:  # pragma: no cover - redis-py moved it: every reply goes through read()
    _PARTIAL = None

T = TypeVar("T")

#: Redis failures that may pass (a restart, a network blip): retried with backoff.
TRANSIENT_REDIS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
#: How long one transaction may wait for its replies before the connection is dropped.
REPLY_TIMEOUT_S = 60

pack: Callable[[tuple[Any, ...]], bytes]
try:
    from hiredis import pack_command as pack
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])

    def pack(command: tuple[Any, ...]) -> bytes:
        out = [b"*%d\r\n" % len(command)]
        for arg in command:
            if not isinstance(arg, bytes):
                arg = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(out)


#: Replies that mean the cluster's slots moved (failover, resharding) or are moving: the
#: topology is refreshed and the transaction retried as a transient failure.
_MOVING = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


class SlotMovedError(RedisConnectionError):
    """A cluster's slot moved under a transaction (nothing took effect): retry it."""


def is_cluster(redis: Any) -> bool:
    """Is ``redis`` a Redis Cluster client (``redis.asyncio.RedisCluster``)?"""
    return hasattr(redis, "get_node_from_key")


def slot_of(key: str | bytes) -> int:
    """The cluster hash slot of ``key`` (hash tags honoured)."""
    from redis.crc import key_slot

    return int(key_slot(key.encode() if isinstance(key, str) else key))


#: A result entry's fields after ``XADD stream [MAXLEN ~ n] *`` (docs/protocol.md): ``id``,
#: ``action``, ``status``, ``payload``, as RESP bulk strings; ``%`` fills in the values.
_RESULT_FIELDS = (
    b"$2\r\nid\r\n$%d\r\n%b\r\n$6\r\naction\r\n$%d\r\n%b\r\n"
    b"$6\r\nstatus\r\n$%d\r\n%b\r\n$7\r\npayload\r\n$%d\r\n%b\r\n"
)
#: codex's ``data`` field, after them, for a command that came in codex's form.
_DATA_FIELD = b"$4\r\ndata\r\n$%d\r\n%b\r\n"


def xadd_head(stream: str, trim: tuple[Any, ...]) -> tuple[int, bytes]:
    """``XADD stream [MAXLEN ~ n] *`` packed without the array's length: (its argument count,
    the bytes), for :func:`pack_result`."""
    packed = pack(("XADD", stream, *trim, "*"))
    return 3 + len(trim), packed[packed.index(b"\r\n") + 2 :]


def pack_result(
    head: tuple[int, bytes], key: str, action: str, status: str, payload: bytes, data: bytes | None
) -> bytes:
    """A result entry's XADD, packed: what ``pack(("XADD", stream, *trim, "*", "id", key,
    "action", action, "status", status, "payload", payload[, "data", data]))`` gives, in a
    third of the time (one ``%`` on bytes; the stream's part packed once, by :func:`xadd_head`)."""
    k, a, s = key.encode(), action.encode(), status.encode()
    fields = _RESULT_FIELDS % (len(k), k, len(a), a, len(s), s, len(payload), payload)
    count, packed_head = head
    if data is None:
        return b"*%d\r\n%b%b" % (count + 8, packed_head, fields)
    return b"*%d\r\n%b%b%b" % (count + 10, packed_head, fields, _DATA_FIELD % (len(data), data))


async def send_transaction(
    redis: RedisClient,
    key: str,
    commands: list[tuple[Any, ...] | bytes],
    wait: tuple[int, int] | None = None,
) -> list[Any]:
    """Send ``commands`` (``MULTI``, the queued commands, ``EXEC``; each a tuple of arguments
    or already packed) on one pooled connection; return EXEC's replies (a command's error as
    an exception object). ``key`` is one the commands write: on a cluster, its slot's master
    gets the transaction.

    Raises the first queuing error when EXEC aborted (nothing took effect), and a transient
    error (see :data:`TRANSIENT_REDIS`) when the connection fails; the connection is dropped.
    On a Redis Cluster client the transaction goes to the master of its keys' slot (they share
    one: the caller sees to it); a slot that moved meanwhile refreshes the topology and raises
    :class:`SlotMovedError`, a transient error.

    ``wait = (replicas, timeout_ms)`` sends ``WAIT`` on the same connection after ``EXEC``:
    the call returns once that many replicas have the transaction, or the timeout passed; the
    number of replicas that acknowledged is appended to the replies.
    """
    if wait is not None:
        commands = [*commands, ("WAIT", *wait)]
    waited = wait is not None
    return await _on_connection(
        redis, key, lambda conn: _transaction(conn, commands, waited=waited)
    )


async def read_group(
    redis: RedisClient,
    group: str,
    consumer: str,
    stream: str,
    last_id: str,
    count: int,
    block: int | None,
) -> list[Any]:
    """``XREADGROUP GROUP group consumer COUNT count [BLOCK block] STREAMS stream last_id``,
    packed and parsed by hiredis: the entries as ``[id, [field, value, ...]]`` (bytes; the
    fields ``None`` for an entry deleted since it was delivered), ``[]`` when there are none.

    redis-py's ``xreadgroup`` turns every entry's fields into a dict in Python, which was the
    read path's largest cost. Errors as :func:`send_transaction`: an error reply (NOGROUP) is
    raised as :class:`ResponseError`, a failed connection as a transient error.
    """
    command: tuple[Any, ...] = ("XREADGROUP", "GROUP", group, consumer, "COUNT", count)
    if block is not None:
        command += ("BLOCK", block)
    command += ("STREAMS", stream, last_id)
    limit = REPLY_TIMEOUT_S + (block or 0) / 1000
    reply = await _on_connection(redis, stream, lambda conn: _request(conn, command, limit))
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: entries}
        return list(next(iter(reply.values())))
    return list(reply[0][1])


async def _request(conn: Any, command: tuple[Any, ...], limit: float) -> Any:
    parser = getattr(conn, "_parser", None)
    read = getattr(parser, "read_response", None) or conn.read_response
    try:
        await conn.send_packed_command(pack(command), check_health=False)
        async with timeout_ctx(limit):
            reply = await read()
    except BaseException:
        await conn.disconnect()
        raise
    if isinstance(reply, Exception):
        raise reply
    return reply


async def _on_connection(redis: Any, key: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(connection)`` on a pooled connection to the server holding ``key``.

    ``redis`` is either client (:data:`~.connection.RedisClient`), told apart by
    :func:`is_cluster`: typed ``Any`` here, where each branch uses its own client's internals.

    On a Redis Cluster client, the master of ``key``'s slot; a slot that moved meanwhile
    refreshes the topology and raises :class:`SlotMovedError`, a transient error.
    """
    if not is_cluster(redis):
        pool = redis.connection_pool
        conn = await pool.get_connection()
        try:
            return await work(conn)
        finally:
            await pool.release(conn)
    node = redis.get_node_from_key(key)
    conn = node.acquire_connection()
    try:
        return await work(conn)
    except ResponseError as exc:
        if not isinstance(exc, (AskError, ClusterDownError, TryAgainError)) and not str(
            exc
        ).startswith(_MOVING):
            raise
        await redis.nodes_manager.initialize()
        raise SlotMovedError(f"the cluster moved a slot ({exc}); retrying") from None
    except TRANSIENT_REDIS:
        with contextlib.suppress(Exception):
            await redis.nodes_manager.initialize()
        raise
    finally:
        node.release(conn)


async def _transaction(
    conn: Any, commands: list[tuple[Any, ...] | bytes], *, waited: bool
) -> list[Any]:
    data = b"".join([c if isinstance(c, bytes) else pack(c) for c in commands])
    # redis-py wraps each read in a timeout context; read the already-buffered +QUEUED
    # replies through its parser directly when it has one, under one timeout for all.
    parser = getattr(conn, "_parser", None)
    read = getattr(parser, "read_response", None) or conn.read_response
    try:
        await conn.send_packed_command(data, check_health=False)
        # After the send: it connects a connection handed out unconnected (a cluster node's),
        # and connecting gives the parser a new reader.
        buffered = _buffered(parser)
        async with timeout_ctx(REPLY_TIMEOUT_S):
            queued_error: Exception | None = None
            left = len(commands) - (2 if waited else 1)
            while left:
                # +OK, then +QUEUED per command: taken from what hiredis already holds while
                # it holds them whole (a C call each, where read() is a coroutine call).
                reply = buffered() if buffered is not None else _PARTIAL
                if reply is _PARTIAL:
                    reply = await read()
                elif isinstance(reply, list):  # RESP3: a push message between the replies
                    await _pushed(parser, reply)
                    continue
                elif isinstance(reply, RedisConnectionError):
                    raise reply  # as read() does (a LOADING reply, say)
                left -= 1
                if isinstance(reply, Exception) and queued_error is None:
                    queued_error = reply
            replies = await read()
            acked = await read() if waited else None
    except BaseException:
        await conn.disconnect()
        raise
    if isinstance(replies, Exception):
        raise queued_error or replies  # EXECABORT: nothing took effect
    if replies is None:
        raise ResponseError("EXEC aborted the transaction")
    return [*replies, acked] if waited else list(replies)


def _buffered(parser: Any) -> Callable[[], Any] | None:
    """The ``gets`` of the parser's hiredis reader: its next reply if whole in the buffer,
    else :data:`_PARTIAL`; ``None`` without hiredis (every reply then through ``read()``)."""
    reader = getattr(parser, "_reader", None)
    gets = getattr(reader, "gets", None)
    return None if _PARTIAL is None or gets is None else cast("Callable[[], Any]", gets)


async def _pushed(parser: Any, message: list[Any]) -> None:
    """A RESP3 push message (a client-tracking invalidation, say) read between a
    transaction's replies: to redis-py's handler, as its ``read()`` does."""
    handle = getattr(parser, "handle_push_response", None)
    if handle is not None:
        await handle(message)
