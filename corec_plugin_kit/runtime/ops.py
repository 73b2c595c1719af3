"""Operations on the streams: send a command, stats, list and replay dead letters, list and
prune the group's consumers.

Used by ``corec-kit send`` and by the manager processor's ``stats``, ``dlq_list``,
``dlq_replay`` and ``consumers`` actions (so they work from ``exec``, from the stream and from
CoreC alike).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..envelopes import DEAD_LETTER_FIELDS
from ..envelopes import as_text as _s
from .connection import RedisHandle, kernel_redis

if TYPE_CHECKING:
    from ..kernel import Kernel


async def send_command(
    kernel: Kernel,
    action: str,
    params: dict[str, Any],
    *,
    command_id: str | None = None,
    reply_to: str | None = None,
    flat: bool = False,
    codex: bool = False,
    wait: float | None = None,
) -> dict[str, Any]:
    """XADD one command; with ``wait`` (seconds) also read its result from the reply stream.

    The form (docs/protocol.md): one ``payload`` field (default), CoreC's flat fields
    (``flat``), or codex's one ``data`` field (``codex``; with the ``id`` codex's own CLI
    leaves out, so the result can be found).
    """
    if flat and codex:
        raise ValueError("send_command: flat and codex are two different forms; pick one")
    cfg = kernel.settings.kernel
    key = command_id or uuid.uuid4().hex
    reply = reply_to or cfg.stream_out
    fields: dict[Any, Any]
    if flat:
        fields = {"action": action, "params": orjson.dumps(params), "id": key}
        if reply_to:
            fields["reply_to"] = reply_to
    else:
        body: dict[str, Any] = {"action": action, "params": params, "id": key}
        if reply_to:
            body["reply_to"] = reply_to
        fields = {"data" if codex else "payload": orjson.dumps(body)}
    from redis.exceptions import NoPermissionError

    from ..errors import RedisUnavailable

    handle = RedisHandle(cfg)
    try:
        redis = await handle.connect()
        entry_id = _s(await redis.xadd(cfg.stream_in, fields))
        outcome: dict[str, Any] = {"id": key, "entry_id": entry_id, "stream": cfg.stream_in}
        if wait is not None:
            outcome["result"] = await wait_for_result(redis, reply, key, entry_id, wait)
        return outcome
    except NoPermissionError as exc:
        raise RedisUnavailable(
            f"Redis refused this user: {exc}; a producer needs +xadd on stream_in and +xread "
            "on its own reply stream (pass --reply-to): see docs/operations.md, "
            "TLS and Redis users"
        ) from None
    finally:
        await handle.close()


async def wait_for_result(
    redis: Any, stream: str, key: str, after: str, timeout: float
) -> dict[str, Any] | None:
    """Read ``stream`` from ``after`` (results of a command are newer than its entry).

    Stream ids count per stream, so a result written in the same millisecond as its command
    may carry a smaller sequence number: start just before that millisecond.
    """
    deadline = time.monotonic() + timeout
    ms = int(after.split("-", 1)[0])
    last = f"{ms - 1}-18446744073709551615" if ms > 0 else "0-0"
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return None
        resp = await redis.xread({stream: last}, count=500, block=min(left_ms, 1000))
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                last = _s(entry_id)
                if _s(fields.get(b"id", b"")) == key:
                    result: dict[str, Any] = orjson.loads(fields[b"payload"])
                    return result


async def stream_stats(kernel: Kernel) -> dict[str, Any]:
    """Lag and pending of the group, stream lengths, breaker states, per-action counts."""
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    out: dict[str, Any] = {"stream_in": cfg.stream_in, "group": cfg.group}
    groups = []
    if await redis.exists(cfg.stream_in):
        groups = await redis.xinfo_groups(cfg.stream_in)
    mine = next((g for g in groups if _s(g.get("name")) == cfg.group), None)
    out["lag"] = mine.get("lag") if mine else None
    out["pending"] = mine.get("pending") if mine else 0
    out["consumers"] = mine.get("consumers") if mine else 0
    out["consumer_list"] = (await group_consumers(kernel))["consumers"] if mine else []
    out["lengths"] = {
        name: await redis.xlen(name)
        for name in (cfg.stream_in, cfg.stream_out, cfg.dead_letter_stream)
    }
    worker = kernel.runtime
    out["breakers"] = worker.breaker_states() if worker is not None else {}
    out["worker"] = worker.counts() if worker is not None else None
    if kernel.store is not None:
        out["actions"] = await kernel.store.counts()
    elif cfg.records:
        # Outside the worker (exec, CoreC adapter): read the records directly.
        from ..storage import open_store

        store = open_store(cfg)
        await store.open()
        try:
            out["actions"] = await store.counts()
        finally:
            await store.close()
    else:
        out["actions"] = None
    return out


async def group_consumers(
    kernel: Kernel, *, prune: bool = False, idle_ms: int | None = None
) -> dict[str, Any]:
    """The consumers of the group on ``stream_in``, each flagged ``dead`` when it is idle past
    ``idle_ms`` (default ``dead_consumer_idle_ms``) and owns nothing; with ``prune``, those are
    removed first (:func:`~corec_plugin_kit.runtime.consumers.prune_consumers`).

    The caller's own consumer is never removed: the worker's when it runs this kernel.
    """
    from .consumers import is_dead, list_consumers, prune_consumers

    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    bound = idle_ms if idle_ms is not None else cfg.dead_consumer_idle_ms
    keep = kernel.runtime.consumer if kernel.runtime is not None else cfg.consumer_name()
    removed: list[str] = []
    if prune:
        if bound is None:
            raise ValueError("dead_consumer_idle_ms is off (null): give idle_ms to prune")
        removed = await prune_consumers(redis, cfg.stream_in, cfg.group, bound, keep=keep)
    consumers = await list_consumers(redis, cfg.stream_in, cfg.group)
    for consumer in consumers:
        consumer["dead"] = bound is not None and is_dead(consumer, bound, keep)
    return {
        "stream": cfg.stream_in,
        "group": cfg.group,
        "idle_ms": bound,
        "removed": removed,
        "consumers": consumers,
    }


def _decode_dead(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    decoded = {_s(k): _s(v) for k, v in fields.items()}
    error: Any = decoded.get("error")
    with contextlib.suppress(orjson.JSONDecodeError):
        error = orjson.loads(error) if error else None
    action = decoded.get("action")
    if action is None and "payload" in decoded:
        try:
            action = orjson.loads(decoded["payload"]).get("action")
        except (orjson.JSONDecodeError, AttributeError):
            action = None
    return {
        "entry_id": _s(entry_id),
        "action": action,
        "error": error,
        "deliveries": int(decoded.get("deliveries", "0") or 0),
        "last_consumer": decoded.get("last_consumer"),
        "failed_at": decoded.get("failed_at"),
        "fields": {k: v for k, v in decoded.items() if k.encode() not in DEAD_LETTER_FIELDS},
    }


async def dlq_list(kernel: Kernel, limit: int = 100, start: str = "-") -> dict[str, Any]:
    """The oldest ``limit`` dead letters from ``start`` (exclusive cursor with ``(``)."""
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    rows = await redis.xrange(cfg.dead_letter_stream, min=start, max="+", count=limit)
    entries = [_decode_dead(entry_id, fields) for entry_id, fields in rows]
    total = await redis.xlen(cfg.dead_letter_stream)
    cursor = f"({entries[-1]['entry_id']}" if len(entries) == limit else None
    return {"stream": cfg.dead_letter_stream, "total": total, "entries": entries, "next": cursor}


REPLAY_PAGE = 200


async def dlq_bound(kernel: Kernel) -> dict[str, Any]:
    """What ``dlq_replay(all_entries=True)`` replays if started now: the last dead-letter id
    (``until``, None when the stream is empty) and how many entries there are up to it.

    Both are read in one MULTI, so ``total`` counts exactly the entries up to ``until``.
    """
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    until, total = await _dead_snapshot(redis, cfg.dead_letter_stream)
    return {"stream": cfg.dead_letter_stream, "until": until, "total": total}


async def _dead_snapshot(redis: Any, stream: str) -> tuple[str | None, int]:
    pipe = redis.pipeline(transaction=True)
    pipe.xrevrange(stream, max="+", min="-", count=1)
    pipe.xlen(stream)
    last, length = await pipe.execute()
    return (_s(last[0][0]) if last else None), int(length)


async def dlq_replay(
    kernel: Kernel,
    ids: list[str] | None = None,
    *,
    all_entries: bool = False,
    keep: bool = False,
    until: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Put dead letters back on ``stream_in`` (original fields), then delete them (unless keep).

    Each entry's XADD and XDEL go in one MULTI, so a replayed entry is never lost or doubled.

    ``all_entries`` replays the entries present when the call starts, each once: the scan is
    bounded by the stream's last entry id read first (or by ``until``, e.g. from
    :func:`dlq_bound`). Entries dead-lettered meanwhile (a replayed command failing again, at
    once) get newer ids and are left for the next replay, so the call ends whatever workers do.
    """
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    replayed: list[dict[str, str]] = []
    missing: list[str] = []
    bound: str | None = None
    if all_entries:
        bound = until
        if bound is None:
            bound, _total = await _dead_snapshot(redis, cfg.dead_letter_stream)
        cursor = "-"
        while bound is not None:
            rows = await redis.xrange(
                cfg.dead_letter_stream, min=cursor, max=bound, count=REPLAY_PAGE
            )
            if not rows:
                break
            await _replay_rows(redis, cfg, rows, keep, replayed, progress)
            last = _s(rows[-1][0])
            if last == bound or len(rows) < REPLAY_PAGE:
                break
            cursor = f"({last}"
    else:
        for entry_id in ids or []:
            rows = await redis.xrange(cfg.dead_letter_stream, min=entry_id, max=entry_id)
            if not rows:
                missing.append(entry_id)
                continue
            await _replay_rows(redis, cfg, rows, keep, replayed, progress)
    return {
        "replayed": replayed,
        "missing": missing,
        "stream_in": cfg.stream_in,
        "until": bound,
    }


async def _replay_rows(
    redis: Any,
    cfg: Any,
    rows: list[Any],
    keep: bool,
    replayed: list[dict[str, str]],
    progress: Callable[[int], None] | None,
) -> None:
    pipe = redis.pipeline(transaction=True)
    for entry_id, fields in rows:
        original = {k: v for k, v in fields.items() if k not in DEAD_LETTER_FIELDS}
        pipe.xadd(cfg.stream_in, original)
        if not keep:
            pipe.xdel(cfg.dead_letter_stream, entry_id)
    answers = await pipe.execute()
    step = 1 if keep else 2
    for index, (entry_id, _fields) in enumerate(rows):
        replayed.append({"dead_entry_id": _s(entry_id), "new_entry_id": _s(answers[index * step])})
    if progress is not None:
        progress(len(rows))
