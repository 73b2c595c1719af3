"""A commit whose reply never arrives: the worker must not answer those commands twice.

The fault: Redis runs the batch's transaction (results and XACK), then the connection drops
before the reply reaches the worker, as when a master is killed mid-reply and its replica,
which got the transaction, takes its place. A real Redis behind a real TCP relay that cuts
the client side of the first connection carrying an ``EXEC``, once the server has run it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from runtime_helpers import payload, pending, results

EXEC = b"*1\r\n$4\r\nEXEC\r\n"


class ExecCutter:
    """Relays to Redis; the first time a client sends ``EXEC``, lets the server run it, then
    cuts that client's connection without passing the reply on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.cuts = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        cut = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
                if EXEC in data and self.cuts == 0:
                    self.cuts += 1
                    cut.set()
                    return
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if cut.is_set():
                    break
                writer.write(data)
                await writer.drain()

        up, down = asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())
        try:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await up
                if cut.is_set():
                    writer.transport.abort()  # the worker sees the connection drop, no reply
                    await asyncio.sleep(0.5)  # the server has long run the transaction
                else:
                    await down
        finally:
            for side in (up, down):
                side.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            for end in (writer, up_writer):
                end.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await end.wait_closed()
        self.tasks.discard(task)


async def test_a_commit_that_ran_but_whose_reply_was_lost_is_not_answered_twice(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    port = corec_redis.connection_pool.connection_kwargs.get("port", 6379)
    db = corec_redis.connection_pool.connection_kwargs.get("db", 0)
    relay = ExecCutter(port)
    await relay.start()
    stream = corec_streams["stream_in"]
    for i in range(50):
        await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"u{i}"))
    kernel = echo_kernel(redis_url=f"redis://127.0.0.1:{relay.port}/{db}")
    try:
        stats = await corec_worker(kernel)
    finally:
        await relay.close()
    assert relay.cuts == 1, "the fault was not injected: no EXEC went through the relay"
    got = await results(corec_redis, corec_streams["stream_out"])  # asserts no id twice
    assert sorted(got) == sorted(f"u{i}" for i in range(50))
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    assert stats.processed == 50
