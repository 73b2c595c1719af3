"""Envelopes: both wire forms, every invalid-command case, the documented pydantic models."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_procs import Greet, greet, processor, refuse

from corec_plugin_kit import CorecError, InvalidCommand, InvalidParams
from corec_plugin_kit.envelopes import (
    MAX_DEPTH,
    Command,
    Result,
    check_shape,
    codex_data,
    codex_response,
    dumps,
    parse_fields,
)


def test_payload_form() -> None:
    body = {
        "action": "greet",
        "params": {"name": "x"},
        "id": "k1",
        "reply_to": "r",
        "meta": {"a": 1},
    }
    assert parse_fields({b"payload": orjson.dumps(body)}) == body
    assert parse_fields({"payload": orjson.dumps(body).decode()}) == body


def test_payload_form_without_params_gets_empty_params() -> None:
    assert parse_fields({b"payload": b'{"action": "ping"}'}) == {"action": "ping", "params": {}}


def test_flat_form_parses_params_text() -> None:
    fields = {b"action": b"greet", b"params": b'{"name": "x"}', b"id": b"k2", b"reply_to": b"out"}
    assert parse_fields(fields) == {
        "action": "greet",
        "params": {"name": "x"},
        "id": "k2",
        "reply_to": "out",
    }
    assert parse_fields({"action": "ping"}) == {"action": "ping", "params": {}}


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({b"action": b"a", b"params": b"{nope"}, InvalidParams, "params is not JSON"),
        ({b"action": b"a", b"params": b"[1]"}, InvalidParams, "must be a JSON object"),
        ({b"action": b"a", b"params": b'{"n": 1e400}'}, InvalidParams, "infinity"),
        ({b"action": b"a", b"params": b'{"s": "\\ud800"}'}, InvalidParams, "surrogate"),
        ({b"action": b"a", b"params": b'{"n": 36893488147419103232}'}, InvalidCommand, "64-bit"),
        ({b"action": b"a", b"params": b'{"n": -9223372036854775809}'}, InvalidCommand, "64-bit"),
        ({b"action": b"a", b"params": b'{"n": ' + b"9" * 5000 + b"}"}, InvalidParams, "infinity"),
        ({b"action": b"a", b"params": b'{"s": "a\\u0000"}'}, InvalidCommand, "NUL"),
        ({b"action": b"a", b"params": b'{"a\\u0000": 1}'}, InvalidCommand, "NUL"),
        ({b"action": b"a\x00"}, InvalidCommand, "NUL"),
        ({b"action": b"a", b"id": b"k\x00"}, InvalidCommand, "NUL"),
        ({b"action": b"a", b"reply_to": b"r\x00"}, InvalidCommand, "NUL"),
        ({b"payload": b'{"action": "a\\u0000"}'}, InvalidCommand, "NUL"),
        ({b"payload": b'{"action": "a", "id": "\\u0000"}'}, InvalidCommand, "NUL"),
        ({b"payload": b'{"action": "a", "meta": {"m": "\\u0000"}}'}, InvalidCommand, "NUL"),
        ({b"payload": b'{"action": "a", "params": {"n": 1e999}}'}, InvalidCommand, "infinity"),
        (
            {b"payload": b'{"action": "a", "params": {"n": 99999999999999999999}}'},
            InvalidCommand,
            "64-bit",
        ),
        (
            {b"payload": b'{"action": "a", "params": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}"},
            InvalidCommand,
            "nests deeper than 100",
        ),
        (
            {b"action": b"a", b"params": b'{"x": ' + b"[" * 99 + b"]" * 99 + b"}"},
            InvalidCommand,
            "nests deeper than 100",
        ),
    ],
)
def test_content_that_cannot_round_trip_is_refused(
    fields: dict[bytes, bytes], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse_fields(fields)


def test_content_at_the_limits_is_kept_exactly() -> None:
    params = {
        "deep": orjson.loads(b"[" * 98 + b"]" * 98),
        "u64": 2**64 - 1,
        "i64": -(2**63),
        "ns_timestamp": 1796190992499000000,
        "nineteen_nines": 9999999999999999999,
        "digits": "12345678901234567890123",
        "escaped": "\\u0000 is six characters here",
    }
    for fields in (
        {b"action": b"a", b"params": orjson.dumps(params)},
        {b"payload": orjson.dumps({"action": "a", "params": params})},
    ):
        assert parse_fields(fields)["params"] == params
        assert orjson.loads(orjson.dumps({"result": {"echo": params}}))["result"]["echo"] == params


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=30,
    )
)
def test_whatever_is_accepted_round_trips(value: Any) -> None:
    """Property: a command parse_fields accepts can be encoded again and reads back equal."""
    try:
        raw = orjson.dumps({"action": "a", "params": {"v": value}})
    except TypeError:
        return  # not encodable by a producer using orjson either; the text forms below are
    for fields in ({b"payload": raw}, {b"action": b"a", b"params": orjson.dumps({"v": value})}):
        try:
            command = parse_fields(fields)
        except (InvalidCommand, InvalidParams):
            continue
        assert orjson.loads(orjson.dumps(command)) == command


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({b"payload": b"{not json"}, "payload is not JSON"),
        ({b"payload": b"[1, 2]"}, "must be a JSON object"),
        ({b"payload": b'{"params": {}}'}, "`action` must be a non-empty string"),
        ({b"payload": b'{"action": ""}'}, "`action` must be a non-empty string"),
        ({b"payload": orjson.dumps({"action": "a" * 101})}, "at most 100"),
        ({b"payload": b'{"action": 5}'}, "`action` must be a non-empty string"),
        ({b"payload": b'{"action": "a", "params": [1]}'}, "`params` must be a JSON object"),
        ({b"payload": b'{"action": "a", "id": ""}'}, "`id` must be a non-empty string"),
        ({b"payload": b'{"action": "a", "id": 7}'}, "`id` must be a non-empty string"),
        ({b"payload": orjson.dumps({"action": "a", "reply_to": "r" * 201})}, "`reply_to`"),
        ({b"payload": b'{"action": "a", "meta": "x"}'}, "`meta` must be a JSON object"),
        ({b"payload": b'{"action": "a", "extra": 1}'}, "unknown envelope keys: extra"),
        ({b"other": b"x"}, "neither a `payload` field nor an `action` field"),
        ({b"action": b"\xff\xfe"}, "`action` is not UTF-8 text"),
        ({b"action": b"a", b"id": b"\xff"}, "`id` is not UTF-8 text"),
    ],
)
def test_invalid_commands(fields: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(InvalidCommand, match=message.replace("[", r"\[")) as caught:
        parse_fields(fields)
    assert caught.value.wire_type == "invalid_command"
    assert caught.value.exit_code == 2


def test_size_limits_in_both_forms() -> None:
    big = orjson.dumps({"action": "a", "params": {"x": "y" * 200}})
    with pytest.raises(InvalidCommand, match="over max_payload_bytes=100") as caught:
        parse_fields({b"payload": big}, max_bytes=100)
    assert caught.value.details == {"size": len(big), "max_payload_bytes": 100}
    with pytest.raises(InvalidCommand, match="entry is"):
        parse_fields({b"action": b"a", b"params": b"y" * 200}, max_bytes=100)
    assert parse_fields({b"payload": big}, max_bytes=len(big))["action"] == "a"


def test_missing_fields_listed_in_details() -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_fields({b"zeta": b"1", "alpha": "2"})
    assert caught.value.details == {"fields": ["alpha", "zeta"]}


_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")  # refused above


@given(
    action=st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True),
    params=st.dictionaries(
        st.text(_TEXT, max_size=10),
        st.integers(-(2**63), 2**63 - 1) | st.text(_TEXT, max_size=10),
        max_size=5,
    ),
    key=st.none() | st.text(_TEXT, min_size=1, max_size=50),
)
def test_both_forms_agree_with_the_command_model(
    action: str, params: dict[str, Any], key: str | None
) -> None:
    body: dict[str, Any] = {"action": action, "params": params}
    if key is not None:
        body["id"] = key
    from_payload = parse_fields({b"payload": orjson.dumps(body)})
    flat = {b"action": action.encode(), b"params": orjson.dumps(params)}
    if key is not None:
        flat[b"id"] = key.encode()
    from_flat = parse_fields(flat)
    assert from_payload == from_flat
    assert Command.model_validate(from_payload).model_dump(exclude_none=True) == body


def test_check_shape_accepts_what_the_model_accepts() -> None:
    data = {"action": "x", "params": None}
    assert check_shape(data) == {"action": "x", "params": {}}


async def test_result_model_accepts_what_dispatch_builds(
    corec_register: Any, corec_kernel: Any
) -> None:
    def corec_register_actions(register: Any) -> None:
        register("greet", greet, Greet)
        register("refuse", refuse)

    corec_register(processor(corec_register_actions=corec_register_actions), name="p")
    async with corec_kernel() as kernel:
        envelopes = [
            await kernel.execute({"action": "greet", "params": {"name": "a"}}),
            await kernel.execute({"action": "refuse", "params": {}}),
            await kernel.execute({"action": "greet", "params": {}}),
            await kernel.execute({"action": "missing"}),
            await kernel.execute({"action": ""}),
        ]
    types = []
    for envelope in envelopes:
        model = Result.model_validate(envelope)
        dumped = model.model_dump(mode="json")
        assert dumped.pop("replayed") is None  # only answers from a record carry it
        assert dumped == orjson.loads(dumps(envelope))
        assert set(envelope) == set(Result.model_fields) - {"replayed"}  # only on replays
        types.append(model.error.type if model.error else None)
    assert types == [None, "handler_error", "invalid_params", "unknown_action", "invalid_command"]


def test_dumps_understands_models_and_sets() -> None:
    assert orjson.loads(dumps({"m": Greet(name="x"), "s": {1}, 1: (2,)})) == {
        "m": {"name": "x", "times": 1},
        "s": [1],
        "1": [2],
    }
    with pytest.raises(TypeError, match="not JSON serializ"):
        dumps({"x": object()})


# --------------------------------------------------------------------------- codex's data form
# Re-enacts plugins/codex/cli.py `send`: `r.xadd("corec_commands", {"data": json.dumps(cmd)})`
# with cmd = {"action": ..., "params": {...}}, and processors/manager.py `run_loop`, which reads
# `fields.get("data")` (a decode_responses client: str keys and values).


def test_data_form_reads_like_payload_and_is_marked_codex() -> None:
    cmd = {"action": "generate_plugin", "params": {"plugin_name": "demo"}}
    want = {**cmd, "wire": "codex"}
    assert parse_fields({"data": json.dumps(cmd)}) == want  # str fields (codex's client)
    assert parse_fields({b"data": json.dumps(cmd).encode()}) == want  # bytes (the worker's)
    body = {"action": "greet", "params": {"name": "x"}, "id": "k", "reply_to": "r", "meta": {}}
    assert parse_fields({b"data": orjson.dumps(body)}) == {**body, "wire": "codex"}
    assert parse_fields({b"data": b'{"action": "ping"}'}) == {
        "action": "ping",
        "params": {},
        "wire": "codex",
    }


def test_payload_and_flat_forms_are_not_marked() -> None:
    body = {"action": "ping", "params": {}}
    assert "wire" not in parse_fields({b"payload": orjson.dumps(body)})
    assert "wire" not in parse_fields({b"action": b"ping", b"params": b"{}"})
    # A `payload` or `action` field decides the form; a `data` beside them is just a field.
    assert "wire" not in parse_fields({b"payload": orjson.dumps(body), b"data": b"x"})
    flat = parse_fields({b"action": b"ping", b"data": b"not json"})
    assert flat == {"action": "ping", "params": {}}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{not json", "data is not JSON"),
        (b"[1, 2]", "data must be a JSON object"),
        (b'{"params": {}}', "`action` must be a non-empty string"),
        (b'{"action": "x", "params": [1]}', "`params` must be a JSON object"),
        (b'{"action": "x", "id": ""}', "`id` must be a non-empty string"),
        (b'{"action": "x", "meta": 1}', "`meta` must be a JSON object"),
        (b'{"action": "x\\u0000"}', "NUL"),
        (b'{"action": "x", "params": {"n": 1e999}}', "not JSON|not finite"),
        (b'{"action": "x", "params": {"n": 99999999999999999999999}}', "64-bit range"),
        (b'{"action": "x", "params": ' + b"[" * 120 + b"]" * 120 + b"}", "deeper than|not JSON"),
        (b'{"action": "x", "stuff": 1}', "unknown envelope keys: stuff"),
        # A producer cannot set the internal key itself, in any form.
        (b'{"action": "x", "wire": "codex"}', "unknown envelope keys: wire"),
        (b"\xff", "not JSON"),
    ],
)
def test_data_form_gets_the_payload_checks(raw: bytes, match: str) -> None:
    with pytest.raises(InvalidCommand, match=match):
        parse_fields({b"data": raw})


def test_producer_sent_wire_is_refused_in_the_payload_form_too() -> None:
    with pytest.raises(InvalidCommand, match="unknown envelope keys: wire"):
        parse_fields({b"payload": b'{"action": "x", "wire": "codex"}'})
    with pytest.raises(InvalidCommand, match="unknown envelope keys: wire"):
        check_shape({"action": "x", "wire": "kit"})


def test_data_form_size_limit() -> None:
    raw = orjson.dumps({"action": "x", "params": {"s": "a" * 200}})
    with pytest.raises(InvalidCommand, match=r"data is \d+ bytes, over max_payload_bytes=100"):
        parse_fields({b"data": raw}, max_bytes=100)
    assert parse_fields({b"data": raw}, max_bytes=len(raw))["wire"] == "codex"


def test_entry_without_any_form_names_all_three() -> None:
    with pytest.raises(InvalidCommand, match="codex's `data`"):
        parse_fields({b"other": b"x"})


def _envelope(**over: Any) -> dict[str, Any]:
    env = {
        "id": "1-0",
        "action": "generate_plugin",
        "status": "ok",
        "result": {"project_dir": "plugins/demo", "files": []},
        "error": None,
        "processor": "generator",
        "attempt": 1,
        "duration_ms": 1.0,
        "entry_id": "1-0",
    }
    env.update(over)
    return env


def test_codex_response_of_a_success() -> None:
    # codex's generator answered {"status": "ok", "type": "plugin", "path": dest}.
    out = codex_response(_envelope())
    assert out == {
        "status": "ok",
        "message": "ok",
        "id": "1-0",
        "action": "generate_plugin",
        "result": {"project_dir": "plugins/demo", "files": []},
        "error": None,
        "path": "plugins/demo",
        "type": "plugin",
    }
    site = codex_response(_envelope(action="generate_website"))
    assert site["type"] == "website" and site["path"] == "plugins/demo"
    # The result's own message, path and type win (codex's revise: "Archivo revisado", path).
    revised = codex_response(
        _envelope(
            action="revise",
            result={"message": "Archivo revisado", "path": "a.py", "project_dir": "x", "type": "t"},
        )
    )
    assert (revised["message"], revised["path"], revised["type"]) == (
        "Archivo revisado",
        "a.py",
        "t",
    )
    # Results that are not objects, or whose message is not text, say "ok".
    assert codex_response(_envelope(action="ping", result=[1]))["message"] == "ok"
    other = codex_response(_envelope(action="ping", result={"message": 3}))
    assert other["message"] == "ok" and "path" not in other and "type" not in other


def test_codex_response_of_a_failure() -> None:
    # codex's manager answered {"status": "error", "message": str(e)} (and "details" for a
    # payload that failed validation).
    error = {"type": "invalid_params", "message": "bad params", "details": [{"loc": "x"}]}
    out = codex_response(_envelope(status="error", result=None, error=error))
    assert out == {
        "status": "error",
        "message": "bad params",
        "id": "1-0",
        "action": "generate_plugin",
        "result": None,
        "error": error,
        "details": [{"loc": "x"}],
    }
    plain = {"type": "handler_error", "message": "boom", "details": None}
    assert "details" not in codex_response(_envelope(status="error", result=None, error=plain))
    assert orjson.loads(codex_data(_envelope(status="error", result=None, error=plain))) == {
        "status": "error",
        "message": "boom",
        "id": "1-0",
        "action": "generate_plugin",
        "result": None,
        "error": plain,
    }


@given(
    st.lists(
        st.one_of(
            st.sampled_from([b"-", b"[", b"{", b"}", b"]", b'"', b" ", b"a", b"\\u0000"]),
            st.integers(min_value=0, max_value=10**25).map(lambda n: str(n).encode()),
        ),
        max_size=40,
    ).map(b"".join)
)
def test_the_cheap_scan_never_misses_a_long_integer_or_a_nesting(text: bytes) -> None:
    """The scan that decides whether the exact (slow) checks run sees every run of 20 digits
    and every minus sign before 19, and counts nesting as "[" plus "{" do."""
    import re

    from corec_plugin_kit import envelopes

    scan = text.translate(envelopes._SCAN)
    if re.search(rb"[0-9]{20}|-[0-9]{19}", text):
        assert envelopes._LONG_RUN in scan
    assert scan.count(b"[") == text.count(b"[") + text.count(b"{")


@pytest.mark.parametrize(("form", "depth"), [("payload", 0), ("params", 1)])
def test_the_shortest_text_that_nests_too_deep_is_refused(form: str, depth: int) -> None:
    # The nesting count is skipped for a text too short to nest past MAX_DEPTH (two bytes
    # per level). The shortest that does is refused for it; one level less is not (it is
    # refused only because it is not an object). The payload is the envelope, level 0;
    # flat-form params sit at level 1.
    def fields(levels: int) -> dict[bytes, bytes]:
        text = b"[" * levels + b"]" * levels
        return {b"payload": text} if form == "payload" else {b"action": b"a", b"params": text}

    too_deep = MAX_DEPTH - depth + 1
    with pytest.raises(InvalidCommand, match="nests deeper than 100"):
        parse_fields(fields(too_deep))
    with pytest.raises(CorecError, match="must be a JSON object") as refused:
        parse_fields(fields(too_deep - 1))
    assert "nests deeper" not in str(refused.value)


def test_keys_that_are_not_strings_are_written_as_strings() -> None:
    # orjson refuses them unless asked (and asking slows every dumps): the kit asks on a
    # second try, so a handler's {1: ...} result still goes out, as {"1": ...}.
    when = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    result = {1: "one", "nested": {2.5: [True, {None: 0}]}, when: "then"}
    assert orjson.loads(dumps({"result": result})) == {
        "result": {
            "1": "one",
            "nested": {"2.5": [True, {"null": 0}]},
            "2026-12-03T12:00:00+00:00": "then",
        }
    }
    with pytest.raises(TypeError):  # and what cannot be written at all still says so
        dumps({"result": object()})
