"""Command and result envelopes (docs/protocol.md) and their wire forms.

The pydantic models (:class:`Command`, :class:`Result`) write the documented contract down
as code; nothing renders them (``corec-kit describe`` shows an action's params schema, and
docs/protocol.md is written by hand). The stream loop parses and builds the same shapes with
orjson directly, because that is its hot path; tests check that both paths agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .errors import CorecError, InvalidCommand, InvalidParams

Status = Literal["ok", "error"]
ErrorType = Literal[
    "invalid_command", "unknown_action", "invalid_params", "handler_error", "timeout",
    "dead_letter", "unauthorized", "rate_limited",
]  # fmt: skip


class Command(BaseModel):
    """A command as producers send it: the ``payload`` JSON, or the flat fields of CoreC."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, min_length=1, max_length=200)
    reply_to: str | None = Field(default=None, min_length=1, max_length=200)
    meta: dict[str, Any] | None = None


class ErrorInfo(BaseModel):
    """The ``error`` object of a failed result."""

    type: ErrorType
    message: str
    details: Any = None


class Result(BaseModel):
    """The result envelope written to ``reply_to`` or ``stream_out``."""

    id: str
    action: str
    status: Status
    result: Any = None
    error: ErrorInfo | None = None
    processor: str | None = None
    attempt: int = 1
    duration_ms: float = 0.0
    entry_id: str | None = None
    #: Present (``true``) only on a command answered from the ``ok`` record of an earlier run
    #: of the same command key: its handler did not run again.
    replayed: bool | None = None


# --------------------------------------------------------------------------- wire helpers


def as_text(value: Any, what: str = "") -> str:
    """A stream value as text.

    With ``what`` (the field's name), bytes that are not UTF-8 make the command invalid;
    without it they are decoded with replacement characters (ids, names, messages).
    """
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            if not what:
                return value.decode(errors="replace")
            raise InvalidCommand(f"`{what}` is not UTF-8 text") from None
    return str(value)


#: Deepest nesting of objects and arrays a command may have (the envelope itself counts as one
#: level). Deeper documents could not be written back as JSON (orjson stops at 255 levels,
#: with the result envelope around them) and are refused at parse time.
MAX_DEPTH = 100
#: Integers outside this range lose precision or cannot be encoded (orjson reads them as
#: floats, and writes nothing past 64 bits); they are refused at parse time.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

# The cheap scan of a JSON text, in C: translated, every digit and minus sign reads "0",
# every "[" and "{" reads "[", the rest " ". Nesting is bounded by the count of "["; only runs
# of 20 "0"s can hold an integer outside 64 bits (20 digits, or 19 after a minus sign; every
# 19-digit positive integer fits: nanosecond timestamps stay on the fast path). A run that
# only looks like one ("--" and 18 digits) merely takes the exact, slow path.
_SCAN = bytes(
    0x30 if chr(i) in "0123456789-" else 0x5B if chr(i) in "[{" else 0x20 for i in range(256)
)
_LONG_RUN = b"0" * 20


def parse_fields(fields: dict[Any, Any], max_bytes: int | None = None) -> dict[str, Any]:
    """Turn a stream entry's fields into a command dict ``{action, params, id?, reply_to?, meta?}``.

    Three forms (docs/protocol.md): ``payload`` (JSON of the envelope), CoreC's flat fields
    (``action``, ``params`` as JSON text, ...) and codex's ``data`` (JSON of the envelope, as
    codex's CLI sends it; read when the entry has neither ``payload`` nor ``action``). All give
    ``params`` as a dict; a command that came as ``data`` also carries the internal key
    ``"wire": "codex"`` (its reply gets codex's ``data`` field; producers cannot send that key).
    Raises :class:`InvalidCommand` with a reason, also for content that could not be written
    back as given (see :func:`check_content`); flat-form ``params`` text that is not a JSON
    object raises :class:`InvalidParams`.
    """
    payload = fields.get(b"payload")
    if payload is None:
        payload = fields.get("payload")
    if payload is not None:
        return _parse_json_field(payload, "payload", max_bytes)
    action = fields.get(b"action", fields.get("action"))
    if action is None:
        codex = fields.get(b"data", fields.get("data"))
        if codex is not None:
            try:
                command = _parse_json_field(codex, "data", max_bytes)
            except CorecError as exc:
                exc.command = {"wire": "codex"}  # refused, but answered the way codex reads
                raise
            command["wire"] = "codex"
            return command
        raise InvalidCommand(
            "entry has neither a `payload` field nor an `action` field (nor codex's `data`)",
            details={"fields": sorted(as_text(k) for k in fields)[:20]},
        )
    params = fields.get(b"params", fields.get("params"))
    if max_bytes is not None:
        size = sum(len(v) for v in fields.values() if isinstance(v, (bytes, str)))
        if size > max_bytes:
            raise InvalidCommand(
                f"entry is {size} bytes, over max_payload_bytes={max_bytes}",
                details={"size": size, "max_payload_bytes": max_bytes},
            )
    data: dict[str, Any] = {"action": as_text(action, "action")}
    for key in ("id", "reply_to"):
        value = fields.get(key.encode(), fields.get(key))
        if value is not None:
            data[key] = as_text(value, key)
    data = check_shape(data)
    if params is not None:
        try:
            data["params"] = _load(params, "params", InvalidParams, 1)
            if not isinstance(data["params"], dict):
                raise InvalidParams(
                    "`params` must be a JSON object",
                    details=[{"loc": "", "msg": "not a JSON object", "type": "dict_type"}],
                )
        except CorecError as exc:
            # The envelope itself is valid: its id and reply_to still address the answer.
            exc.command = {**data, "params": {}}
            raise
    return data


def _parse_json_field(raw: Any, what: str, max_bytes: int | None) -> dict[str, Any]:
    """The ``payload`` or ``data`` field: JSON text of the whole envelope."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidCommand(
            f"{what} is {len(raw)} bytes, over max_payload_bytes={max_bytes}",
            details={"size": len(raw), "max_payload_bytes": max_bytes},
        )
    data = _load(raw, what, InvalidCommand, 0)
    if not isinstance(data, dict):
        raise InvalidCommand(f"{what} must be a JSON object with an `action` key")
    return check_shape(data)


def _load(raw: str | bytes, what: str, error: type[CorecError], depth: int) -> Any:
    """Parse JSON text and refuse what would not survive being written back (one pass of C
    parsing; the Python walks below run only when a cheap scan of the text says they might
    find something)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"{what} is not JSON: {exc}"
        if error is InvalidParams:
            raise InvalidParams(
                message, details=[{"loc": "", "msg": str(exc), "type": "json_invalid"}]
            ) from None
        raise InvalidCommand(message) from None
    raw_b = raw.encode(errors="surrogatepass") if isinstance(raw, str) else raw
    scan = raw_b.translate(_SCAN)
    # find(), not `in`: on Python 3.11 `bytes in bytes` first tries the operand as an integer
    # and raises (and clears) a TypeError: 0.32 us against 0.20, 1.7 % of a command's
    # instructions for the two tests (benchmarks/bench_instructions.py).
    # Each level of nesting takes two bytes ("[]"): a shorter text cannot nest too deep.
    deep = len(raw_b) > 2 * (MAX_DEPTH - depth) and scan.count(b"[") + depth > MAX_DEPTH
    if deep or raw_b.find(b"\\u0000") >= 0:
        check_content(data, depth)
    if scan.find(_LONG_RUN) >= 0:
        _check_integers(raw_b, what)
    return data


def _check_integers(raw: bytes, what: str) -> None:
    """Integers past 64 bits: orjson would read them as floats. The standard library keeps
    them exact, so it tells which they are (slow, but only for text with such long digit runs)."""

    def parse_int(text: str) -> int:
        if len(text) > 21 or not INT_MIN <= int(text) <= INT_MAX:
            raise InvalidCommand(
                f"{what} holds the integer {text[:30]}{'...' if len(text) > 30 else ''}, "
                f"outside the 64-bit range [{INT_MIN}, {INT_MAX}]: send it as a string",
            )
        return 0

    try:
        json.loads(raw, parse_int=parse_int)
    except (ValueError, RecursionError):  # already parsed by orjson: cannot happen
        raise InvalidCommand(f"{what} is not JSON") from None


def check_content(value: Any, depth: int = 0) -> None:
    """Refuse JSON values no record store or stream could hold as given: nesting deeper than
    :data:`MAX_DEPTH`, NUL characters (PostgreSQL text cannot hold them), integers outside
    ``[INT_MIN, INT_MAX]``, floats that are not finite, lone surrogates, non-JSON types.

    Iterative (a hostile document cannot exhaust the Python stack). ``depth`` is the nesting
    level ``value`` sits at.
    """
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, (dict, list)):
            if level + 1 > MAX_DEPTH:
                raise InvalidCommand(
                    f"the command nests deeper than {MAX_DEPTH} levels of objects and arrays",
                    details={"max_depth": MAX_DEPTH},
                )
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise InvalidCommand("object keys must be strings")
                    _check_text(key)
                    stack.append((sub, level + 1))
            else:
                stack.extend((sub, level + 1) for sub in item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise InvalidCommand(
                    f"the integer {str(item)[:30]} is outside the 64-bit range: send it as a string"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidCommand(f"{item} is not a JSON number (not finite)")
        else:
            raise InvalidCommand(f"a {type(item).__name__} is not a JSON value")


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise InvalidCommand(
            "the command contains a NUL character (\\u0000), which records cannot hold: "
            "encode binary data (base64)"
        )
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidCommand("the command contains a lone surrogate (not valid Unicode)") from None


_ENVELOPE_KEYS = frozenset({"action", "params", "id", "reply_to", "meta"})


def check_shape(data: dict[str, Any]) -> dict[str, Any]:
    """Validate the envelope's own keys (not the params) without building a model."""
    action = data.get("action")
    if type(action) is not str or not action or len(action) > 100:
        raise InvalidCommand("`action` must be a non-empty string of at most 100 characters")
    params = data.get("params")
    if params is None:
        data["params"] = {}
    elif not isinstance(params, (dict, str, bytes)):
        raise InvalidCommand("`params` must be a JSON object")
    if "\x00" in action:
        raise InvalidCommand("`action` must not contain a NUL character (\\u0000)")
    if len(data) == 2:  # action and params: nothing else to check
        return data
    for key in ("id", "reply_to"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > 200:
            raise InvalidCommand(f"`{key}` must be a non-empty string of at most 200 characters")
        if "\x00" in value:
            raise InvalidCommand(f"`{key}` must not contain a NUL character (\\u0000)")
    meta = data.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidCommand("`meta` must be a JSON object")
    if not _ENVELOPE_KEYS.issuperset(data):
        extra = data.keys() - _ENVELOPE_KEYS
        raise InvalidCommand(f"unknown envelope keys: {', '.join(sorted(extra))}")
    return data


def _default(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> bytes:
    """JSON bytes for results (pydantic models, dataclasses, datetimes and UUIDs understood;
    dict keys that are not strings written as strings, ``{1: "a"}`` as ``{"1":"a"}``)."""
    try:
        return orjson.dumps(obj, default=_default)
    except TypeError:  # orjson.JSONEncodeError: a key that is not a string, or worse
        # Keys of other types need this option, which checks every key: a result envelope
        # took 390 ns with it, 220 without, so it is only the second try.
        return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


# --------------------------------------------------------------------------- result envelopes


def result_envelope(
    key: str,
    action: str,
    *,
    result: Any = None,
    error: CorecError | None = None,
    processor: str | None = None,
    attempt: int = 1,
    started: float | None = None,
    entry_id: str | None = None,
    replayed: bool = False,
) -> dict[str, Any]:
    """The result envelope (docs/protocol.md): the one place its keys are spelled.

    ``status`` follows ``error``; ``started`` is a ``time.perf_counter()`` reading (the
    duration is measured up to now; none given, 0). ``replayed`` appears only when true.
    """
    envelope = {
        "id": key,
        "action": action,
        "status": "ok" if error is None else "error",
        "result": result if error is None else None,
        "error": None if error is None else error.to_wire(),
        "processor": processor,
        "attempt": attempt,
        # Whole microseconds: round(ms, 3) goes through a decimal conversion, 1 % of a
        # command's instructions (benchmarks/bench_instructions.py).
        "duration_ms": 0.0 if started is None else round((perf_counter() - started) * 1e6) / 1000,
        "entry_id": entry_id,
    }
    if replayed:
        envelope["replayed"] = True
    return envelope


def failed_envelope(envelope: Mapping[str, Any], error: CorecError) -> dict[str, Any]:
    """``envelope`` turned into a failure with ``error`` (the rest kept): a result that
    cannot be encoded or recorded, a command moved to the dead-letter stream."""
    return {**envelope, "status": "error", "result": None, "error": error.to_wire()}


#: The fields the stream worker adds to a dead letter, beside the command's own fields.
DEAD_LETTER_FIELDS = (b"error", b"deliveries", b"last_consumer", b"failed_at", b"entry_id")


def dead_letter_args(
    fields: Mapping[Any, Any],
    error: Mapping[str, Any],
    *,
    deliveries: int,
    consumer: str,
    failed_at: str,
    entry_id: str,
) -> list[Any]:
    """A dead letter as XADD arguments: the command's fields as they came, plus
    :data:`DEAD_LETTER_FIELDS` (docs/protocol.md)."""
    out = dict(fields)
    out.update(
        zip(
            DEAD_LETTER_FIELDS,
            (dumps(error), str(deliveries), consumer, failed_at, entry_id),
            strict=True,
        )
    )
    return [item for pair in out.items() for item in pair]


# --------------------------------------------------------------------------- codex replies

#: Keys of codex's own responses copied from a result object when it has them
#: (``plugins/codex/processors/generator.py`` answers ``{"status", "type", "path"}``,
#: ``manager.py``'s ``revise`` ``{"status", "message", "path"}``), with the kit's names for them.
CODEX_RESULT_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("path", ("path", "project_dir")),
    ("type", ("type",)),
)
#: codex's ``type`` of a successful action's response, when the result has no ``type`` itself.
CODEX_TYPES = {"generate_plugin": "plugin", "generate_website": "website"}


def codex_response(envelope: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` field of a reply to a command that came in codex's ``data`` form.

    Codex's response keys (``status``, ``message``; ``details`` of a failure; ``path`` and
    ``type`` when the result has them, ``type`` also from :data:`CODEX_TYPES`), plus the kit's
    ``id``, ``action``, ``result`` and ``error``. ``message`` is the result's own ``message``
    text when it has one, else ``"ok"``; for a failure, the error's message.
    """
    result = envelope.get("result")
    error = envelope.get("error")
    out: dict[str, Any] = {
        "status": envelope["status"],
        "message": codex_message(envelope),
        "id": envelope["id"],
        "action": envelope["action"],
        "result": result,
        "error": error,
    }
    if isinstance(error, dict) and error.get("details") is not None:
        out["details"] = error["details"]
    if isinstance(result, dict):
        for key, names in CODEX_RESULT_KEYS:
            for name in names:
                if name in result:
                    out[key] = result[name]
                    break
    if envelope["status"] == "ok" and "type" not in out and envelope["action"] in CODEX_TYPES:
        out["type"] = CODEX_TYPES[envelope["action"]]
    return out


def codex_message(envelope: Mapping[str, Any]) -> str:
    """Codex's ``message`` for a result envelope: the result's own ``message`` text when it has
    one, else ``"ok"``; for a failure, the error's message."""
    if envelope["status"] == "ok":
        result = envelope.get("result")
        own = result.get("message") if isinstance(result, Mapping) else None
        return own if isinstance(own, str) else "ok"
    error = envelope.get("error")
    return str(error.get("message", "error")) if isinstance(error, Mapping) else "error"


def codex_data(envelope: dict[str, Any]) -> bytes:
    """:func:`codex_response` as JSON bytes (the reply's ``data`` field)."""
    return dumps(codex_response(envelope))
