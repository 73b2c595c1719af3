"""What the console's pages show, read from Redis and the record store through the kit's
public API (``corec_plugin_kit.api``): the same operations ``corec-kit manager`` runs."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any

import orjson

from corec_plugin_kit.api import redact_data

from .rates import Sampler

#: Dead letters scanned at most for one filtered page (the page says where it stopped).
SCAN_LIMIT = 5_000


def _api() -> Any:
    import corec_plugin_kit.api as api

    return api


async def overview(kernel: Any, sampler: Sampler, window_s: float) -> dict[str, Any]:
    """The overview: streams, dead letters, breakers, workers, and each action's figures."""
    api = _api()
    stats = await api.stream_stats(kernel, counts=False)
    dead_streams = {s.dead_letter_stream for s in api.stream_sets(kernel.settings.kernel)}
    dead = sum(n for name, n in stats["lengths"].items() if name in dead_streams)
    workers = sampler.samples[-1].workers if sampler.samples else {}
    shown: dict[str, Any] = redact_data({
        "stream_in": stats["stream_in"],
        "group": stats["group"],
        "lag": stats["lag"],
        "pending": stats["pending"],
        "consumers": stats["consumers"],
        "lengths": stats["lengths"],
        "partitions": stats.get("partitions"),
        "dead_letters": dead,
        "breakers": stats["breakers"],
        "workers": len(workers),
        "in_flight": sum(int(w.get("in_flight") or 0) for w in workers.values()),
        "processed": sum(int(w.get("processed") or 0) for w in workers.values()),
        "window_s": window_s,
        "actions": sampler.actions(window_s),
        "now": sampler.actions(10.0),
        "series": sampler.series(300.0),
    })  # fmt: skip
    return shown


async def workers(kernel: Any, sampler: Sampler) -> list[dict[str, Any]]:
    """The group's consumers joined with the workers' published figures.

    A consumer whose worker publishes is ``alive``; one that does not (its process ended or
    lost Redis) is ``gone``, and a dead one (idle past the bound, owning nothing) may be pruned.
    """
    api = _api()
    report = await api.group_consumers(kernel)
    # The figures the console read last (at most a second old); read now only before the first.
    if sampler.samples:
        figures = sampler.samples[-1].workers
    else:
        figures = {w["consumer"]: w for w in (await api.worker_figures(kernel))["workers"]}
    now = time.time()
    rows: dict[str, dict[str, Any]] = {}
    for consumer in report["consumers"]:
        row = rows.setdefault(
            consumer["name"],
            {"name": consumer["name"], "pending": 0, "idle_ms": consumer["idle_ms"], "dead": True},
        )
        row["pending"] += int(consumer["pending"])
        row["idle_ms"] = min(row["idle_ms"], consumer["idle_ms"])
        row["dead"] = row["dead"] and bool(consumer["dead"])
    for name in figures:  # publishing, but not in the group yet (nothing read so far)
        rows.setdefault(name, {"name": name, "pending": 0, "idle_ms": None, "dead": False})
    for name, row in rows.items():
        fig = figures.get(name)
        row["alive"] = fig is not None
        row["figures"] = fig
        row["last_seen_s"] = round(now - float(fig["at"]), 1) if fig else None
    ordered: list[dict[str, Any]] = redact_data(
        sorted(rows.values(), key=lambda r: (not r["alive"], r["name"]))
    )
    return ordered


def command_key(fields: dict[str, Any]) -> str | None:
    """The command id inside a dead letter's original fields (any of the three forms)."""
    if "id" in fields:
        return str(fields["id"])
    for name in ("payload", "data"):
        if name in fields:
            try:
                body = orjson.loads(fields[name])
            except orjson.JSONDecodeError:
                return None
            if isinstance(body, dict) and body.get("id") is not None:
                return str(body["id"])
    return None


def error_type(error: Any) -> str | None:
    """What failed: a worker's dead letter says ``dead_letter`` and keeps the last failure's
    own type in ``details.last_error``; that one is what an operator filters on."""
    if not isinstance(error, dict):
        return None
    details = error.get("details")
    last = details.get("last_error") if isinstance(details, dict) else None
    if isinstance(last, dict) and isinstance(last.get("type"), str):
        return str(last["type"])
    kind = error.get("type")
    return kind if isinstance(kind, str) else None


def _shown_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The original fields, with the JSON ones (``payload``, ``data``, ``params``) decoded."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        out[name] = value
        if name in ("payload", "data", "params") and isinstance(value, str):
            with contextlib.suppress(orjson.JSONDecodeError):
                out[name] = orjson.loads(value)
    return out


def _described(entry: dict[str, Any]) -> dict[str, Any]:
    entry["key"] = command_key(entry["fields"])
    entry["error_type"] = error_type(entry.get("error"))
    return entry


def _matches(entry: dict[str, Any], action: str, error_kind: str) -> bool:
    if action and entry.get("action") != action:
        return False
    return not error_kind or entry.get("error_type") == error_kind


def _cursor_after(ref: str) -> str:
    head, sep, tail = ref.partition("/")
    return f"{head}/({tail}" if sep else f"({ref}"


async def dead_letters(
    kernel: Any, *, action: str = "", error_kind: str = "", start: str = "-", limit: int = 50
) -> dict[str, Any]:
    """One page of dead letters matching the filters, oldest first, with a cursor to the next.

    Filtering happens here, over pages of the stream: at most :data:`SCAN_LIMIT` entries are
    read for one page, and ``next`` continues where the scan stopped.
    """
    api = _api()
    found: list[dict[str, Any]] = []
    scanned, cursor, total, stream = 0, start, 0, ""
    while True:
        page = await api.dlq_list(kernel, 200, cursor)
        total, stream = page["total"], page["stream"]
        for entry in page["entries"]:
            scanned += 1
            if _matches(_described(entry), action, error_kind):
                found.append(entry)
            if len(found) == limit or scanned >= SCAN_LIMIT:
                more = entry is not page["entries"][-1] or page["next"] is not None
                return _page(found, total, stream, _cursor_after(entry["ref"]) if more else None)
        if page["next"] is None:
            return _page(found, total, stream, None)
        cursor = page["next"]


def _page(
    entries: list[dict[str, Any]], total: int, stream: str, nxt: str | None
) -> dict[str, Any]:
    page: dict[str, Any] = redact_data(
        {"entries": entries, "total": total, "stream": stream, "next": nxt}
    )
    return page


async def dead_letter(kernel: Any, ref: str) -> dict[str, Any] | None:
    """One dead letter by ``ref`` (``None`` when it is gone)."""
    api = _api()
    page = await api.dlq_list(kernel, 1, ref)
    for entry in page["entries"]:
        if entry["ref"] == ref:
            _described(entry)["fields"] = _shown_fields(entry["fields"])
            shown: dict[str, Any] = redact_data(entry)
            return shown
    return None


async def history(
    store: Any,
    *,
    action: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    key: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Records, newest first, filtered; one record when ``key`` is given."""
    if key:
        record = await store.get(key)
        records = [record] if record is not None else []
    else:
        records = await store.query(
            action=action, status=status, since=since, until=until, limit=limit
        )
    return [redact_data(r.as_dict()) for r in records]
