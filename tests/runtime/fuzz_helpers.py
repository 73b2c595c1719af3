"""Helpers of the stream fuzzer (test_fuzz.py) and the fault test (test_faults.py).

* strategies for hostile stream entries, each labelled with its class;
* :func:`generate`: a seeded, deterministic batch of hostile entries drawn with hypothesis
  (many small examples collected into one list: the worker then runs once over all of them);
* :func:`assemble`: interleaves good ``echo`` commands (1 per 3 hostile entries);
* :func:`check`: the invariants (one answer per entry, good ones ok, nothing pending, no
  foreign key written, pre-existing keys unchanged) as a list of violations plus counts;
* :class:`Relay`: a TCP relay (its own thread and event loop) whose connections the fault test
  cuts;
* ``python tests/runtime/fuzz_helpers.py [--postgres] "<dict literal of XADD fields>"``: one
  entry (plus a good sentinel) through a fresh ``corec-kit run --burst``; prints the outcome.
  That is how the failing entries of a fuzz run are minimised by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the CLI below runs this file directly
    sys.path.insert(0, str(HERE))

from runtime_helpers import subprocess_env  # noqa: E402

DEFAULT_SEED = 20240611
#: Dead-letter fields the worker adds to the original ones.
DL_EXTRA = (b"error", b"deliveries", b"last_consumer", b"failed_at", b"entry_id")
#: Result error types that come with a dead letter.
DL_TYPES = {"invalid_command", "unknown_action", "invalid_params", "dead_letter"}
#: echo_proc actions safe to fuzz: none sleeps, none is transient, none logs a traceback.
ACTIONS = ["echo", "blocking_echo", "fail", "needs_dependency"]
ENVELOPE = {"action", "params", "id", "reply_to", "meta"}


def fuzz_entries() -> int:
    """Hostile entries per back-end: ``COREC_FUZZ_ENTRIES`` (default 2000, the CI minimum)."""
    return max(1, int(os.environ.get("COREC_FUZZ_ENTRIES", "2000")))


def fuzz_seed() -> int:
    return int(os.environ.get("COREC_FUZZ_SEED", str(DEFAULT_SEED)))


# --------------------------------------------------------------------------- names and keys


@dataclass
class Names:
    """The streams of one test and the keys under its prefix."""

    stream_in: str
    stream_out: str
    dead: str
    group: str
    redis_url: str

    @property
    def prefix(self) -> str:
        return self.stream_in.split(":", 1)[0]  # "{t<tag>}"

    @property
    def reply_prefix(self) -> str:
        return f"{self.prefix}:reply:"

    @property
    def hostile_keys(self) -> dict[str, str]:
        """Keys created before the run, of other types than stream: must stay unchanged."""
        return {
            f"{self.prefix}:k:{kind}": kind for kind in ("string", "hash", "list", "set", "zset")
        }

    @classmethod
    def from_streams(cls, streams: dict[str, Any]) -> Names:
        return cls(
            streams["stream_in"],
            streams["stream_out"],
            streams["dead_letter_stream"],
            streams["group"],
            streams["redis_url"],
        )


def precreate(r: Any, names: Names) -> dict[str, Any]:
    """Create the hostile keys; return their snapshot."""
    for key, kind in names.hostile_keys.items():
        if kind == "string":
            r.set(key, b"keep me \x00\xff")
        elif kind == "hash":
            r.hset(key, mapping={"id": "x", "payload": "{}"})
        elif kind == "list":
            r.rpush(key, "a", "b")
        elif kind == "set":
            r.sadd(key, "a", "b")
        else:
            r.zadd(key, {"a": 1.0, "b": 2.0})
    return snapshot(r, names)


def snapshot(r: Any, names: Names) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in names.hostile_keys:
        kind = r.type(key).decode()
        value: Any
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = sorted(r.hgetall(key).items())
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(r.smembers(key))
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        else:
            value = None
        out[key] = (kind, value)
    return out


# --------------------------------------------------------------------------- JSON text


@dataclass(frozen=True)
class Deep:
    """``depth`` nested arrays or objects around ``inner``."""

    depth: int
    kind: str  # "list" | "dict" | "mixed"
    inner: Any = None


@dataclass(frozen=True)
class Obj:
    """A JSON object as a list of pairs: duplicate keys allowed."""

    pairs: tuple[tuple[str, Any], ...]


def jtext(value: Any, ascii_only: bool = True) -> str:
    """JSON text of ``value``; big ints stay exact, NaN/Infinity are written as Python does,
    lone surrogates are ``\\ud800`` escapes (``ascii_only``) or raw (then invalid UTF-8)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, Deep):
        inner = jtext(value.inner, ascii_only)
        if value.kind == "list":
            return "[" * value.depth + inner + "]" * value.depth
        if value.kind == "dict":
            return '{"a":' * value.depth + inner + "}" * value.depth
        half = value.depth // 2
        return '{"a":[' * half + inner + "]}" * half
    if isinstance(value, Obj):
        return (
            "{"
            + ",".join(f"{jtext(k, ascii_only)}:{jtext(v, ascii_only)}" for k, v in value.pairs)
            + "}"
        )
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{jtext(k, ascii_only)}:{jtext(v, ascii_only)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(jtext(v, ascii_only) for v in value) + "]"
    raise TypeError(type(value))


def jbytes(value: Any, ascii_only: bool = True) -> bytes:
    return jtext(value, ascii_only).encode("utf-8", "surrogatepass")


def enc(text: str) -> bytes:
    """A string as stream bytes; lone surrogates become (invalid) UTF-8 bytes."""
    return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- strategies

SPECIAL = [
    "\x00", "\ud800", "\udfff", "\udbff", "\u2028", "\ufeff", "\U0010ffff", "\x7f", "\n",
    '"', "\\", "{", "}", "*", "?", "[", "$", "\u0301", "é", "✓", "😀", " ", "\r\n", "\t",
]  # fmt: skip
any_text = st.lists(st.one_of(st.characters(), st.sampled_from(SPECIAL)), max_size=12).map("".join)
long_text = st.sampled_from([99, 100, 101, 199, 200, 201, 1000, 10_000]).map(lambda n: "x" * n)
text = st.one_of(any_text, any_text, any_text, long_text, st.just(""))
ints = st.one_of(
    st.integers(-(2**53), 2**53),
    st.sampled_from(
        [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30, -(10**40)]
    ),
    st.integers(),
    st.integers(min_value=2**64, max_value=2**200),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, 5e-324, -0.0])
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, text)
json_value = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(text, kids, max_size=4),
        st.lists(st.tuples(text, kids), max_size=3).map(lambda p: Obj(tuple(p))),
    ),
    max_leaves=12,
)
depths = st.one_of(
    st.sampled_from([64, 127, 128, 254, 255, 256, 257, 300, 512, 1000, 1023, 1024, 1025, 1100]),
    st.integers(1, 1200),
)
deep = st.builds(Deep, depths, st.sampled_from(["list", "dict", "mixed"]), scalars)
echo_params = st.fixed_dictionaries(
    {"n": st.one_of(ints, ints, scalars)}, optional={"text": text, "extra": json_value}
)


def strategies(names: Names) -> st.SearchStrategy[tuple[str, dict[bytes, bytes]]]:
    """All hostile classes, as ``(class, fields)``."""
    legal_reply = st.one_of(
        st.sampled_from([f"{names.reply_prefix}{i}" for i in range(4)]),
        any_text.map(lambda t: names.reply_prefix + t),
    )
    hostile_reply = st.sampled_from(
        [
            *names.hostile_keys,
            names.stream_in,
            names.dead,
            names.stream_out,
            names.reply_prefix + "nul\x00name",
            names.reply_prefix + "x" * 10_000,
            names.reply_prefix + "x" * (200 - len(names.reply_prefix)),
            names.reply_prefix + "x" * (201 - len(names.reply_prefix)),
            names.reply_prefix + "\ud800",
            "",
        ]
    )
    reply = st.one_of(legal_reply, legal_reply, hostile_reply)
    action = st.one_of(st.sampled_from(ACTIONS), st.sampled_from(ACTIONS), text)
    ident = st.one_of(text, st.sampled_from([f"dup-{i}" for i in range(10)]))
    anything = st.one_of(json_value, deep)
    # reply_to names are always under the test's prefix (or one of the hostile names above):
    # a result must never land on a key outside it (the server is shared).
    not_a_string = st.one_of(
        st.none(), st.booleans(), ints, floats, deep,
        st.lists(json_value, max_size=3), st.dictionaries(text, json_value, max_size=3),
    )  # fmt: skip
    prefixed = st.binary(max_size=30).map(lambda b: enc(names.reply_prefix) + b)

    def payload(env: Obj, ascii_only: bool) -> dict[bytes, bytes]:
        return {b"payload": jbytes(env, ascii_only)}

    # An envelope: known keys mostly, with values of the expected type mostly.
    def envelope(
        actions: Any = action,
        params: Any = None,
        replies: Any = reply,
        meta: Any = None,
        need_params: bool = False,
    ) -> Any:
        params = params if params is not None else st.one_of(echo_params, json_value, deep)
        meta = (
            meta
            if meta is not None
            else st.one_of(json_value, st.dictionaries(text, json_value, max_size=3))
        )
        pair = st.one_of(
            st.tuples(st.just("action"), st.one_of(actions, actions, actions, anything)),
            st.tuples(st.just("params"), st.one_of(params, params, anything)),
            st.tuples(st.just("id"), st.one_of(ident, ident, anything)),
            st.tuples(st.just("reply_to"), st.one_of(replies, replies, not_a_string)),
            st.tuples(st.just("meta"), meta),
            st.tuples(text.map(lambda k: k + "_" if k in ENVELOPE else k), anything),
        )
        required = {"action": actions, **({"params": params} if need_params else {})}
        optional = {"id": ident, "reply_to": replies, **({} if need_params else {"params": params})}
        base = st.fixed_dictionaries(required, optional=optional)
        return st.builds(
            lambda b, more, shuffle: Obj(
                tuple(sorted(b.items(), key=lambda kv: shuffle.random()) + more)
            ),
            base,
            st.lists(pair, max_size=2),
            st.randoms(use_true_random=False),
        )

    def flat(
        actions: Any = action, params: Any = None, replies: Any = reply, need_params: bool = False
    ) -> Any:
        params_text = (
            params
            if params is not None
            else st.one_of(
                st.builds(jbytes, st.one_of(echo_params, json_value, deep), st.booleans()),
                st.binary(max_size=40),
            )
        )
        value = st.one_of(st.binary(max_size=30), text.map(enc))
        return st.builds(
            lambda a, rest, extra: {b"action": a, **rest, **extra},
            st.one_of(actions.map(enc), actions.map(enc), st.binary(max_size=20)),
            st.fixed_dictionaries(
                {b"params": params_text} if need_params else {},
                optional={
                    **({} if need_params else {b"params": params_text}),
                    b"id": st.one_of(ident.map(enc), value),
                    b"reply_to": st.one_of(replies.map(enc), prefixed),
                    b"meta": value,
                },
            ),
            st.dictionaries(
                st.one_of(
                    st.sampled_from([b"error", b"deliveries", b"x"]),
                    st.binary(min_size=1, max_size=8),
                ),
                value,
                max_size=2,
            ),
        )

    field_name = st.one_of(
        st.sampled_from([b"payload", b"action", b"params", b"id", b"reply_to", b"meta", b"error"]),
        st.binary(min_size=1, max_size=10),
    )
    classes: dict[str, Any] = {
        "raw_fields": st.dictionaries(
            field_name, st.binary(max_size=60), min_size=1, max_size=5
        ).map(
            lambda f: (
                {**f, b"reply_to": enc(names.reply_prefix) + f[b"reply_to"]}
                if b"reply_to" in f
                else f
            )
        ),
        "payload_bytes": st.one_of(
            st.binary(max_size=80),
            st.builds(lambda v, cut: jbytes(v)[:cut], json_value, st.integers(0, 40)),
            st.builds(jbytes, st.one_of(scalars, st.lists(scalars, max_size=3))),
            st.builds(
                lambda v: b"\xef\xbb\xbf" + jbytes(v), st.dictionaries(text, scalars, max_size=2)
            ),
            st.builds(
                lambda v, tail: jbytes(v) + tail,
                st.dictionaries(text, scalars, max_size=2),
                st.binary(min_size=1, max_size=5),
            ),
        ).map(lambda b: {b"payload": b}),
        "payload_envelope": st.builds(payload, envelope(), st.booleans()),
        "payload_echo": st.builds(
            payload,
            envelope(actions=st.sampled_from(ACTIONS), params=echo_params, need_params=True),
            st.booleans(),
        ),
        "flat_fields": flat(),
        "flat_echo": flat(
            actions=st.sampled_from(ACTIONS),
            params=st.builds(jbytes, echo_params, st.booleans()),
            need_params=True,
        ),
        "deep_params": st.one_of(
            st.builds(
                payload,
                envelope(actions=st.just("echo"), params=deep, need_params=True),
                st.just(True),
            ),
            flat(actions=st.just("echo"), params=st.builds(jbytes, deep), need_params=True),
        ),
        "bigint_params": st.one_of(
            st.builds(
                payload,
                envelope(
                    actions=st.sampled_from(ACTIONS),
                    params=st.fixed_dictionaries({"n": ints}),
                    need_params=True,
                ),
                st.just(True),
            ),
            flat(
                actions=st.sampled_from(ACTIONS),
                params=st.builds(
                    jbytes, st.fixed_dictionaries({"n": ints}, optional={"text": text})
                ),
                need_params=True,
            ),
        ),
        "nul_in_id_action": st.one_of(
            st.builds(
                lambda a, i, where, n: (
                    {
                        b"action": enc(a + "\x00" if where == 0 else a),
                        b"params": b'{"n": %d}' % n,
                        b"id": enc(i + "\x00" + i if where else i),
                    }
                ),
                st.sampled_from(ACTIONS),
                any_text,
                st.integers(0, 2),
                st.integers(0, 9),
            ),
            st.builds(
                lambda a, i, where: payload(
                    Obj(
                        (
                            ("action", a + "\x00" if where == 0 else a),
                            ("params", {"n": 1}),
                            ("id", "\x00" + i if where else i),
                        )
                    ),
                    True,
                ),
                st.sampled_from(ACTIONS),
                any_text,
                st.integers(0, 2),
            ),
        ),
        "nul_in_params": st.builds(
            lambda a, t, form: (
                payload(Obj((("action", a), ("params", {"n": 1, "text": t + "\x00"}))), True)
                if form
                else {b"action": enc(a), b"params": jbytes({"n": 1, "text": "\x00" + t})}
            ),
            st.sampled_from(ACTIONS),
            any_text,
            st.booleans(),
        ),
        "reply_hostile": st.builds(
            lambda r, form, n: (
                payload(Obj((("action", "echo"), ("params", {"n": n}), ("reply_to", r))), True)
                if form
                else {b"action": b"echo", b"params": b'{"n": %d}' % n, b"reply_to": enc(r)}
            ),
            hostile_reply,
            st.booleans(),
            st.integers(0, 99),
        ),
        "reply_legal": st.builds(
            lambda r, form, p: (
                payload(Obj((("action", "echo"), ("params", p), ("reply_to", r))), True)
                if form
                else {b"action": b"echo", b"params": jbytes(p), b"reply_to": enc(r)}
            ),
            legal_reply,
            st.booleans(),
            echo_params,
        ),
        "dup_id": st.builds(
            lambda i, form, p: (
                payload(Obj((("action", "echo"), ("params", p), ("id", i))), True)
                if form
                else {b"action": b"echo", b"params": jbytes(p), b"id": enc(i)}
            ),
            st.sampled_from([f"dup-{i}" for i in range(5)]),
            st.booleans(),
            st.one_of(st.fixed_dictionaries({"n": st.integers(0, 3)}), echo_params),
        ),
        "meta_any": st.builds(
            lambda m: payload(Obj((("action", "echo"), ("params", {"n": 1}), ("meta", m))), True),
            st.one_of(
                json_value, deep, st.dictionaries(text, st.one_of(json_value, deep), max_size=3)
            ),
        ),
    }
    names_ = sorted(classes)
    return st.sampled_from(names_).flatmap(lambda c: classes[c].map(lambda f: (c, f)))


def generate(names: Names, count: int, seed: int) -> list[tuple[str, dict[bytes, bytes]]]:
    """``count`` hostile entries, deterministic for a seed: one hypothesis example each (its
    generate phase only; nothing is shrunk or replayed), collected into one list."""
    out: list[tuple[str, dict[bytes, bytes]]] = []
    strategy = strategies(names)
    rounds = 0
    while len(out) < count:

        @settings(
            max_examples=max(10, count - len(out)),
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=[
                HealthCheck.too_slow, HealthCheck.data_too_large,
                HealthCheck.filter_too_much, HealthCheck.large_base_example,
            ],
        )  # fmt: skip
        @hyp_seed(seed + rounds)
        @given(entry=strategy)
        def collect(entry: tuple[str, dict[bytes, bytes]]) -> None:
            out.append(entry)

        collect()
        rounds += 1
    return out[:count]


# --------------------------------------------------------------------------- assembly


@dataclass
class Sent:
    cls: str
    fields: dict[bytes, bytes]
    entry_id: str = ""
    good: dict[str, Any] | None = None  # {"id", "result", "reply_to"} of a good command


SAFE = ["", "é✓", 'q"uote', "back\\slash", "😀", "a b", "<&>", "x" * 300, "naïve", "\u2028"]


def good_command(i: int, tag: str, names: Names, rnd: random.Random) -> Sent:
    cid = f"good-{tag}-{i}"
    params = {"n": i, "text": rnd.choice(SAFE)}
    reply = f"{names.reply_prefix}good" if rnd.random() < 0.25 else None
    form = rnd.random()
    if form < 0.8:  # payload, or (one in five) codex's `data`: the same JSON envelope
        body: dict[str, Any] = {"action": "echo", "params": params, "id": cid}
        if reply:
            body["reply_to"] = reply
        codex = form >= 0.6
        fields = {b"data" if codex else b"payload": orjson.dumps(body)}
        cls = "good_codex" if codex else "good_payload"
    else:
        fields = {b"action": b"echo", b"params": orjson.dumps(params), b"id": cid.encode()}
        if reply:
            fields[b"reply_to"] = reply.encode()
        cls = "good_flat"
    return Sent(cls, fields, good={"id": cid, "result": params, "reply_to": reply})


#: Entries in codex's ``data`` form that can never run (each refused, answered, dead-lettered).
CODEX_HOSTILE = [
    b"not json",
    b'"\\ud800"',
    b"[1, 2]",
    b'{"action": "echo", "params": {"n": 1e999}}',
    b'{"action": "echo", "params": {"n": 1}, "wire": "kit"}',
    b"\xff\xfe",
]


def assemble(
    hostile: list[tuple[str, dict[bytes, bytes]]], names: Names, seed: int, every: int = 3
) -> list[Sent]:
    """Hostile entries with one good command after every ``every``; a few later entries reuse
    the id of an earlier good command (class ``dup_good``: answered, possibly as a replay)."""
    rnd = random.Random(seed)
    tag = names.prefix.strip("{}")
    out: list[Sent] = []
    goods: list[Sent] = []
    for i, (cls, fields) in enumerate(hostile):
        out.append(Sent(cls, fields))
        if i % 100 == 50:  # codex's form refused: still answered the way codex reads
            bad = CODEX_HOSTILE[(i // 100) % len(CODEX_HOSTILE)]
            out.append(Sent("codex_hostile", {b"data": bad}))
        if i % every == every - 1:
            good = good_command(len(goods), tag, names, rnd)
            goods.append(good)
            out.append(good)
            if rnd.random() < 0.1 and len(goods) > 1:
                earlier = rnd.choice(goods[:-1])
                assert earlier.good is not None
                dup = {
                    b"action": b"echo",
                    b"params": b'{"n": -1}',
                    b"id": earlier.good["id"].encode(),
                }
                out.append(Sent("dup_good", dup))
    return out


def xadd_all(r: Any, stream: str, sent: list[Sent], chunk: int = 500) -> None:
    for start in range(0, len(sent), chunk):
        pipe = r.pipeline(transaction=False)
        part = sent[start : start + chunk]
        for s in part:
            pipe.xadd(stream, s.fields)
        for s, eid in zip(part, pipe.execute(), strict=True):
            s.entry_id = eid.decode()


# --------------------------------------------------------------------------- invariants


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    by_class: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    bad_entries: dict[str, list[Sent]] = field(default_factory=lambda: defaultdict(list))

    def fail(self, what: str, sent: Sent | None = None) -> None:
        self.violations.append(
            what if sent is None else f"[{sent.cls}] {what}: {short(sent.fields)}"
        )
        if sent is not None:
            self.bad_entries[sent.cls].append(sent)

    def table(self) -> str:
        lines = []
        totals: Counter[str] = Counter()
        for cls in sorted(self.by_class):
            c = self.by_class[cls]
            totals.update(c)
            detail = ", ".join(f"{k}={v}" for k, v in sorted(c.items()) if k != "entries")
            lines.append(f"  {cls:<18} {c['entries']:>5}  {detail}")
        lines.append(f"  {'TOTAL':<18} {totals['entries']:>5}")
        return "\n".join(lines)

    def summary(self, per_kind: int = 3) -> str:
        """The violations, at most ``per_kind`` of each (class, kind of violation)."""
        classes = Counter(v.split("]")[0].lstrip("[") for v in self.violations if v.startswith("["))
        head = f"{len(self.violations)} violations (by class: {dict(classes)})"
        shown: Counter[str] = Counter()
        lines = []
        for v in self.violations:
            kind = re.sub(r"[0-9]+-[0-9]+|'[^']*'|\d+", "#", v.split(":", 1)[0])
            shown[kind] += 1
            if shown[kind] <= per_kind:
                lines.append(v)
        more = f"... ({len(lines) - 60} more kinds)" if len(lines) > 60 else ""
        return "\n".join([head, *lines[:60], more])


def short(fields: dict[bytes, bytes], width: int = 160) -> str:
    text = repr(
        {
            k: (v if len(v) <= width else v[:width] + b"...(%d bytes)" % len(v))
            for k, v in fields.items()
        }
    )
    return text if len(text) <= 4 * width else text[: 4 * width] + "..."


def _codex_form(fields: dict[Any, Any]) -> bool:
    """The entry is in codex's wire form: docs/protocol.md's rule, restated for the check."""
    keys = {k.encode() if isinstance(k, str) else k for k in fields}
    return b"data" in keys and not keys & {b"payload", b"action"}


def _canon(fields: dict[bytes, bytes]) -> frozenset[tuple[bytes, bytes]]:
    return frozenset((k, v) for k, v in fields.items() if k not in DL_EXTRA)


def _envelope_field(fields: dict[Any, Any]) -> bytes | None:
    """The field holding the whole envelope as JSON: ``payload``, or codex's ``data``."""
    if b"payload" in fields:
        return b"payload"
    return b"data" if _codex_form(fields) else None


def _reply_name(s: Sent) -> bytes | None:
    """The raw reply_to of an entry as a key name, if it has a usable one."""
    raw: Any = None
    json_field = _envelope_field(s.fields)
    if json_field is not None:
        try:
            body = orjson.loads(s.fields[json_field])
        except orjson.JSONDecodeError:
            return None
        if isinstance(body, dict) and isinstance(body.get("reply_to"), str):
            raw = body["reply_to"]
    else:
        raw = s.fields.get(b"reply_to")
    if raw is None:
        return None
    return raw if isinstance(raw, bytes) else enc(raw)


def _plain_id(s: Sent) -> str | None:
    """The entry's ``id`` when it is an unremarkable one (printable ASCII, 1-100 characters)."""
    json_field = _envelope_field(s.fields)
    raw: Any = s.fields.get(b"id") if json_field is None else None
    if json_field is not None:
        try:
            body = orjson.loads(s.fields[json_field])
        except orjson.JSONDecodeError:
            return None
        raw = body.get("id") if isinstance(body, dict) else None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    if isinstance(raw, str) and 0 < len(raw) <= 100 and raw.isascii() and raw.isprintable():
        return raw
    return None


def check(r: Any, names: Names, sent: list[Sent], before: dict[str, Any] | None) -> Report:
    """Every invariant of the issue; the report lists each violation with its entry."""
    rep = Report()
    by_eid = {s.entry_id: s for s in sent}
    results: dict[str, list[tuple[bytes, dict[str, Any]]]] = defaultdict(list)
    dead: list[dict[bytes, bytes]] = []
    keys = set(r.scan_iter(match=f"{names.prefix}*", count=1000))
    fixed = {
        names.stream_in.encode(),
        names.dead.encode(),
        *(k.encode() for k in names.hostile_keys),
    }
    for key in sorted(keys):
        if key in fixed:
            continue
        name = key.decode(errors="replace")[:80]
        if key != names.stream_out.encode() and not key.startswith(names.reply_prefix.encode()):
            rep.fail(f"unexpected key {name!r} ({r.type(key).decode()})")
            continue
        if r.type(key) != b"stream":
            rep.fail(f"reply key {name!r} is a {r.type(key).decode()}, not a stream")
            continue
        for _rid, fields in r.xrange(key):
            try:
                body = orjson.loads(fields[b"payload"])
                assert set(fields) - {b"data"} == {b"id", b"action", b"status", b"payload"}
                eid = body["entry_id"]
            except Exception:
                rep.fail(f"non-result entry on reply stream {name!r}: {short(fields)}")
                continue
            if eid not in by_eid:
                rep.fail(f"result on {name!r} for an entry nobody sent ({eid}): {short(fields)}")
                continue
            # Codex's reply field: exactly for entries in codex's form (a `data` field and
            # neither `payload` nor `action`), whether or not they parsed.
            if (b"data" in fields) != _codex_form(by_eid[eid].fields):
                rep.fail(f"`data` reply field on the wrong entry {eid}: {short(fields)}")
                continue
            results[eid].append((key, body))
    for _rid, fields in r.xrange(names.stream_in):
        eid = _rid.decode()
        if eid not in by_eid:
            rep.fail(f"the worker wrote to the input stream: {short(fields)}")
    for _rid, fields in r.xrange(names.dead):
        dead.append(fields)
    if before is not None:
        after = snapshot(r, names)
        for key, was in before.items():
            if after[key] != was:
                rep.fail(f"pre-existing key {key!r} changed: {was!r} -> {after[key]!r}")

    for s in sent:
        name = _reply_name(s)
        if name and not name.startswith(names.prefix.encode()) and r.exists(name):
            rep.fail(f"a key outside the test's prefix was written: {name[:80]!r}", s)
    # Dead letters carry the entry's own fields (plus DL_EXTRA): matched to entries by them.
    # Newer workers name the entry (field ``entry_id``); older ones only copy its fields.
    dead_left: Counter[Any] = Counter(
        f[b"entry_id"].decode(errors="replace") if b"entry_id" in f else _canon(f) for f in dead
    )

    def take_dead(s: Sent) -> bool:
        for mark in (s.entry_id, _canon(s.fields)):
            if dead_left[mark] > 0:
                dead_left[mark] -= 1
                return True
        return False

    no_result: list[Sent] = []
    for s in sent:
        counts = rep.by_class[s.cls]
        counts["entries"] += 1
        got = results.get(s.entry_id, [])
        if not got:
            no_result.append(s)
            continue
        if len(got) > 1:
            counts["answered_twice"] += 1
            rep.fail(f"entry {s.entry_id} has {len(got)} results", s)
            continue
        key, body = got[0]
        status = body.get("status")
        etype = (body.get("error") or {}).get("type") if status == "error" else None
        counts[status if status == "ok" else f"error:{etype}"] += 1
        if body.get("replayed"):
            counts["replayed"] += 1
        if etype in DL_TYPES:
            counts["dead_lettered"] += 1
            if not take_dead(s):
                rep.fail(f"entry {s.entry_id} answered {etype} but has no dead letter", s)
        own = _plain_id(s)
        if own is not None and etype != "invalid_command" and body.get("id") != own:
            rep.fail(f"entry {s.entry_id} answered as id {body.get('id')!r}, not its id {own!r}", s)
        if key != names.stream_out.encode() and key != _reply_name(s):
            rep.fail(f"result of {s.entry_id} went to {key[:80]!r}, not its reply_to", s)
        if s.good is not None:
            want = s.good
            if (
                status != "ok"
                or body.get("result") != want["result"]
                or body.get("id") != want["id"]
            ):
                rep.fail(
                    f"good command {want['id']} answered {short({b'got': orjson.dumps(body)})}", s
                )
            elif want["reply_to"] and key != want["reply_to"].encode():
                rep.fail(
                    f"good command {want['id']} answered on {key!r}, not {want['reply_to']}", s
                )
            elif body.get("replayed"):
                rep.fail(f"good command {want['id']} (first of its id) answered as a replay", s)
    for s in no_result:
        counts = rep.by_class[s.cls]
        if take_dead(s):  # answered by a dead letter alone
            counts["dead_letter_only"] += 1
            if s.good is not None:
                rep.fail(f"good command {s.good['id']} was dead-lettered", s)
        else:
            counts["unanswered"] += 1
            rep.fail(f"entry {s.entry_id} has no result and no dead letter", s)
    owners: dict[Any, Sent] = {_canon(s.fields): s for s in sent}
    owners.update(by_eid)
    for mark, n in (+dead_left).items():
        if mark in owners:
            s = owners[mark]
            rep.fail(f"{n} dead letter(s) too many: a second answer for entry {s.entry_id}", s)
        else:
            shown = mark if isinstance(mark, str) else short(dict(mark))
            rep.fail(f"{n} dead letter(s) of no entry: {shown}")
    try:
        pending = int(r.xpending(names.stream_in, names.group)["pending"])
    except Exception as exc:
        rep.fail(f"XPENDING failed: {exc}")
    else:
        if pending:
            rep.fail(f"{pending} entries still pending in the group")
    return rep


# --------------------------------------------------------------------------- worker


TRACEBACK = re.compile(r"^Traceback \(most recent call last\):$", re.M)


def tracebacks(stderr: str) -> list[str]:
    """Each traceback in ``stderr``, with the logged line before it and its last line."""
    out = []
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if TRACEBACK.match(line):
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                j += 1
            tail = lines[j] if j < len(lines) else "?"
            out.append(f"{lines[i - 1] if i else ''} ... {tail}")
        elif line.startswith(("Internal error", "Error: ")):  # the CLI's one-line crash report
            out.append(line)
    return out


def run_worker(env: dict[str, str], *args: str, timeout: float = 300) -> tuple[int, str, float]:
    """``corec-kit run ARGS`` to its end: exit code, stderr, seconds."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corec_plugin_kit", "run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        return -999, err.decode(errors="replace") + "\n[killed: timeout]", time.monotonic() - start
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - start


def worker_env(names: Names, database_url: str, **kernel: Any) -> dict[str, str]:
    streams = {
        "redis_url": names.redis_url,
        "stream_in": names.stream_in,
        "stream_out": names.stream_out,
        "dead_letter_stream": names.dead,
        "group": names.group,
    }
    return subprocess_env(streams, records=True, database_url=database_url, **kernel)


def record_keys(database_url: str) -> list[tuple[str, str]]:
    """``(command_key, status)`` of every record (SQLite file or PostgreSQL schema)."""
    if database_url.startswith("sqlite:"):
        path = database_url[len("sqlite:///") :]
        with contextlib.closing(sqlite3.connect(path)) as db:
            return [(k, s) for k, s in db.execute("SELECT command_key, status FROM corec_commands")]

    async def query() -> list[tuple[str, str]]:
        import asyncpg

        base, _, qs = database_url.partition("?")
        schema = dict(p.split("=", 1) for p in qs.split("&") if p).get("search_path", "public")
        conn = await asyncpg.connect(base, server_settings={"search_path": schema})
        try:
            rows = await conn.fetch("SELECT command_key, status FROM corec_commands")
        finally:
            await conn.close()
        return [(row[0], row[1]) for row in rows]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, query()).result()


# --------------------------------------------------------------------------- relay


class Relay:
    """A TCP relay to ``127.0.0.1:target`` on its own thread; ``outage(s)`` drops every
    connection and refuses new ones for ``s`` seconds (non-blocking)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self.cuts = 0
        self.dropped = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._start())

    def _call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = {writer, up_writer}
        self.links |= pair

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.links -= pair

    async def _outage(self, seconds: float) -> None:
        assert self.server is not None
        self.cuts += 1
        self.server.close()
        for writer in list(self.links):
            self.dropped += 1
            writer.transport.abort()
        self.links.clear()
        await asyncio.sleep(seconds)
        await self._start()

    def outage(self, seconds: float) -> None:
        asyncio.run_coroutine_threadsafe(self._outage(seconds), self.loop)

    def close(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
            for writer in list(self.links):
                writer.transport.abort()
            await asyncio.sleep(0.05)

        with contextlib.suppress(Exception):
            self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


# --------------------------------------------------------------------------- one-entry repro


def repro(
    entries: Iterable[dict[bytes, bytes]], postgres: bool = False, **kernel: Any
) -> tuple[int, list[str], Report, str]:
    """Run ``entries`` (plus one good sentinel) through a fresh burst worker; clean up after."""
    import uuid

    import redis as syncredis

    tag = uuid.uuid4().hex[:12]
    names = Names(
        f"{{t{tag}}}:commands", f"{{t{tag}}}:results", f"{{t{tag}}}:dead", f"g{tag}",
        os.environ.get("COREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )  # fmt: skip
    r = syncredis.Redis.from_url(names.redis_url)
    tmp = Path(f"/tmp/corec-repro-{tag}")
    tmp.mkdir()
    schema = f"corec_test_{tag}"
    pg = os.environ.get("COREC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if postgres:
        _pg(pg, f'CREATE SCHEMA "{schema}"')
        url = f"{pg}?search_path={schema}"
    else:
        url = f"sqlite:///{tmp}/records.db"
    try:
        before = precreate(r, names)
        sent = [Sent("repro", dict(e)) for e in entries]
        sent.append(good_command(0, tag, names, random.Random(0)))
        xadd_all(r, names.stream_in, sent)
        env = worker_env(names, url, **kernel)
        env["COREC_KERNEL__STATE_DIR"] = str(tmp / ".corec")
        code, err, _secs = run_worker(env, "--burst", timeout=120)
        return code, tracebacks(err), check(r, names, sent, before), err
    finally:
        keys = list(r.scan_iter(match=f"{names.prefix}*"))
        if keys:
            r.delete(*keys)
        r.close()
        if postgres:
            _pg(pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _pg(url: str, sql: str) -> None:
    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def main(argv: list[str]) -> int:
    import ast

    postgres = "--postgres" in argv
    entries = [ast.literal_eval(a) for a in argv if not a.startswith("--")]
    entries = [
        {
            (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else enc(v))
            for k, v in e.items()
        }
        for e in entries
    ]
    code, tbs, rep, err = repro(entries, postgres=postgres)
    print(f"exit code: {code}")
    for tb in tbs:
        print(f"traceback: {tb}")
    print(rep.summary())
    if "-v" in argv:
        print(err)
    return 0 if code == 0 and not tbs and not rep.violations else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = [
    "Names",
    "Relay",
    "Report",
    "Sent",
    "assemble",
    "check",
    "fuzz_entries",
    "fuzz_seed",
    "generate",
    "precreate",
    "record_keys",
    "run_worker",
    "tracebacks",
    "worker_env",
    "xadd_all",
]
