"""The AsyncAPI 3.0 document of a built kernel: what ``corec-kit asyncapi`` prints.

It describes the wire protocol of docs/protocol.md for this install: the routed actions (one
command message each, with its params JSON Schema), the result envelope with every error type,
the dead-letter entry, the three streams as channels, the operations of producers, workers and
operators, and the Redis server. Other teams validate it or generate clients from it.

Design (docs/cli.md, ``corec-kit asyncapi``, says the same for readers):

* **Messages are the JSON objects, not the stream fields.** A command message's payload is the
  envelope ``{action, params, id, reply_to, meta}`` (``action`` a ``const``, ``params`` the
  action's schema): on the stream it is the JSON text of the entry's ``payload`` field (or
  codex's ``data``, or CoreC's flat fields). A result's payload is the envelope of the entry's
  ``payload`` field, its other fields (``id``, ``action``, ``status``, codex's ``data``) are the
  message's headers. A dead letter has no envelope: its payload is the entry's fields, all text.
* **Partitions and hash tags.** In a channel address ``{...}`` is a parameter, while in a Redis
  key it is the hash tag. So a stream name holding a hash tag (every name when
  ``kernel.partitions`` > 1) has that tag replaced by the parameter ``{hashTag}``, whose
  ``enum`` lists the actual tags, braces included, in partition order (a one-value ``enum`` and
  a ``default`` without partitions). ``x-corec-streams`` lists every stream name of the channel
  in partition order. A name with a brace outside its hash tag cannot be written as an address:
  its channel gets ``address: null`` and the names in ``x-corec-streams`` only.
* **``$defs``.** Pydantic writes a model's nested models under ``$defs`` and refers to them as
  ``#/$defs/Name``, which means nothing at the top of an AsyncAPI document. Every params schema
  and each of its definitions becomes one entry of ``components/schemas`` (named after the
  model; ``_2``, ``_3``... when another, different schema has the name), and the ``$ref``
  values are rewritten to point there. Schemas that are the same (the same name, content and
  definitions they reach) are written once: actions that share a params model share its entry.
  The Schema Object of AsyncAPI 3.0 is JSON Schema draft 07, so the draft 2020-12 keywords
  pydantic may write are turned into their draft 07 form: ``prefixItems`` (tuples) into an
  ``items`` list (and ``items`` beside it into ``additionalItems``), pydantic's object
  ``discriminator`` (AsyncAPI's is a property name) into ``x-discriminator``, and a ``$ref``
  with sibling keywords (which draft 07 ignores) into ``allOf: [{$ref}]`` beside them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from . import __version__
from .envelopes import DEAD_LETTER_FIELDS, result_envelope
from .errors import CorecError
from .partitions import hash_tag, stream_sets
from .redaction import is_credential_param, redact_url

if TYPE_CHECKING:
    from .config import KernelConfig
    from .kernel import Kernel
    from .routing import ActionSpec

ASYNCAPI_VERSION = "3.0.0"
CONTENT_TYPE = "application/json"
#: The parameter of an address whose stream names hold a hash tag (see the module doc).
HASH_TAG_PARAMETER = "hashTag"
#: Component names AsyncAPI accepts (``components`` keys must match ``^[\w\d.\-_]+$``).
_NOT_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_DEFS = "#/$defs/"
_SCHEMAS = "#/components/schemas/"

# Keywords whose value is a schema, a list of schemas or a map of schemas: the only places a
# ``$ref`` is followed (``default``, ``examples``, ``const``, ``enum`` hold data, not schemas).
_SCHEMA_KEYS = frozenset(
    {
        "items", "additionalItems", "additionalProperties", "not", "contains", "propertyNames",
        "if", "then", "else", "unevaluatedItems", "unevaluatedProperties",
    }
)  # fmt: skip
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "dependentSchemas", "dependencies", "definitions"}
)


# --------------------------------------------------------------------------- JSON Schema


def _walk(node: Any, ref: Callable[[str], str]) -> Any:
    """A copy of the schema ``node`` in draft 07 form, each ``$ref`` replaced by ``ref(it)``."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_KEYS:
            value = [_walk(v, ref) for v in value] if isinstance(value, list) else _walk(value, ref)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [_walk(v, ref) for v in value]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: _walk(v, ref) for name, v in value.items()}
        elif key == "$ref" and isinstance(value, str):
            value = ref(value)
        out[key] = value
    if "prefixItems" in out:  # a tuple: draft 07 writes it as a list of items
        rest = out.pop("items", None)
        out["items"] = out.pop("prefixItems")
        if rest is not None:
            out["additionalItems"] = rest
    if isinstance(out.get("discriminator"), dict):  # OpenAPI's form; AsyncAPI's is a string
        found = dict(out.pop("discriminator"))
        mapping = found.get("mapping")
        if isinstance(mapping, dict):  # its values are references too
            found["mapping"] = {k: ref(v) if isinstance(v, str) else v for k, v in mapping.items()}
        out["x-discriminator"] = found
    if "$ref" in out and len(out) > 1:  # draft 07 ignores a $ref's siblings
        target = {"$ref": out.pop("$ref")}
        out["allOf"] = [target, *out.get("allOf", [])]
    return out


def _refs(node: Any) -> set[str]:
    """The ``$ref`` values of a schema (followed only where schemas are)."""
    found: set[str] = set()

    def keep(value: str) -> str:
        found.add(value)
        return value

    _walk(node, keep)
    return found


def _def_name(ref: str) -> str | None:
    """``Name`` of a ``#/$defs/Name`` reference (JSON pointer escapes undone)."""
    if not ref.startswith(_DEFS):
        return None
    return ref[len(_DEFS) :].replace("~1", "/").replace("~0", "~")


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


class Schemas:
    """``components/schemas``: names made unique, the same schema written once."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._by_key: dict[str, str] = {}

    def name_for(self, wanted: str, key: str) -> tuple[str, bool]:
        """The name of the schema identified by ``key``: its earlier name, else ``wanted`` made
        valid and unique. True when the name is new (its schema must be written)."""
        if key in self._by_key:
            return self._by_key[key], False
        base = _NOT_NAME.sub("_", wanted).strip("_") or "Schema"
        name, count = base, 1
        while name in self.schemas:
            count += 1
            name = f"{base}_{count}"
        self.schemas[name] = None  # reserved; the caller writes it
        self._by_key[key] = name
        return name, True

    def add(self, wanted: str, schema: Any) -> str:
        """Add a schema of the kit's own (no ``$defs``); its reference."""
        name, new = self.name_for(wanted, _canonical({"name": wanted, "schema": schema}))
        if new:
            self.schemas[name] = schema
        return _SCHEMAS + name

    def add_model(self, schema: dict[str, Any]) -> str:
        """Add a pydantic model's JSON Schema (and each of its ``$defs``); its reference."""
        schema = dict(schema)
        defs: dict[str, Any] = schema.pop("$defs", None) or {}
        edges = {name: self._def_refs(body) for name, body in defs.items()}

        def closure(start: set[str]) -> dict[str, Any]:
            seen: set[str] = set()
            todo = list(start)
            while todo:
                name = todo.pop()
                if name in seen or name not in defs:
                    continue
                seen.add(name)
                todo.extend(edges[name])
            return {name: defs[name] for name in sorted(seen)}

        def key(name: str, body: Any, reached: set[str]) -> str:
            return _canonical({"name": name, "schema": body, "defs": closure(reached)})

        names: dict[str, str] = {}
        new: list[str] = []
        for name, body in defs.items():
            names[name], fresh = self.name_for(name, key(name, body, edges[name]))
            if fresh:
                new.append(name)

        def ref(value: str) -> str:
            name = _def_name(value)
            return _SCHEMAS + names[name] if name in names else value

        for name in new:
            self.schemas[names[name]] = _walk(defs[name], ref)
        only = _def_name(schema["$ref"]) if set(schema) == {"$ref"} else None
        if only in names:  # a recursive model: pydantic puts it in $defs and refers to it
            return _SCHEMAS + names[only]
        title = str(schema.get("title") or "Params")
        top, fresh = self.name_for(title, key(title, schema, self._def_refs(schema)))
        if fresh:
            self.schemas[top] = _walk(schema, ref)
        return _SCHEMAS + top

    @staticmethod
    def _def_refs(body: Any) -> set[str]:
        return {name for name in map(_def_name, _refs(body)) if name is not None}


# --------------------------------------------------------------------------- the document


def error_types() -> list[str]:
    """Every ``error.type`` a result may carry: the ``wire_type`` of each :class:`CorecError`
    class loaded now (the kit's, and those of the processors loaded), sorted."""
    types: set[str] = set()
    todo: list[type[CorecError]] = [CorecError]
    while todo:
        cls = todo.pop()
        types.add(cls.wire_type)
        todo.extend(cls.__subclasses__())
    return sorted(types)


def build_document(kernel: Kernel) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``kernel``'s routed actions, streams and server."""
    cfg = kernel.settings.kernel
    schemas = Schemas()
    kit = _kit_schemas(schemas, cfg)
    answers = _answer_messages(kit)
    commands: dict[str, Any] = {}
    for action, spec in sorted(kernel.routing.items()):
        key = _unique(_NOT_NAME.sub("_", action), {**answers, **commands})
        commands[key] = _command_message(schemas, kit, spec, kernel.dispatcher.timeout_for(spec))
    command_keys = list(commands)
    messages = {**commands, **answers}
    channels, parameters = _channels(cfg, command_keys)
    servers, security = _servers(cfg)
    components: dict[str, Any] = {
        "schemas": schemas.schemas,
        "messages": messages,
        "replies": {
            "result": {
                "address": {
                    "location": "$message.payload#/reply_to",
                    "description": "The command's `reply_to`; without one, the results stream "
                    "(kernel.stream_out) of the command's partition.",
                },
                "channel": {"$ref": "#/channels/replies"},
                "messages": [{"$ref": "#/channels/replies/messages/result"}],
            }
        },
    }
    if parameters:
        components["parameters"] = parameters
    if security:
        components["securitySchemes"] = security
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(kernel, len(stream_sets(cfg))),
        "servers": servers,
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": _operations(cfg, command_keys),
        "components": components,
    }


def _answer_messages(kit: dict[str, str]) -> dict[str, Any]:
    """The result and dead-letter messages."""
    return {
        "result": {
            "name": "result",
            "title": "Result",
            "summary": "The result envelope of one command.",
            "description": (
                "One entry per command on its reply stream: the envelope is the JSON text of "
                "the entry's `payload` field; its `id`, `action` and `status` are also fields "
                "of their own (the headers), and a command that came in codex's `data` form "
                "gets codex's `data` field too."
            ),
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": kit["ResultFields"]},
            "payload": {"$ref": kit["ResultEnvelope"]},
        },
        "deadLetter": {
            "name": "deadLetter",
            "title": "Dead letter",
            "summary": "A command that can never succeed, or that failed max_deliveries times.",
            "description": (
                "The command's own stream fields as they came (whichever form), plus "
                + ", ".join(f"`{field.decode()}`" for field in DEAD_LETTER_FIELDS)
                + ". `corec-kit manager dlq replay` puts the command back on the commands "
                "stream."
            ),
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": kit["DeadLetter"]},
        },
    }


def _channels(cfg: KernelConfig, command_keys: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``channels``, and the ``components/parameters`` they share (see the module doc)."""
    texts = {
        "commands": (
            "Commands",
            "The stream producers add commands to (XADD) and workers read in the consumer group "
            f"`{cfg.group}` (kernel.stream_in). A command's payload is the JSON text of its "
            "`payload` field (or of codex's `data` field), or CoreC's flat fields `action`, "
            "`params` (JSON text), `id`, `reply_to`.",
        ),
        "results": (
            "Results",
            "Where a command's result goes when it names no `reply_to` (kernel.stream_out); with "
            "`reply_to` it goes to that stream (the replies channel).",
        ),
        "deadLetters": (
            "Dead letters",
            "Commands refused before any handler ran, and commands delivered max_deliveries "
            "times without success (kernel.dead_letter_stream).",
        ),
    }
    keys = {"commands": command_keys, "results": ["result"], "deadLetters": ["deadLetter"]}
    fields = {"commands": "stream_in", "results": "stream_out", "deadLetters": "dead_letter_stream"}
    sets = stream_sets(cfg)
    channels: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    for channel, (title, description) in texts.items():
        names = [getattr(s, fields[channel]) for s in sets]
        address, tags = _address(names)
        channels[channel] = {"address": address, "title": title, "description": description}
        if tags is not None:
            parameters[channel] = _hash_tag_parameter(tags)
        channels[channel]["messages"] = {
            key: {"$ref": f"#/components/messages/{key}"} for key in keys[channel]
        }
        channels[channel]["x-corec-streams"] = names
    channels["replies"] = {
        "address": None,
        "title": "Replies",
        "description": "The stream a command names in `reply_to`: its result goes there "
        "instead of the results stream.",
        "messages": {"result": {"$ref": "#/components/messages/result"}},
    }
    shared = len(parameters) == 3 and len({_canonical(p) for p in parameters.values()}) == 1
    for channel, parameter in parameters.items():
        ref = {"$ref": f"#/components/parameters/{HASH_TAG_PARAMETER}"}
        channels[channel]["parameters"] = {HASH_TAG_PARAMETER: ref if shared else parameter}
    return channels, {HASH_TAG_PARAMETER: parameters["commands"]} if shared else {}


def _operations(cfg: KernelConfig, command_keys: list[str]) -> dict[str, Any]:
    """What producers, workers and operators do on each channel."""

    def op(action: str, channel: str, role: str, summary: str, keys: list[str]) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "tags": [{"name": role}],
            "messages": [{"$ref": f"#/channels/{channel}/messages/{key}"} for key in keys],
        }

    reply = {"$ref": "#/components/replies/result"}
    read = (
        f"Read commands in the consumer group `{cfg.group}` (XREADGROUP) and route each to its "
        "processor."
    )
    return {
        "sendCommand": {
            **op("send", "commands", "producer", "Queue a command (XADD).", command_keys),
            "reply": reply,
        },
        "receiveCommand": {
            **op("receive", "commands", "worker", read, command_keys),
            "reply": reply,
        },
        "sendResult": op(
            "send", "results", "worker", "Answer a command that has no reply_to.", ["result"]
        ),
        "receiveResult": op(
            "receive", "results", "producer", "Read the results of commands.", ["result"]
        ),
        "sendDeadLetter": op(
            "send", "deadLetters", "worker", "Move a failed command aside.", ["deadLetter"]
        ),
        "receiveDeadLetter": op(
            "receive",
            "deadLetters",
            "operator",
            "List dead letters (`corec-kit manager dlq list`).",
            ["deadLetter"],
        ),
    }


def _unique(name: str, taken: dict[str, Any]) -> str:
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}_{count}"
    return candidate


def _info(kernel: Kernel, partitions: int) -> dict[str, Any]:
    loaded = [info for info in kernel.processors.infos.values() if info.status == "loaded"]
    names = ", ".join(
        f"{info.name} ({info.distribution} {info.version})" if info.distribution else info.name
        for info in loaded
    )
    description = (
        f"Commands for CoreC processors run by corec-plugin-kit {__version__}. A producer adds "
        "a command to the commands stream; a worker (`corec-kit run`) routes it by its "
        "`action` to the processor that claims it, validates its `params` and writes a result "
        "envelope to the command's `reply_to` stream, else to the results stream. Commands "
        "that can never succeed, or that failed max_deliveries times, are also copied to the "
        "dead-letter stream. Generated by `corec-kit asyncapi` from the installed processors "
        f"({names or 'none'}) and the configuration; the protocol is described in "
        "docs/protocol.md of corec-plugin-kit."
    )
    if partitions > 1:
        description += (
            f"\n\nkernel.partitions = {partitions}: there are {partitions} sets of the three "
            "streams. Their addresses hold the `hashTag` parameter, one value per partition "
            "in partition order (`x-corec-streams` lists every name); a command goes to "
            f"partition crc32(id) % {partitions} (the CRC-32 of its id's UTF-8 bytes), and "
            "its result to that partition's results stream. `corec-kit streams` prints them."
        )
    return {
        "title": "CoreC commands (corec-plugin-kit)",
        "version": __version__,
        "description": description,
        "x-corec-partitions": partitions,
        "x-corec-processors": [
            {"name": info.name, "distribution": info.distribution, "version": info.version}
            for info in loaded
        ],
    }


def _address(names: list[str]) -> tuple[str | None, list[str] | None]:
    """The channel address of streams named ``names`` (one per partition), and the values of
    its ``hashTag`` parameter (None: no parameter). See the module doc."""
    if len(names) == 1 and not {"{", "}"} & set(names[0]):
        return names[0], None
    parts = []
    for name in names:
        if hash_tag(name) is None:
            return None, None
        start = name.index("{")  # the tag Redis reads: the first "{" to the next "}"
        end = name.index("}", start + 1) + 1
        parts.append((name[:start], name[start:end], name[end:]))
    prefixes = {prefix for prefix, _, _ in parts}
    suffixes = {suffix for _, _, suffix in parts}
    if len(prefixes) != 1 or len(suffixes) != 1:
        return None, None
    prefix, suffix = prefixes.pop(), suffixes.pop()
    if {"{", "}"} & set(prefix + suffix):
        return None, None
    return f"{prefix}{{{HASH_TAG_PARAMETER}}}{suffix}", [tag for _, tag, _ in parts]


def _hash_tag_parameter(tags: list[str]) -> dict[str, Any]:
    if len(tags) == 1:
        return {
            "description": (
                f"The stream name's Redis Cluster hash tag, braces included: always `{tags[0]}`."
            ),
            "enum": tags,
            "default": tags[0],
        }
    return {
        "description": (
            "The partition's Redis Cluster hash tag, braces included: partition i uses the "
            f"i-th value; a command goes to partition crc32(id) % {len(tags)}."
        ),
        "enum": tags,
    }


def _command_message(
    schemas: Schemas, kit: dict[str, str], spec: ActionSpec, timeout_s: float
) -> dict[str, Any]:
    described = spec.describe()  # as `corec-kit describe` shows it
    params = schemas.add_model(described["params_schema"])
    envelope = {
        "title": f"{spec.action} command",
        "type": "object",
        "additionalProperties": False,
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "const": spec.action},
            "params": {"$ref": params},
            "id": {"$ref": kit["CommandId"]},
            "reply_to": {"$ref": kit["ReplyTo"]},
            "meta": {"$ref": kit["Meta"]},
        },
    }
    camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", spec.action))
    payload = schemas.add(f"{camel}Command", envelope)
    message: dict[str, Any] = {
        "name": spec.action,
        "title": spec.action,
        "summary": spec.description or f"The {spec.action} command.",
        "contentType": CONTENT_TYPE,
        "payload": {"$ref": payload},
        "tags": [{"name": spec.processor}],
        "x-corec-processor": spec.processor,
        "x-corec-timeout-s": timeout_s,
    }
    if spec.distribution:
        message["x-corec-distribution"] = spec.distribution
    return message


def _kit_schemas(schemas: Schemas, cfg: KernelConfig) -> dict[str, str]:
    """The envelope pieces every message shares; name -> reference."""
    kit = _command_schemas(schemas, cfg)
    kit.update(_result_schemas(schemas, kit["Error"]))
    kit["DeadLetter"] = _dead_letter_schema(schemas)
    return kit


def _command_schemas(schemas: Schemas, cfg: KernelConfig) -> dict[str, str]:
    """A command's id, reply stream and meta, and the error object."""
    refused = sorted({n for s in stream_sets(cfg) for n in (s.stream_in, s.dead_letter_stream)})
    reply_to: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": min(200, cfg.reply_to_max_length),
        "not": {"enum": refused},
        "description": "The stream the result goes to (default: the results stream); never "
        "the commands or the dead-letter stream.",
    }
    if cfg.reply_to_pattern:
        reply_to["description"] += (
            f" It must match the regular expression `{cfg.reply_to_pattern}` in full "
            "(kernel.reply_to_pattern)."
        )
    error_type = {
        "type": "string",
        "enum": error_types(),
        "description": "What went wrong (docs/protocol.md): invalid_command, unknown_action "
        "and invalid_params are dead-lettered at once; timeout is retried up to "
        "max_deliveries; dead_letter: delivered max_deliveries times, or ran but could not "
        "be recorded.",
    }
    kit = {
        "CommandId": schemas.add(
            "CommandId",
            {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "The command key (default: the stream entry id). Send one per "
                "logical command: a command whose key already has an ok record is answered "
                "from that record, not run again.",
            },
        ),
        "ReplyTo": schemas.add("ReplyTo", reply_to),
        "Meta": schemas.add(
            "Meta",
            {"type": "object", "description": "Handed to the handler as `ctx.meta`."},
        ),
        "ErrorType": schemas.add("ErrorType", error_type),
    }
    kit["Error"] = schemas.add(
        "Error",
        {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"$ref": kit["ErrorType"]},
                "message": {"type": "string"},
                "details": {
                    "description": "More about the failure (any JSON value), e.g. one "
                    "entry per invalid param."
                },
            },
        },
    )
    return kit


def _result_schemas(schemas: Schemas, error: str) -> dict[str, str]:
    """The result envelope, and the result entry's own fields."""
    kit = {}
    kit["ResultEnvelope"] = schemas.add(
        "ResultEnvelope",
        {
            "type": "object",
            # The keys the one builder of result envelopes writes (`replayed` only when true).
            "required": list(result_envelope("", "")),
            "properties": {
                "id": {"type": "string", "description": "The command key."},
                "action": {"type": "string"},
                "status": {"type": "string", "enum": ["ok", "error"]},
                "result": {"description": "What the handler returned; null on error."},
                "error": {"anyOf": [{"$ref": error}, {"type": "null"}]},
                "processor": {"type": ["string", "null"]},
                "attempt": {"type": "integer", "minimum": 1},
                "duration_ms": {"type": "number", "minimum": 0},
                "entry_id": {
                    "type": ["string", "null"],
                    "description": "The stream entry the answer is for.",
                },
                "replayed": {
                    "type": "boolean",
                    "const": True,
                    "description": "Present only on an answer from the ok record of an "
                    "earlier run of the same command key (the handler did not run again).",
                },
            },
        },
    )
    kit["ResultFields"] = schemas.add(
        "ResultFields",
        {
            "type": "object",
            "required": ["id", "action", "status"],
            "properties": {
                "id": {"type": "string"},
                "action": {"type": "string"},
                "status": {"type": "string", "enum": ["ok", "error"]},
                "data": {
                    "type": "string",
                    "contentMediaType": CONTENT_TYPE,
                    "description": "Only for a command that came in codex's `data` form: the "
                    "JSON of codex's response (docs/protocol.md).",
                },
            },
        },
    )
    return kit


def _dead_letter_schema(schemas: Schemas) -> str:
    """A dead-letter entry: the command's own fields, and what the worker adds."""
    dead_properties: dict[str, Any] = {
        "payload": {"type": "string", "description": "The command's own field (payload form)."},
        "data": {"type": "string", "description": "The command's own field (codex's form)."},
        "action": {"type": "string", "description": "The command's own field (flat form)."},
        "params": {"type": "string", "description": "The command's own field (flat form)."},
        "id": {"type": "string", "description": "The command's own field (flat form)."},
        "reply_to": {"type": "string", "description": "The command's own field (flat form)."},
    }
    added_fields = {
        "error": {
            "type": "string",
            "contentMediaType": CONTENT_TYPE,
            "description": "JSON of the error object (the Error schema).",
        },
        "deliveries": {"type": "string", "pattern": "^[0-9]+$"},
        "last_consumer": {"type": "string", "description": "The consumer that gave up."},
        "failed_at": {"type": "string", "format": "date-time"},
        "entry_id": {
            "type": "string",
            "pattern": "^[0-9]+-[0-9]+$",
            "description": "The command's entry on the commands stream.",
        },
    }
    # Keyed by the worker's own list: a field added there without a description fails here.
    added = {name: added_fields[name] for name in (f.decode() for f in DEAD_LETTER_FIELDS)}
    return schemas.add(
        "DeadLetter",
        {
            "type": "object",
            "required": list(added),
            "properties": {**dead_properties, **added},
            "additionalProperties": {"type": "string"},
        },
    )


def _servers(cfg: KernelConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``servers`` (the configured Redis, password redacted; else the embedded server) and
    the security schemes they use."""
    if cfg.redis_url is None:
        from .runtime.embedded import EmbeddedValkey

        socket = EmbeddedValkey(cfg.state_dir).socket
        return {
            "embedded": {
                "host": "localhost",
                "pathname": str(socket),
                "protocol": "redis",
                "title": "Embedded Valkey",
                "description": (
                    "kernel.redis_url is unset: every `corec-kit` command of this install "
                    f"uses the embedded Valkey server on the unix socket unix://{socket} "
                    "(under kernel.state_dir), which it starts when none answers. Only "
                    "processes on this host reach it: set kernel.redis_url for a shared server."
                ),
            }
        }, {}
    url = cfg.redis_url.get_secret_value()
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    credentials = bool(at and userinfo) or any(
        name == "username" or is_credential_param(name) for name, _ in parse_qsl(parts.query)
    )
    tls = parts.scheme.lower() == "rediss"
    server: dict[str, Any] = {
        "host": hostport or "localhost",
        "protocol": "redis",
        "title": "Redis",
        "description": f"kernel.redis_url: {redact_url(url)}"
        + (" (TLS)" if tls else "")
        + (" (a unix socket)" if parts.scheme.lower() == "unix" else ""),
    }
    if parts.path:
        server["pathname"] = parts.path
    security: dict[str, Any] = {}
    if credentials:
        security["redisAuth"] = {
            "type": "userPassword",
            "description": "Redis AUTH: the user name and password of kernel.redis_url.",
        }
        server["security"] = [{"$ref": "#/components/securitySchemes/redisAuth"}]
    return {"redis": server}, security
