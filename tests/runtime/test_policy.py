"""The worker's per-entry policy and commit layout, without Redis or a store.

``runtime/policy.py`` and ``CommitLayout`` are pure: these tests drive them with plain values and
a circuit breaker on a fake clock (the breaker is in-memory; the clock is the only stand-in).
"""

from __future__ import annotations

from typing import Any

import hiredis
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.envelopes import DEAD_LETTER_FIELDS, failed_envelope, result_envelope
from corec_plugin_kit.errors import (
    DatabaseUnavailable,
    DeadLettered,
    DependencyUnavailable,
    HandlerError,
    HandlerTimeout,
    InvalidCommand,
    InvalidParams,
    UnknownAction,
)
from corec_plugin_kit.runtime.breaker import CircuitBreaker
from corec_plugin_kit.runtime.commit import CommitLayout
from corec_plugin_kit.runtime.policy import ReplyRules, Step, exhausted, parse_entry, settle
from corec_plugin_kit.runtime.state import Entry
from corec_plugin_kit.runtime.transport import pack, pack_result, slot_of, xadd_head

DLS = "corec_dead_letters"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(max_failures: int = 2) -> CircuitBreaker:
    return CircuitBreaker(max_failures, 10.0, clock=Clock())


@pytest.mark.parametrize(
    ("error", "step"),
    [
        (None, Step.ANSWER),
        (HandlerError("no"), Step.ANSWER),
        (InvalidParams("bad"), Step.ANSWER_DEAD),
        (UnknownAction("nope"), Step.ANSWER_DEAD),
        (InvalidCommand("bad"), Step.ANSWER_DEAD),
        (HandlerTimeout("slow"), Step.RETRY),
        (DependencyUnavailable("down"), Step.RETRY),
        (DatabaseUnavailable("down"), Step.RETRY),
    ],
)
def test_settle_by_error_class(error: object, step: Step) -> None:
    assert settle(error, breaker(), deliveries=1, max_deliveries=3) is step  # type: ignore[arg-type]


def test_a_transient_failure_on_the_last_delivery_is_dead_lettered() -> None:
    error = HandlerTimeout("slow")
    assert settle(error, breaker(5), deliveries=2, max_deliveries=3) is Step.RETRY
    assert settle(error, breaker(5), deliveries=3, max_deliveries=3) is Step.DEAD_LETTER
    assert settle(error, breaker(5), deliveries=9, max_deliveries=3) is Step.DEAD_LETTER


def test_an_open_breaker_parks_instead_of_dead_lettering() -> None:
    cb = breaker(2)
    error = DependencyUnavailable("down")
    assert settle(error, cb, deliveries=3, max_deliveries=3) is Step.DEAD_LETTER
    # The second consecutive failure opens the breaker: parked, even on the last delivery.
    assert settle(error, cb, deliveries=3, max_deliveries=3) is Step.PARK
    assert cb.current() == "open"


def test_final_errors_and_successes_do_not_count_towards_the_breaker() -> None:
    cb = breaker(2)
    settle(DependencyUnavailable("down"), cb, deliveries=1, max_deliveries=5)
    settle(InvalidParams("bad"), cb, deliveries=1, max_deliveries=5)
    settle(None, cb, deliveries=1, max_deliveries=5)  # a success resets the count
    settle(DependencyUnavailable("down"), cb, deliveries=1, max_deliveries=5)
    assert cb.current() == "closed"


def test_exhausted_names_the_last_error_and_the_count() -> None:
    dead = exhausted("echo", HandlerTimeout("slow"), deliveries=3, max_deliveries=3)
    assert isinstance(dead, DeadLettered)
    assert "'echo' failed 3 times (max_deliveries=3)" in dead.message
    assert dead.details["last_error"]["type"] == "timeout"


def rules(**kw: object) -> ReplyRules:
    return ReplyRules(KernelConfig(**kw))  # type: ignore[arg-type]


def test_reply_rules() -> None:
    r = rules(reply_to_pattern=r"replies:[a-z]+", reply_to_max_length=20)
    r.check(None)
    r.check("replies:abc")
    for bad in ("corec_commands", DLS, "replies:ABC", "replies:" + "a" * 30):
        with pytest.raises(InvalidCommand):
            r.check(bad)


def test_parse_entry_answers_where_a_sound_envelope_asks() -> None:
    r = rules()
    command, reply_to, error = parse_entry(
        {b"payload": orjson.dumps({"action": "echo", "params": {}, "reply_to": "mine"})}, r, None
    )
    assert error is None and reply_to == "mine" and command is not None
    assert command["action"] == "echo"
    # Flat form with params that are not JSON: refused, but answered on its reply stream.
    command, reply_to, error = parse_entry(
        {b"action": b"echo", b"params": b"{no", b"reply_to": b"mine"}, r, None
    )
    assert isinstance(error, InvalidParams) and reply_to == "mine"
    assert command is not None and command["action"] == "echo"
    # A reply stream the rules refuse: the command parsed, the answer goes to stream_out.
    command, reply_to, error = parse_entry(
        {b"payload": orjson.dumps({"action": "echo", "reply_to": DLS})}, r, None
    )
    assert isinstance(error, InvalidCommand) and reply_to is None
    assert command is not None and command["action"] == "echo"
    # Not a command at all.
    command, reply_to, error = parse_entry({b"junk": b"1"}, r, None)
    assert isinstance(error, InvalidCommand) and command is None and reply_to is None


def finished(entry_id: str, *, dead: bool = False, reply_to: str | None = None) -> Entry:
    entry = Entry(entry_id, {b"payload": b"{}"}, deliveries=2, reply_to=reply_to)
    error = HandlerError("no") if dead else None
    entry.envelope = result_envelope(entry_id, "echo", error=error, entry_id=entry_id)
    entry.payload = b"{...}"
    entry.dead = dead
    entry.ack = True
    return entry


def unpacked(command: tuple[Any, ...] | bytes) -> tuple[Any, ...]:
    """A queued command as its arguments: a packed one is read back (as text)."""
    if not isinstance(command, bytes):
        return command
    reader = hiredis.Reader()
    reader.feed(command)
    return tuple(arg.decode() for arg in reader.gets())


def test_commit_layout_one_transaction_per_batch() -> None:
    layout = CommitLayout.of(KernelConfig(stream_maxlen=1000), "c1")
    a, b = finished("1-0"), finished("2-0", dead=True, reply_to="mine")
    commands, owners, outside = layout.transaction([a, b], "2026-01-01T00:00:00")
    assert outside == []  # not a cluster: one transaction holds everything
    names = [unpacked(c)[0] for c in commands]
    assert names == ["MULTI", "XADD", "XADD", "XADD", "XACK", "EXEC"]
    result = unpacked(commands[1])  # a result to stream_out comes packed
    assert result[:6] == ("XADD", "corec_responses", "MAXLEN", "~", "1000", "*")
    assert result[6:] == ("id", "1-0", "action", "echo", "status", "ok", "payload", "{...}")
    assert commands[2][1] == DLS  # b's dead letter before its result
    assert commands[3][1] == "mine"
    assert commands[4] == ("XACK", "corec_commands", "corec", "1-0", "2-0")
    assert owners == [a, None, b]
    dead_fields = dict(zip(commands[2][6::2], commands[2][7::2], strict=True))
    assert set(DEAD_LETTER_FIELDS) <= set(dead_fields)
    assert dead_fields[b"payload"] == b"{}" and dead_fields[b"deliveries"] == "2"
    assert orjson.loads(dead_fields[b"error"])["type"] == "handler_error"


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@given(
    stream=_text.filter(bool),
    maxlen=st.one_of(st.none(), st.integers(1, 2**40)),
    key=_text,
    action=_text,
    status=st.sampled_from(["ok", "error"]),
    payload=st.binary(max_size=2000),
    data=st.one_of(st.none(), st.binary(max_size=500)),
)
def test_a_packed_result_is_what_packing_its_arguments_gives(
    stream: str, maxlen: int | None, key: str, action: str, status: str, payload: bytes,
    data: bytes | None,
) -> None:  # fmt: skip
    trim = ("MAXLEN", "~", maxlen) if maxlen else ()
    args = ("XADD", stream, *trim, "*", "id", key, "action", action, "status", status,
            "payload", payload) + (("data", data) if data is not None else ())  # fmt: skip
    packed = pack_result(xadd_head(stream, trim), key, action, status, payload, data)
    assert packed == pack(args)


def test_result_envelope_is_the_documented_shape() -> None:
    from corec_plugin_kit.envelopes import Result

    ok = result_envelope("k", "echo", result={"x": 1}, processor="p", started=None)
    assert Result.model_validate(ok).status == "ok" and "replayed" not in ok
    failed = failed_envelope(ok, HandlerError("no"))
    assert failed["status"] == "error" and failed["result"] is None
    assert failed["error"]["type"] == "handler_error" and failed["processor"] == "p"
    assert result_envelope("k", "echo", replayed=True)["replayed"] is True


def test_commit_layout_on_a_cluster_keeps_one_slot_per_transaction() -> None:
    """A transaction may hold keys of one slot: XADDs to other slots are sent before it."""
    cfg = KernelConfig(
        stream_in="{k}:in", stream_out="{k}:out", dead_letter_stream="{k}:dead", group="g"
    )
    layout = CommitLayout.of(cfg, "c1", cluster=True)
    assert layout.slot == slot_of("{k}:in") == slot_of("{k}:out")
    a, b = finished("1-0"), finished("2-0", dead=True, reply_to="elsewhere")
    assert slot_of("elsewhere") != layout.slot
    commands, owners, outside = layout.transaction([a, b], "now")
    assert [unpacked(c)[:2] for c in commands[1:-1]] == [
        ("XADD", "{k}:out"),
        ("XADD", "{k}:dead"),
        ("XACK", "{k}:in"),
    ]
    assert owners == [a, None]
    assert [(c[1], owner) for c, owner in outside] == [("elsewhere", b)]
    # Not a cluster: the same batch is one transaction.
    _, _, outside = CommitLayout.of(cfg, "c1").transaction([a, b], "now")
    assert outside == []
    # stream_out in another slot: its results go first, on their own, too.
    apart = CommitLayout.of(cfg.model_copy(update={"stream_out": "out"}), "c1", cluster=True)
    assert slot_of("out") != apart.slot
    commands, owners, outside = apart.transaction([a], "now")
    assert [unpacked(c)[0] for c in commands] == ["MULTI", "XACK", "EXEC"] and owners == []
    assert [(c[1], owner) for c, owner in outside] == [("out", a)]
