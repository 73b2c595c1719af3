"""A form for an action, from the JSON Schema of its params (what ``describe`` shows).

Each top-level property becomes one field: a text box for strings, a number box for integers
and numbers, a yes/no choice for booleans, a list for enums, and a JSON box for everything else
(arrays, objects, unions, ``Any``). A field left empty is left out of the params, so the
action's own default applies; the worker validates the params as it does for any producer, and
a wrong value comes back as the command's ``invalid_params`` error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Field:
    """One input of an action's form."""

    name: str
    kind: str  # "text" | "integer" | "number" | "boolean" | "select" | "json"
    required: bool = False
    description: str = ""
    default: str = ""  # shown as the placeholder (the default applies when left empty)
    choices: list[str] = field(default_factory=list)
    title: str = ""


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/Name``), once."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.rsplit("/", 1)[1])
        if isinstance(target, dict):
            return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _without_null(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` (``anyOf`` of X and null) is X for the form: empty means leave it out."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        real = [
            _resolve(o, defs) for o in options if isinstance(o, dict) and o.get("type") != "null"
        ]
        if len(real) == 1:
            return {**real[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _kind(prop: dict[str, Any]) -> tuple[str, list[str]]:
    if isinstance(prop.get("enum"), list) and all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in prop["enum"]
    ):
        return "select", [str(v) for v in prop["enum"]]
    if "const" in prop and isinstance(prop["const"], str):
        return "select", [prop["const"]]
    kind = prop.get("type")
    if kind in ("string", "integer", "number", "boolean"):
        return ("text" if kind == "string" else str(kind)), []
    return "json", []


def _shown_default(prop: dict[str, Any], kind: str) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    if kind == "json" or not isinstance(value, (str, int, float, bool)):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def form_fields(schema: dict[str, Any]) -> list[Field]:
    """The fields of the params schema ``schema``, in its order."""
    defs = schema.get("$defs") or {}
    required = set(schema.get("required") or ())
    fields: list[Field] = []
    for name, raw in (schema.get("properties") or {}).items():
        prop = _without_null(_resolve(raw if isinstance(raw, dict) else {}, defs), defs)
        kind, choices = _kind(prop)
        fields.append(
            Field(
                name=str(name),
                kind=kind,
                required=name in required,
                description=str(prop.get("description") or ""),
                default=_shown_default(prop, kind),
                choices=choices,
                title=str(prop.get("title") or name),
            )
        )
    return fields
