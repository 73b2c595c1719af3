"""Bad input on the stream: each form gets its typed result and a dead letter; work goes on."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import flat, payload, pending, results


async def test_each_bad_form_gets_its_typed_result_and_good_ones_are_answered(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any
) -> None:
    stream = corec_streams["stream_in"]
    bad = {
        "not_json": {b"payload": b"{nope"},
        "array": {b"payload": b"[1, 2]"},
        "no_action_key": {b"payload": orjson.dumps({"params": {}})},
        "action_not_str": {b"payload": orjson.dumps({"action": 5})},
        "extra_key": {b"payload": orjson.dumps({"action": "echo", "surprise": 1})},
        "no_fields": {b"something": b"else"},
        "params_not_object": {b"payload": orjson.dumps({"action": "echo", "params": [1]})},
        "flat_params_not_json": {"action": "echo", "params": "{nope"},
        "unknown_action": payload("no_such_action", {}),
        "invalid_params": payload("echo", {"n": "not a number"}),
        "oversized": payload("echo", {"n": 1, "text": "x" * 5000}),
    }
    expected = {
        "not_json": "invalid_command",
        "array": "invalid_command",
        "no_action_key": "invalid_command",
        "action_not_str": "invalid_command",
        "extra_key": "invalid_command",
        "no_fields": "invalid_command",
        "params_not_object": "invalid_command",
        "flat_params_not_json": "invalid_params",
        "unknown_action": "unknown_action",
        "invalid_params": "invalid_params",
        "oversized": "invalid_command",
    }
    entry_of: dict[str, str] = {}
    for i, (name, fields) in enumerate(bad.items()):
        entry_of[name] = (await corec_redis.xadd(stream, fields)).decode()
        await corec_redis.xadd(stream, flat("echo", {"n": i}, id=f"good{i}"))

    stats = await corec_worker(echo_kernel(max_payload_bytes=2000))

    got = await results(corec_redis, corec_streams["stream_out"])
    for i in range(len(bad)):
        assert got[f"good{i}"]["status"] == "ok"
    for name, entry_id in entry_of.items():
        answer = got[entry_id]
        assert answer["status"] == "error", name
        assert answer["error"]["type"] == expected[name], (name, answer["error"])
        assert answer["error"]["message"]
    assert got[entry_of["invalid_params"]]["error"]["details"][0]["loc"] == "n"
    dead = await corec_redis.xrange(corec_streams["dead_letter_stream"])
    assert len(dead) == len(bad)
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
    assert stats.ok == len(bad) and stats.dead_lettered == len(bad)


field_text = st.one_of(
    st.sampled_from([b"payload", b"action", b"params", b"id", b"reply_to", b"meta"]),
    st.binary(min_size=1, max_size=12),
)
value = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"echo", b"ping", b"{}", b'{"n": 1}', b"null", b"[]"]),
    st.builds(
        lambda d: orjson.dumps(d),
        st.dictionaries(
            st.sampled_from(["action", "params", "id", "reply_to", "meta", "x"]),
            st.one_of(
                st.text(max_size=8),
                st.integers(-(2**53), 2**53),
                st.none(),
                st.dictionaries(st.text(max_size=3), st.integers(-(2**53), 2**53), max_size=2),
            ),
            max_size=5,
        ),
    ),
)
entries = st.lists(
    st.dictionaries(field_text, value, min_size=1, max_size=4), min_size=1, max_size=8
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=entries)
async def test_arbitrary_entries_never_crash_the_worker(
    echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any], corec_worker: Any, batch: Any
) -> None:
    stream = corec_streams["stream_in"]
    await corec_redis.delete(stream, corec_streams["stream_out"])
    ids = [(await corec_redis.xadd(stream, fields)).decode() for fields in batch]
    sentinel = await corec_redis.xadd(stream, payload("echo", {"n": 1}, id="sentinel"))

    await corec_worker(echo_kernel(max_payload_bytes=4096))

    answered = [
        orjson.loads(fields[b"payload"])
        for _e, fields in await corec_redis.xrange(corec_streams["stream_out"])
    ]
    by_entry = {a["entry_id"]: a for a in answered}
    # Every entry answered exactly once (a reply_to in the entry may send it elsewhere).
    assert sentinel.decode() in by_entry
    for entry_id, fields in zip(ids, batch, strict=True):
        routed_elsewhere = b"reply_to" in fields or b"payload" in fields
        assert entry_id in by_entry or routed_elsewhere
    assert await pending(corec_redis, stream, corec_streams["group"]) == 0
