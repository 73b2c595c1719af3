"""The worker's raw transaction (``runtime/transport.py``): its replies are taken from what
hiredis already holds when they are whole there, and read from the socket when not. Either
way each reply must land on its own command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from corec_plugin_kit.runtime.transport import _transaction, send_transaction


async def test_a_transaction_whose_replies_span_many_reads(
    corec_redis_url: str, corec_streams: dict[str, Any]
) -> None:
    # 20,000 +QUEUED replies are about 180 kB: several reads of redis-py's 64 kB buffer, so
    # hiredis runs out of whole replies several times and the socket is read again.
    stream = corec_streams["stream_out"]
    count = 20_000
    client = aioredis.Redis.from_url(corec_redis_url)
    try:
        commands: list[tuple[Any, ...] | bytes] = [("MULTI",)]
        commands += [("XADD", stream, "*", "n", str(n)) for n in range(count)]
        commands += [("XLEN", stream), ("EXEC",)]
        replies = await send_transaction(client, stream, commands)
        assert len(replies) == count + 1
        assert all(isinstance(reply, bytes) and b"-" in reply for reply in replies[:-1])
        assert replies[-1] == count
        first, last = await client.xrange(stream, count=1), await client.xrevrange(stream, count=1)
        assert (first[0][0], last[0][0]) == (replies[0], replies[-2])
    finally:
        await client.aclose()


async def test_a_command_refused_when_queued_aborts_the_transaction(
    corec_redis_url: str, corec_streams: dict[str, Any]
) -> None:
    stream = corec_streams["stream_out"]
    client = aioredis.Redis.from_url(corec_redis_url)
    try:
        commands: list[tuple[Any, ...] | bytes] = [
            ("MULTI",), ("XADD", stream, "*", "n", "1"), ("NO-SUCH-COMMAND",), ("EXEC",)
        ]  # fmt: skip
        with pytest.raises(ResponseError, match="unknown command"):
            await send_transaction(client, stream, commands)
        assert await client.exists(stream) == 0  # nothing took effect
        assert await client.ping()  # and the pool still works (the connection was dropped)
    finally:
        await client.aclose()


async def test_a_transaction_on_a_connection_that_reconnects_reads_its_own_replies(
    corec_redis_url: str, corec_streams: dict[str, Any]
) -> None:
    # A cluster node hands out its connections unconnected: the transaction's send connects
    # it, and redis-py gives the parser a new hiredis reader then. Replies must come from
    # that one, never from what the old reader still held. Whole replies left unread in it
    # (a read cut short) are put there by hand: a real cut cannot be timed to leave them.
    stream = corec_streams["stream_out"]
    client = aioredis.Redis.from_url(corec_redis_url)
    try:
        conn = await client.connection_pool.get_connection()
        try:
            await conn.disconnect()
            conn._parser._reader.feed(b"+QUEUED\r\n+QUEUED\r\n")
            commands: list[tuple[Any, ...] | bytes] = [
                ("MULTI",), ("XADD", stream, "*", "n", "1"), ("XLEN", stream), ("EXEC",)
            ]  # fmt: skip
            replies = await _transaction(conn, commands, waited=False)
        finally:
            await client.connection_pool.release(conn)
        assert isinstance(replies[0], bytes) and b"-" in replies[0]
        assert replies[1:] == [1]
    finally:
        await client.aclose()


# A server that sends a RESP3 push message between a transaction's replies and its replies a
# few bytes at a time. A real Redis does not push to a connection that has not asked for it
# (CLIENT TRACKING), and then not at a moment a test can choose: this stands in for that.
PUSH = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"


class _PushingServer:
    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests = hiredis.Reader()
        pending: list[bytes] = []
        while data := await reader.read(65536):
            requests.feed(data)
            while (command := requests.gets()) is not False:
                name = command[0].upper()
                if name == b"HELLO":
                    writer.write(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                elif name in (b"CLIENT", b"PING"):
                    writer.write(b"+OK\r\n")
                elif name == b"MULTI":
                    pending = [b"+OK\r\n"]
                elif name == b"EXEC":
                    queued = len(pending) - 1
                    pending.insert(2, PUSH)  # after the first +QUEUED
                    pending.append(b"*%d\r\n" % queued)
                    pending += [b":%d\r\n" % n for n in range(queued)]
                    # The push comes whole with the replies before it (so hiredis holds it
                    # when the transaction looks there); the rest a few bytes at a time.
                    head, tail = b"".join(pending[:4]), b"".join(pending[4:])
                    writer.write(head)
                    for start in range(0, len(tail), 5):
                        await writer.drain()
                        await asyncio.sleep(0.001)
                        writer.write(tail[start : start + 5])
                else:
                    pending.append(b"+QUEUED\r\n")
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> _PushingServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def pushing_server() -> AsyncIterator[_PushingServer]:
    async with _PushingServer() as server:
        yield server


async def test_a_push_message_among_the_replies_is_not_taken_for_one(
    pushing_server: _PushingServer,
) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=pushing_server.port, protocol=3)
    try:
        commands: list[tuple[Any, ...] | bytes] = [("MULTI",)]
        commands += [("INCR", f"k{n}") for n in range(4)]
        commands.append(("EXEC",))
        assert await send_transaction(client, "k0", commands) == [0, 1, 2, 3]
    finally:
        await client.aclose()
