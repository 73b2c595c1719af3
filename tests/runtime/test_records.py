"""Records through the stream: idempotent on the command key; a database outage loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from pydantic import SecretStr
from runtime_helpers import payload, pending, results

from corec_plugin_kit.storage import open_store


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/records.db"
    return str(request.getfixturevalue("corec_postgres_schema_url"))


async def all_records(kernel: Any, database_url: str | None = None) -> list[Any]:
    config = kernel.settings.kernel
    if database_url is not None:
        config = config.model_copy(update={"database_url": SecretStr(database_url)})
    store = open_store(config)
    await store.open()
    try:
        return list(await store.query(limit=100_000))
    finally:
        await store.close()


async def test_300_commands_sent_twice_leave_300_records(
    echo_kernel: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    corec_worker: Any,
    database_url: str,
) -> None:
    stream = corec_streams["stream_in"]
    kernel = echo_kernel(records=True, database_url=database_url)
    for _round in range(2):
        pipe = corec_redis.pipeline(transaction=False)
        for i in range(300):
            pipe.xadd(stream, payload("echo", {"n": i, "text": "é✓"}, id=f"k{i}"))
        await pipe.execute()
        await corec_worker(kernel)
    records = await all_records(kernel)
    assert len(records) == 300
    by_key = {r.command_key: r for r in records}
    assert by_key["k7"].status == "ok"
    assert by_key["k7"].result == {"n": 7, "text": "é✓"}
    assert by_key["k7"].params == {"n": 7, "text": "é✓"}
    assert by_key["k7"].processor == "echo_proc" and by_key["k7"].action == "echo"
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0


class Proxy:
    """A TCP relay in front of PostgreSQL that the test can cut: a real network outage."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()
        await self.server.wait_closed()

    async def close(self) -> None:
        await self.cut()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_postgres_down_30s_under_load_loses_nothing_and_dead_letters_nothing(
    echo_kernel: Any,
    corec_redis: Any,
    corec_streams: dict[str, Any],
    corec_postgres_schema_url: str,
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from corec_plugin_kit.runtime.service import run_worker

    parts = urlsplit(corec_postgres_schema_url)
    proxy = Proxy(parts.port or 5432)
    await proxy.start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    kernel = echo_kernel(records=True, database_url=via_proxy, claim_idle_ms=2000)
    stream = corec_streams["stream_in"]
    sent = 0

    async def produce(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            await corec_redis.xadd(stream, payload("echo", {"n": sent}, id=f"o{sent}"))
            sent += 1
            await asyncio.sleep(0.005)

    task = asyncio.ensure_future(run_worker(kernel))
    try:
        await produce(200)
        await proxy.cut()  # the database goes away under load
        outage = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - outage < 30:
            await produce(100)
            assert not task.done(), task.exception()
        answered_during = len(await results(corec_redis, corec_streams["stream_out"]))
        await proxy.start()  # back on the same port
        for _ in range(600):
            if len(await results(corec_redis, corec_streams["stream_out"])) == sent:
                break
            await asyncio.sleep(0.1)
    finally:
        if kernel.runtime is not None:
            kernel.runtime.stop()
        await asyncio.wait_for(task, 60)
        await proxy.close()
    answered = await results(corec_redis, corec_streams["stream_out"])
    assert len(answered) == sent > 2000
    # Nothing was acknowledged (or answered) without its record while the database was down.
    assert answered_during <= 200 + 2 * kernel.settings.kernel.batch_size
    assert await corec_redis.xlen(corec_streams["dead_letter_stream"]) == 0
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    records = await all_records(kernel, corec_postgres_schema_url)
    assert len(records) == sent
    assert all(r.status == "ok" for r in records)


async def test_the_worker_purges_records_past_their_retention(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Any
) -> None:
    from corec_plugin_kit.runtime.service import run_worker

    stream = corec_streams["stream_in"]
    # 2e-5 days is 1.7 s: the first records expire while the worker keeps running.
    kernel = echo_kernel(
        records=True,
        database_url=f"sqlite:///{tmp_path}/purge.db",
        records_retention_days=2e-5,
    )
    for i in range(20):
        await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"old{i}"))
    task = asyncio.ensure_future(run_worker(kernel))
    try:
        for _ in range(100):
            if len(await results(corec_redis, corec_streams["stream_out"])) == 20:
                break
            await asyncio.sleep(0.05)
        assert len(await all_records(kernel)) == 20
        await asyncio.sleep(2.5)  # past the retention, and past a purge interval (0.86 s)
        await corec_redis.xadd(stream, payload("echo", {"n": 99}, id="new"))
        for _ in range(100):
            keys = {r.command_key for r in await all_records(kernel)}
            if keys == {"new"}:
                break
            await asyncio.sleep(0.1)
    finally:
        kernel.runtime.stop()
        await asyncio.wait_for(task, 20)
    assert keys == {"new"}


async def test_nothing_is_acknowledged_or_answered_before_its_record_is_written(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], tmp_path: Any
) -> None:
    """The fast form of the guarantee: another connection holds SQLite's write lock, so no
    record can be written; meanwhile no result appears and every entry stays pending. Once the
    lock is released, all of them are recorded, answered and acknowledged."""
    import sqlite3

    from corec_plugin_kit.runtime.service import run_worker

    db = tmp_path / "records.db"
    kernel = echo_kernel(records=True, database_url=f"sqlite:///{db}")
    stream, group = corec_streams["stream_in"], corec_streams["group"]
    await corec_redis.xadd(stream, payload("echo", {"n": -1}, id="warm-up"))
    task = asyncio.ensure_future(run_worker(kernel))
    try:
        for _ in range(200):  # the worker runs and the schema exists
            if await corec_redis.xlen(corec_streams["stream_out"]) == 1:
                break
            await asyncio.sleep(0.05)
        assert await corec_redis.xlen(corec_streams["stream_out"]) == 1
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(20):
                await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"held{i}"))
            for _ in range(30):  # 1.5 s: handled, but not recordable
                await asyncio.sleep(0.05)
                assert await corec_redis.xlen(corec_streams["stream_out"]) == 1
            assert await pending(corec_redis, stream, group) == 20
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for _ in range(400):
            if await pending(corec_redis, stream, group) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        kernel.runtime.stop()
        await asyncio.wait_for(task, 30)
    got = await results(corec_redis, corec_streams["stream_out"])
    assert {f"held{i}" for i in range(20)} <= set(got)
    assert await pending(corec_redis, stream, group) == 0
    assert len(await all_records(kernel)) == 21


async def test_a_refused_commit_stops_the_worker_with_records_on(
    echo_kernel: Any,
    corec_redis: Any,
    corec_redis_url: str,
    corec_streams: dict[str, Any],
    corec_worker: Any,
    database_url: str,
) -> None:
    """With records on, a batch's transaction is sent while the next batch's records are
    written; a transaction Redis refuses (here a user without XACK: NOPERM when queued, so
    EXEC aborts) still stops the worker with the error, and nothing is acknowledged."""
    from urllib.parse import urlsplit

    from redis.exceptions import ResponseError

    stream, group = corec_streams["stream_in"], corec_streams["group"]
    user = f"noack-{group}"
    await corec_redis.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-xack"
    )
    try:
        for i in range(600):
            await corec_redis.xadd(stream, payload("echo", {"n": i}, id=f"r{i}"))
        where = urlsplit(corec_redis_url)
        url = f"redis://{user}:pw@{where.hostname}:{where.port or 6379}{where.path}"
        kernel = echo_kernel(records=True, database_url=database_url, redis_url=url, batch_size=100)
        with pytest.raises(ResponseError, match=r"EXECABORT|NOPERM|permission"):
            await asyncio.wait_for(corec_worker(kernel), timeout=60)
    finally:
        await corec_redis.execute_command("ACL", "DELUSER", user)
    (info,) = [g for g in await corec_redis.xinfo_groups(stream) if g["name"].decode() == group]
    assert info["entries-read"] > 0
    assert info["pending"] == info["entries-read"]  # whatever was delivered, none acknowledged
    assert await corec_redis.xlen(corec_streams["stream_out"]) == 0
