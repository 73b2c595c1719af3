"""Deleting dead letters for good: the kit's ``dlq_delete`` (by id, by ``PARTITION/ID``, all of
those present when it starts), the manager's ``dlq_delete`` action through ``corec-kit exec``,
and ``corec-kit manager dlq delete`` (its confirmation, its exit codes), on the test Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from corec_manager import processor as manager

from corec_plugin_kit.api import dlq_bound, dlq_delete, dlq_list
from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.partitions import StreamSet, stream_sets

P = 3
#: The greatest sequence number an entry id can have.
SEQ_MAX = 2**64 - 1


def dead_fields(n: int) -> dict[bytes, bytes]:
    """A dead letter as the worker writes it: the command's fields plus the failure."""
    command = {"action": "echo", "params": {"n": "not a number"}, "id": f"bad{n}"}
    error = {"type": "invalid_params", "message": "n: not a number"}
    return {
        b"payload": orjson.dumps(command),
        b"error": orjson.dumps(error),
        b"deliveries": b"1",
    }


async def add_dead(client: Any, stream: str, *ids: str) -> list[str]:
    """Dead letters at these entry ids (``*``: the next one); their ids."""
    added = [
        await client.xadd(stream, dead_fields(n), id=entry_id) for n, entry_id in enumerate(ids)
    ]
    return [entry_id.decode() for entry_id in added]


async def ids_in(client: Any, stream: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await client.xrange(stream)]


@pytest.fixture
def kernel(corec_register: Any, corec_kernel: Any, corec_streams: dict[str, Any]) -> Any:
    """``kernel(**overrides)``: a Kernel with the manager on this test's streams."""
    corec_register(manager, name="manager", distribution="corec-manager", version="0.1.0")

    def build(**overrides: Any) -> Any:
        return corec_kernel(**{"records": False, **corec_streams, **overrides})

    return build


@pytest.fixture
async def partitioned(
    corec_streams: dict[str, Any], corec_redis: Any
) -> AsyncIterator[tuple[StreamSet, ...]]:
    """This test's streams in ``P`` partitions (their keys removed afterwards)."""
    sets = stream_sets(KernelConfig.model_validate({**corec_streams, "partitions": P}))
    yield sets
    await corec_redis.delete(*(s.dead_letter_stream for s in sets), *(s.stream_in for s in sets))


# --------------------------------------------------------------------------- the operation


async def test_delete_by_id(kernel: Any, corec_redis: Any, corec_streams: dict[str, Any]) -> None:
    dead = corec_streams["dead_letter_stream"]
    first, second, third = await add_dead(corec_redis, dead, "*", "*", "*")
    async with kernel() as k:
        outcome = await dlq_delete(k, [first, third, first])  # given twice: deleted once
    assert outcome == {
        "stream": dead,
        "deleted": [first, third],
        "count": 2,
        "missing": [],
        "ambiguous": [],
        "until": None,
    }
    assert await ids_in(corec_redis, dead) == [second]
    assert await corec_redis.exists(corec_streams["stream_in"]) == 0  # nothing replayed


async def test_missing_ids_are_named_and_the_others_deleted(
    kernel: Any, corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    dead = corec_streams["dead_letter_stream"]
    (kept,) = await add_dead(corec_redis, dead, "5-1")
    async with kernel() as k:
        outcome = await dlq_delete(k, ["5-1", "5-2", "0-1"])
        again = await dlq_delete(k, ["5-1"])  # deleted already
    assert (outcome["deleted"], outcome["missing"]) == (["5-1"], ["5-2", "0-1"])
    assert (again["deleted"], again["missing"], again["count"]) == ([], ["5-1"], 0)
    assert kept == "5-1"
    assert await corec_redis.exists(dead) == 1  # an empty stream stays a stream
    assert await corec_redis.xlen(dead) == 0


async def test_a_malformed_id_deletes_nothing(
    kernel: Any, corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    from corec_plugin_kit import InvalidParams

    dead = corec_streams["dead_letter_stream"]
    (first,) = await add_dead(corec_redis, dead, "*")
    async with kernel() as k:
        for bad in ("nope", "5", f"{SEQ_MAX + 1}-0", f"{P}/1-1"):
            with pytest.raises(InvalidParams, match=r"dead-letter entry id|kernel\.partitions"):
                await dlq_delete(k, [first, bad])
    assert await ids_in(corec_redis, dead) == [first]


async def test_delete_by_partition_and_id(
    kernel: Any, corec_redis: Any, partitioned: tuple[StreamSet, ...]
) -> None:
    # Entry ids count per stream: 5-1 is a dead letter of partitions 0 and 1, 6-1 of 2 alone.
    await add_dead(corec_redis, partitioned[0].dead_letter_stream, "5-1")
    await add_dead(corec_redis, partitioned[1].dead_letter_stream, "5-1", "7-1")
    await add_dead(corec_redis, partitioned[2].dead_letter_stream, "6-1")
    async with kernel(partitions=P) as k:
        listed = await dlq_list(k)
        assert [e["ref"] for e in listed["entries"]] == ["0/5-1", "1/5-1", "1/7-1", "2/6-1"]
        plain = await dlq_delete(k, ["5-1", "6-1", "8-1"])
        by_ref = await dlq_delete(k, ["1/5-1", "2/5-1"])
    assert plain["stream"] == f"{k.settings.kernel.dead_letter_stream} ({P} partitions)"
    assert plain["ambiguous"] == ["5-1"]  # in two partitions: deleted from neither
    assert (plain["deleted"], plain["missing"]) == (["6-1"], ["8-1"])
    assert (by_ref["deleted"], by_ref["missing"]) == (["1/5-1"], ["2/5-1"])
    assert [await ids_in(corec_redis, s.dead_letter_stream) for s in partitioned] == [
        ["5-1"],
        ["7-1"],
        [],
    ]


async def test_delete_all_keeps_what_came_after_the_bound(
    kernel: Any, corec_redis: Any, corec_streams: dict[str, Any]
) -> None:
    dead = corec_streams["dead_letter_stream"]
    await add_dead(corec_redis, dead, "10-0", "10-1", "10-2")
    async with kernel() as k:
        bound = await dlq_bound(k)
        assert (bound["until"], bound["total"]) == ("10-2", 3)
        # A worker dead-letters another command after the bound was read.
        late = await add_dead(corec_redis, dead, "*")
        outcome = await dlq_delete(k, all_entries=True, until=bound["until"])
    assert outcome == {
        "stream": dead,
        "deleted": None,  # a range: the ids are not read
        "count": 3,
        "missing": [],
        "ambiguous": [],
        "until": "10-2",
    }
    assert await ids_in(corec_redis, dead) == late


@pytest.mark.parametrize(
    ("until", "left"),
    [
        ("10-1", ["10-2", f"10-{SEQ_MAX}", "11-0"]),  # up to the bound, the bound included
        (f"10-{SEQ_MAX}", ["11-0"]),  # the last sequence of a millisecond: the next one is 11-0
        ("9-5", ["10-0", "10-1", "10-2", f"10-{SEQ_MAX}", "11-0"]),  # older than them all
    ],
)
async def test_delete_all_up_to_an_exact_bound(
    kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], until: str, left: list[str]
) -> None:
    dead = corec_streams["dead_letter_stream"]
    everything = ["10-0", "10-1", "10-2", f"10-{SEQ_MAX}", "11-0"]
    await add_dead(corec_redis, dead, *everything)
    async with kernel() as k:
        outcome = await dlq_delete(k, all_entries=True, until=until)
    assert outcome["count"] == len(everything) - len(left)
    assert await ids_in(corec_redis, dead) == left


async def test_delete_all_reads_the_bound_itself_and_handles_partitions(
    kernel: Any, corec_redis: Any, partitioned: tuple[StreamSet, ...]
) -> None:
    await add_dead(corec_redis, partitioned[0].dead_letter_stream, "*", "*")
    await add_dead(corec_redis, partitioned[2].dead_letter_stream, "*")
    async with kernel(partitions=P) as k:
        bound = await dlq_bound(k)
        late = await add_dead(corec_redis, partitioned[2].dead_letter_stream, "*")
        bounded = await dlq_delete(k, all_entries=True, until=bound["until"])
        assert bounded["count"] == 3 and bounded["until"] == bound["until"]
        assert [await corec_redis.xlen(s.dead_letter_stream) for s in partitioned] == [0, 0, 1]
        assert await ids_in(corec_redis, partitioned[2].dead_letter_stream) == late
        unbounded = await dlq_delete(k, all_entries=True)  # reads the bound when it starts
        empty = await dlq_delete(k, all_entries=True)
    assert unbounded["count"] == 1 and unbounded["until"] == {"2": late[0]}
    assert (empty["count"], empty["until"]) == (0, None)


# --------------------------------------------------------------------------- the action
# corec_cli runs `corec-kit` in this thread, which runs its own event loop: these tests are
# synchronous and write their dead letters with a synchronous client.


@pytest.fixture
def r(corec_streams: dict[str, Any]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(corec_streams["redis_url"])
    try:
        yield client
    finally:
        client.close()


def put_dead(client: redis.Redis, stream: str, count: int) -> list[str]:
    """``count`` dead letters at the next entry ids; their ids."""
    return [client.xadd(stream, dead_fields(n)).decode() for n in range(count)]


def ids_now(client: redis.Redis, stream: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(stream)]


@pytest.fixture
def kit_env(corec_streams: dict[str, Any]) -> dict[str, str]:
    """The environment of ``corec-kit`` on this test's streams, with the manager alone."""
    env = {f"COREC_KERNEL__{key.upper()}": str(value) for key, value in corec_streams.items()}
    env["COREC_KERNEL__RECORDS"] = "false"
    env["COREC_LOAD_PROCESSORS"] = "manager"
    return env


def test_the_action_through_exec(
    corec_cli: Callable[..., Any],
    kit_env: dict[str, str],
    r: redis.Redis,
    corec_streams: dict[str, Any],
) -> None:
    dead = corec_streams["dead_letter_stream"]
    first, second, _third = put_dead(r, dead, 3)

    def exec_delete(*params: str) -> Any:
        return corec_cli("exec", "dlq_delete", *params, env=kit_env)

    by_id = exec_delete("-p", f'ids:=["{first}", "1-1"]')
    assert by_id.exit_code == 0, by_id.output  # ran; the result says what was not found
    result = json.loads(by_id.stdout)["result"]
    assert (result["deleted"], result["missing"]) == ([first], ["1-1"])
    everything = exec_delete("-p", "all:=true")
    assert everything.exit_code == 0, everything.output
    assert json.loads(everything.stdout)["result"]["count"] == 2
    assert r.xlen(dead) == 0
    for params, message in [
        ((), "give `ids`"),
        (("--params", f'{{"ids": ["{second}"], "all": true}}'), "not both"),
        (("-p", 'ids:=["nope"]'), "is not a dead-letter entry id"),
    ]:
        bad = exec_delete(*params)
        assert bad.exit_code == 2, bad.output
        assert json.loads(bad.stdout)["error"]["type"] == "invalid_params"
        assert message in bad.stdout


# --------------------------------------------------------------------------- the command line


def test_cli_asks_first_and_a_no_leaves_them(
    corec_cli: Callable[..., Any],
    kit_env: dict[str, str],
    r: redis.Redis,
    corec_streams: dict[str, Any],
) -> None:
    dead = corec_streams["dead_letter_stream"]
    ids = put_dead(r, dead, 3)
    for answer in ("n\n", "\n", ""):  # no, the default, and no answer at all (stdin closed)
        refused = corec_cli("manager", "dlq", "delete", "--all", input=answer, env=kit_env)
        assert refused.exit_code == 1, refused.output
        assert f"delete 3 dead letters from {dead}? [y/N]" in refused.stderr
        assert "nothing deleted (pass --yes to delete without asking)" in refused.stderr
        assert refused.stdout == ""
        assert ids_now(r, dead) == ids
    one = corec_cli("manager", "dlq", "delete", ids[0], input="y\n", env=kit_env)
    assert one.exit_code == 0, one.output
    assert f"delete 1 dead letter from {dead}? [y/N]" in one.stderr
    assert one.stdout == f"deleted 1 dead letter from {dead}\n"
    assert ids_now(r, dead) == ids[1:]


def test_cli_all_with_yes_and_missing_ids(
    corec_cli: Callable[..., Any],
    kit_env: dict[str, str],
    r: redis.Redis,
    corec_streams: dict[str, Any],
) -> None:
    dead = corec_streams["dead_letter_stream"]
    first, *_rest = put_dead(r, dead, 3)
    partly = corec_cli("manager", "dlq", "delete", "--yes", first, "1-1", "2-2", env=kit_env)
    assert partly.exit_code == 1, partly.output  # as `dlq replay`: exit 1, naming them
    assert partly.stdout == f"deleted 1 dead letter from {dead}\n"
    assert "not found: 1-1, 2-2" in partly.stderr
    assert "[y/N]" not in partly.output
    rest = corec_cli("manager", "dlq", "delete", "--all", "--yes", env=kit_env)
    assert rest.exit_code == 0, rest.output
    assert rest.stdout == f"deleted 2 dead letters from {dead}\n"
    assert r.xlen(dead) == 0
    nothing = corec_cli("manager", "dlq", "delete", "--all", env=kit_env)  # nothing to ask
    assert nothing.exit_code == 0, nothing.output
    assert nothing.stdout == f"deleted 0 dead letters from {dead}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name dead-letter entry ids, or pass --all"),
        (("--all", "1-1"), "not both"),
        (("nope", "12"), "nope, 12: name dead letters as `corec-kit manager dlq list` shows"),
    ],
)
def test_cli_usage_errors_ask_nothing(
    corec_cli: Callable[..., Any], kit_env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = corec_cli("manager", "dlq", "delete", *args, env=kit_env)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "[y/N]" not in result.output
    assert "Traceback" not in result.output


def test_cli_names_partitions_in_the_question(
    corec_cli: Callable[..., Any],
    kit_env: dict[str, str],
    partitioned: tuple[StreamSet, ...],
    corec_streams: dict[str, Any],
) -> None:
    env = {**kit_env, "COREC_KERNEL__PARTITIONS": str(P)}
    result = corec_cli("manager", "dlq", "delete", "0/1-1", "1-1", input="y\n", env=env)
    dead = corec_streams["dead_letter_stream"]
    assert f"delete 2 dead letters from {dead} ({P} partitions)? [y/N]" in result.stderr
    assert result.exit_code == 1
    assert "not found: 0/1-1, 1-1" in result.stderr
