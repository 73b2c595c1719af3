"""Command and result envelopes (DESIGN.md section 3) and their wire forms.

The pydantic models are the documented contract (``corec-kit describe`` and the docs render
their schema). The stream loop parses and builds the same shapes with orjson directly, because
that is its hot path; tests check that both paths agree.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidCommand

Status = Literal["ok", "error"]
ErrorType = Literal[
    "invalid_command", "unknown_action", "invalid_params", "handler_error", "timeout", "dead_letter"
]


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


def parse_fields(fields: dict[Any, Any], max_bytes: int | None = None) -> dict[str, Any]:
    """Turn a stream entry's fields into a command dict ``{action, params, id?, reply_to?, meta?}``.

    ``params`` stays a ``str``/``bytes`` when it arrived as JSON text (flat form), so that the
    action's model can validate the JSON directly. Raises :class:`InvalidCommand` with a reason.
    """
    payload = fields.get(b"payload", fields.get("payload"))
    if payload is not None:
        if max_bytes is not None and len(payload) > max_bytes:
            raise InvalidCommand(
                f"payload is {len(payload)} bytes, over max_payload_bytes={max_bytes}",
                details={"size": len(payload), "max_payload_bytes": max_bytes},
            )
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidCommand(f"payload is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidCommand("payload must be a JSON object with an `action` key")
        return check_shape(data)
    action = fields.get(b"action", fields.get("action"))
    if action is None:
        raise InvalidCommand(
            "entry has neither a `payload` field nor an `action` field",
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
    data = {"action": as_text(action, "action"), "params": params if params is not None else b"{}"}
    for key in ("id", "reply_to"):
        value = fields.get(key.encode(), fields.get(key))
        if value is not None:
            data[key] = as_text(value, key)
    return check_shape(data)


_ENVELOPE_KEYS = frozenset({"action", "params", "id", "reply_to", "meta"})


def check_shape(data: dict[str, Any]) -> dict[str, Any]:
    """Validate the envelope's own keys (not the params) without building a model."""
    action = data.get("action")
    if not isinstance(action, str) or not action or len(action) > 100:
        raise InvalidCommand("`action` must be a non-empty string of at most 100 characters")
    params = data.get("params")
    if params is None:
        data["params"] = {}
    elif not isinstance(params, (dict, str, bytes)):
        raise InvalidCommand("`params` must be a JSON object")
    for key in ("id", "reply_to"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
            raise InvalidCommand(f"`{key}` must be a non-empty string of at most 200 characters")
    meta = data.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidCommand("`meta` must be a JSON object")
    extra = data.keys() - _ENVELOPE_KEYS
    if extra:
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
    """JSON bytes for results (pydantic models, dataclasses, datetimes and UUIDs understood)."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


def result_args(result: dict[str, Any]) -> tuple[str | bytes, ...]:
    """The fields of a result entry as XADD arguments: ``id``, ``action``, ``status``,
    ``payload`` (the whole envelope as JSON). The stream worker's hot path uses this form."""
    return (
        "id", result["id"], "action", result["action"], "status", result["status"],
        "payload", dumps(result),
    )  # fmt: skip


def result_fields(result: dict[str, Any]) -> dict[str | bytes, str | bytes]:
    """The same fields as a mapping (for redis-py's ``xadd``)."""
    args = result_args(result)
    return dict(zip(args[::2], args[1::2], strict=True))
