"""Operations on the streams: send a command, stats, list, replay and delete dead letters,
list and prune the group's consumers.

Used by ``corec-kit send`` and by the manager processor's ``stats``, ``dlq_list``,
``dlq_replay``, ``dlq_delete`` and ``consumers`` actions (so they work from ``exec``, from the
stream and from CoreC alike).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..envelopes import DEAD_LETTER_FIELDS
from ..envelopes import as_text as _s
from ..errors import InvalidParams, RedisUnavailable
from ..partitions import StreamSet, stream_sets, streams_for
from . import figures
from .connection import RedisHandle, kernel_redis
from .published import breakers_key, merged, read

if TYPE_CHECKING:
    from ..config import KernelConfig
    from ..kernel import Kernel
    from ..tracing import SendSpan
    from .connection import RedisClient


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
    on_sent: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[float], None] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """XADD one command; with ``wait`` (seconds) also read its result from the reply stream.

    The form (docs/protocol.md): one ``payload`` field (default), CoreC's flat fields
    (``flat``), or codex's one ``data`` field (``codex``; with the ``id`` codex's own CLI
    leaves out, so the result can be found).

    With ``wait``, the outcome also says who reads the command's stream (``readers``:
    :func:`group_readers`), and ``on_sent(outcome)`` is called before the wait begins;
    ``progress(seconds waited)`` about once a second while it lasts.

    ``meta`` is the envelope's ``meta`` (not in the flat form, which has none). In a process
    that has OpenTelemetry loaded, the XADD gets a "send" span and ``meta`` its trace context
    (``traceparent``, ``tracestate``), unless ``meta`` has a ``traceparent`` already
    (docs/operations.md, "Tracing"); otherwise nothing is added and nothing imported.
    """
    if flat and codex:
        raise ValueError("send_command: flat and codex are two different forms; pick one")
    if flat and meta:
        raise ValueError("send_command: the flat form has no meta; send the payload form")
    cfg = kernel.settings.kernel
    key = command_id or uuid.uuid4().hex
    streams = streams_for(cfg, key)
    reply = reply_to or streams.stream_out
    sending = None if flat else _send_span(cfg, action, key, meta)
    if sending is not None:
        meta = sending.meta
    fields = command_fields(action, params, key, reply_to, meta, flat=flat, codex=codex)
    from redis.exceptions import NoPermissionError

    handle = RedisHandle(cfg)
    try:
        redis = await handle.connect()
        outcome = await _xadd(redis, streams.stream_in, fields, key, sending)
        if wait is not None:
            await _wait(redis, cfg, outcome, reply, wait, on_sent, progress)
        return outcome
    except NoPermissionError as exc:
        raise _refused(exc) from None
    finally:
        if sending is not None:
            sending.end(error=sys.exc_info()[1])  # not sent (a no-op once it was)
        await handle.close()


def _send_span(
    cfg: KernelConfig, action: str, key: str, meta: Mapping[str, Any] | None
) -> SendSpan | None:
    """The "send" span of a command, when this process traces (OpenTelemetry loaded): its
    ``meta`` is the command's, with the trace context. ``None`` otherwise (nothing imported)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from ..tracing import SendSpan

    return SendSpan(cfg, action, key, meta)


async def _xadd(
    redis: RedisClient, stream: str, fields: dict[Any, Any], key: str, sending: SendSpan | None
) -> dict[str, Any]:
    """XADD the command and end its span (if any) with the entry id: the outcome ``{"id",
    "entry_id", "stream"}``."""
    entry_id = _s(await redis.xadd(stream, fields))
    if sending is not None:
        sending.end(entry_id)
    return {"id": key, "entry_id": entry_id, "stream": stream}


def _refused(exc: Exception) -> RedisUnavailable:
    """Redis refused this user a command of ``send``: RedisUnavailable, naming what a producer
    needs."""
    return RedisUnavailable(
        f"Redis refused this user: {exc}; a producer needs +xadd on stream_in and +xread "
        "on its own reply stream (pass --reply-to): see docs/operations.md, "
        "TLS and Redis users"
    )


def command_fields(
    action: str,
    params: dict[str, Any],
    key: str,
    reply_to: str | None,
    meta: Mapping[str, Any] | None,
    *,
    flat: bool,
    codex: bool,
) -> dict[Any, Any]:
    """The stream entry of a command in one of the three forms (docs/protocol.md)."""
    if flat:
        fields: dict[Any, Any] = {"action": action, "params": orjson.dumps(params), "id": key}
        if reply_to:
            fields["reply_to"] = reply_to
        return fields
    body: dict[str, Any] = {"action": action, "params": params, "id": key}
    if reply_to:
        body["reply_to"] = reply_to
    if meta:
        body["meta"] = dict(meta)
    return {"data" if codex else "payload": orjson.dumps(body)}


async def _wait(
    redis: RedisClient,
    cfg: Any,
    outcome: dict[str, Any],
    reply: str,
    wait: float,
    on_sent: Callable[[dict[str, Any]], None] | None,
    progress: Callable[[float], None] | None,
) -> None:
    """``send --wait``: who reads the stream, then the result (``None`` when none came)."""
    # A named Redis user is an ACL user (docs/operations.md): a producer's may not run XINFO,
    # and a refusal would land in ACL LOG. The default user may ask.
    ask = not _named_user(cfg)
    stream = outcome["stream"]
    outcome["readers"] = await group_readers(redis, stream, cfg.group) if ask else None
    if on_sent is not None:
        on_sent(outcome)
    outcome["result"] = await wait_for_result(
        redis, reply, outcome["id"], outcome["entry_id"], wait, progress=progress
    )
    if outcome["result"] is None and ask:  # how things stand now, for the message
        outcome["readers"] = await group_readers(redis, stream, cfg.group)


def _named_user(cfg: Any) -> bool:
    """Does ``redis_url`` log in as a named user (``user:password@``, ``?username=``)?"""
    from urllib.parse import parse_qs, urlsplit

    if cfg.redis_url is None:
        return False
    url = urlsplit(cfg.redis_url.get_secret_value())
    return bool(url.username) or bool(parse_qs(url.query).get("username"))


async def group_readers(redis: RedisClient, stream: str, group: str) -> dict[str, Any] | None:
    """Who reads ``stream`` in ``group``: ``{"group", "consumers", "pending", "lag"}`` (0
    consumers when the group does not exist yet); ``None`` when this user may not ask."""
    from redis.exceptions import ResponseError

    try:
        mine = await _group_info(redis, stream, group)
    except ResponseError:  # a producer's ACL without XINFO
        return None
    if mine is None:
        return {"group": group, "consumers": 0, "pending": 0, "lag": None}
    return {
        "group": group,
        "consumers": int(mine.get("consumers") or 0),
        "pending": int(mine.get("pending") or 0),
        "lag": mine.get("lag"),
    }


async def wait_for_result(
    redis: RedisClient,
    stream: str,
    key: str,
    after: str,
    timeout: float,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any] | None:
    """Read ``stream`` from ``after`` (results of a command are newer than its entry).

    Stream ids count per stream, so a result written in the same millisecond as its command
    may carry a smaller sequence number: start just before that millisecond.
    """
    started = time.monotonic()
    deadline = started + timeout
    ms = int(after.split("-", 1)[0])
    last = f"{ms - 1}-18446744073709551615" if ms > 0 else "0-0"
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return None
        # redis-py annotates XREAD's reply loosely: [[stream, [(id, {field: value})]]].
        resp: Any = await redis.xread({stream: last}, count=500, block=min(left_ms, 1000))
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                last = _s(entry_id)
                if _s(fields.get(b"id", b"")) == key:
                    result: dict[str, Any] = orjson.loads(fields[b"payload"])
                    return result
        if progress is not None:
            progress(time.monotonic() - started)


async def await_result(
    kernel: Kernel, key: str, after: str, timeout: float
) -> dict[str, Any] | None:
    """The result envelope of command ``key`` on its default reply stream, newer than entry id
    ``after`` (the command's own), waiting up to ``timeout`` seconds; ``None`` when none came."""
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    return await wait_for_result(redis, streams_for(cfg, key).stream_out, key, after, timeout)


def _shown(names: list[str], configured: str) -> str:
    """One stream's name, or the configured name and how many partitions it has."""
    return names[0] if len(names) == 1 else f"{configured} ({len(names)} partitions)"


async def _group_info(redis: RedisClient, stream: str, group: str) -> dict[str, Any] | None:
    groups = await redis.xinfo_groups(stream) if await redis.exists(stream) else []
    return next((g for g in groups if _s(g.get("name")) == group), None)


async def stream_stats(kernel: Kernel, *, counts: bool = True) -> dict[str, Any]:
    """Lag and pending of the group, stream lengths, breaker states, per-action counts.

    ``counts=False`` leaves the per-action record counts out (``actions`` is ``None``): they
    take a query over the whole record table, too much for a page that refreshes every second.

    ``breakers`` is each processor's worst state over the deployment's running workers (as
    they publish them; this process's own worker as it is now) and ``breakers_by_consumer``
    each worker's. ``workers`` lists the running workers' published figures in brief
    (consumer, host, pid, version, started, at, processed, in_flight; :func:`worker_figures`
    has them all).

    With ``kernel.partitions`` > 1, ``lag`` and ``pending`` are summed over the partitions and
    ``partitions`` lists each one's.
    """
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    sets = stream_sets(cfg)
    parts: list[dict[str, Any]] = []
    for streams in sets:
        mine = await _group_info(redis, streams.stream_in, cfg.group)
        parts.append({
            "stream_in": streams.stream_in,
            "lag": mine.get("lag") if mine else None,
            "pending": mine.get("pending") if mine else 0,
            "consumers": mine.get("consumers") if mine else 0,
            "exists": mine is not None,
        })  # fmt: skip
    lags = [part["lag"] for part in parts if part["lag"] is not None]
    out: dict[str, Any] = {
        "stream_in": _shown([s.stream_in for s in sets], cfg.stream_in),
        "group": cfg.group,
        "lag": sum(lags) if lags else None,
        "pending": sum(part["pending"] for part in parts),
        "consumers": max(part["consumers"] for part in parts),
    }
    exists = any(part.pop("exists") for part in parts)
    out["consumer_list"] = (await group_consumers(kernel))["consumers"] if exists else []
    out["lengths"] = {
        name: await redis.xlen(name)
        for streams in sets
        for name in (streams.stream_in, streams.stream_out, streams.dead_letter_stream)
    }
    if len(sets) > 1:
        out["partitions"] = parts
    worker = kernel.runtime
    report = await published_breakers(kernel)
    out["breakers"] = report["breakers"]
    out["breakers_by_consumer"] = report["by_consumer"]
    out["worker"] = worker.counts() if worker is not None else None
    out["workers"] = [figures.compact(f) for f in (await worker_figures(kernel))["workers"]]
    out["actions"] = await _action_counts(kernel) if counts else None
    return out


async def worker_figures(kernel: Kernel) -> dict[str, Any]:
    """The figures the deployment's running workers publish (``runtime/figures.py``; this
    process's own worker's as they are this instant): ``{"buckets": the duration buckets'
    upper bounds (seconds), "interval_s": how often workers publish, "workers": [figures,
    sorted by consumer]}``. Only this process's own when this user may not read them."""
    from redis.exceptions import ResponseError

    redis = await kernel_redis(kernel)
    try:
        by_consumer = await figures.read(redis, figures.workers_key(kernel.settings.kernel))
    except ResponseError:  # NOPERM, or a key of another type
        by_consumer = {}
    own = figures.runtime_snapshot(kernel)
    if own is not None:
        by_consumer[own["consumer"]] = own
    return {
        "buckets": list(figures.BUCKETS),
        "interval_s": figures.FIGURES_S,
        "workers": [by_consumer[consumer] for consumer in sorted(by_consumer)],
    }


async def published_breakers(kernel: Kernel) -> dict[str, Any]:
    """The circuit breakers of the deployment's running workers, as they publish them
    (``runtime/published.py``; this process's own worker as it is this instant):
    ``{"breakers": {processor: worst state}, "by_consumer": {consumer: {processor: {...}}}}``.
    Only this process's own when this user may not read them."""
    from redis.exceptions import ResponseError

    redis = await kernel_redis(kernel)
    try:
        by_consumer = await read(redis, breakers_key(kernel.settings.kernel))
    except ResponseError:  # NOPERM, or a key of another type
        by_consumer = {}
    worker = kernel.runtime
    if worker is not None:
        by_consumer[worker.consumer] = {
            name: {"state": state} for name, state in worker.breaker_states().items()
        }
    return {"breakers": merged(by_consumer), "by_consumer": by_consumer}


async def _action_counts(kernel: Kernel) -> dict[str, Any] | None:
    cfg = kernel.settings.kernel
    if kernel.store is not None:
        return await kernel.store.counts()
    if not cfg.records:
        return None
    # Outside the worker (exec, CoreC adapter): read the records directly.
    from ..storage import open_store

    store = open_store(cfg)
    await store.open()
    try:
        return await store.counts()
    finally:
        await store.close()


async def group_consumers(
    kernel: Kernel, *, prune: bool = False, idle_ms: int | None = None
) -> dict[str, Any]:
    """The consumers of the group on ``stream_in``, each flagged ``dead`` when it is idle past
    ``idle_ms`` (default ``dead_consumer_idle_ms``) and owns nothing; with ``prune``, those are
    removed first (:func:`~corec_plugin_kit.runtime.consumers.prune_consumers`).

    With ``kernel.partitions`` > 1 each partition's group is listed (and pruned), and each
    consumer carries its ``stream``. The caller's own consumer is never removed: the worker's
    when it runs this kernel.
    """
    from .consumers import is_dead, list_consumers, prune_consumers

    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    bound = idle_ms if idle_ms is not None else cfg.dead_consumer_idle_ms
    keep = kernel.runtime.consumer if kernel.runtime is not None else cfg.consumer_name()
    if prune and bound is None:
        raise ValueError("dead_consumer_idle_ms is off (null): give idle_ms to prune")
    sets = stream_sets(cfg)
    removed: list[str] = []
    consumers: list[dict[str, Any]] = []
    for streams in sets:
        if prune:
            assert bound is not None
            removed += await prune_consumers(redis, streams.stream_in, cfg.group, bound, keep=keep)
        for consumer in await list_consumers(redis, streams.stream_in, cfg.group):
            consumer["dead"] = bound is not None and is_dead(consumer, bound, keep)
            if len(sets) > 1:
                consumer["stream"] = streams.stream_in
            consumers.append(consumer)
    return {
        "stream": _shown([s.stream_in for s in sets], cfg.stream_in),
        "group": cfg.group,
        "idle_ms": bound,
        "removed": removed,
        "consumers": consumers,
    }


#: :data:`~corec_plugin_kit.envelopes.DEAD_LETTER_FIELDS` as text.
_DEAD_LETTER_NAMES = tuple(_s(name) for name in DEAD_LETTER_FIELDS)


def _decode_dead(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    """A dead letter as ``dlq_list`` shows it: what the worker added to it, apart from the
    command's own ``fields``."""
    own = {_s(k): _s(v) for k, v in fields.items()}
    added = {name: own.pop(name, None) for name in _DEAD_LETTER_NAMES}
    error: Any = added["error"]
    with contextlib.suppress(orjson.JSONDecodeError):
        error = orjson.loads(error) if error else None
    action = own.get("action")
    if action is None and "payload" in own:
        try:
            action = orjson.loads(own["payload"]).get("action")
        except (orjson.JSONDecodeError, AttributeError):
            action = None
    return {
        "entry_id": _s(entry_id),
        "action": action,
        "error": error,
        "deliveries": int(added["deliveries"] or 0),
        "last_consumer": added["last_consumer"],
        "failed_at": added["failed_at"],
        "fields": own,
    }


#: With partitions, a dead letter is named ``PARTITION/ENTRY_ID`` (entry ids count per stream).
REF_SEPARATOR = "/"


def _split_ref(ref: str, count: int, field: str) -> tuple[int | None, str]:
    """``PARTITION/ID`` -> ``(partition, ID)``; a plain id -> ``(None, ID)``."""
    head, sep, tail = ref.partition(REF_SEPARATOR)
    if sep and head.isdigit():
        if int(head) >= count:
            message = (
                f"{ref[:80]!r} names partition {head[:10]}, but kernel.partitions is {count} "
                f"(partitions 0 to {count - 1})"
            )
            raise InvalidParams(message, details=[{"loc": field, "msg": message, "type": "value"}])
        return int(head), tail
    return None, ref


#: A stream entry id as ``dlq_list`` shows it: ``MILLISECONDS-SEQUENCE``, each below 2**64.
_ENTRY_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_ID_MAX = 2**64 - 1


def _entry_ref(ref: str, count: int, field: str) -> tuple[int | None, str]:
    """:func:`_split_ref`, with the entry id checked: a malformed one is the caller's mistake
    (InvalidParams, exit 2), not a Redis error, and a bare ``MS`` is not taken as the range
    of every entry of that millisecond."""
    index, entry_id = _split_ref(ref, count, field)
    match = _ENTRY_ID.fullmatch(entry_id)
    if match is None or max(int(match[1]), int(match[2])) > _ID_MAX:
        message = (
            f"{ref[:80]!r} is not a dead-letter entry id: name it as `corec-kit manager dlq "
            "list` shows it, MILLISECONDS-SEQUENCE (e.g. 1712345678901-0), or PARTITION/"
            "MILLISECONDS-SEQUENCE with kernel.partitions > 1"
        )
        raise InvalidParams(message, details=[{"loc": field, "msg": message, "type": "value"}])
    return index, entry_id


async def _locate(
    redis: RedisClient, sets: Sequence[StreamSet], index: int | None, entry_id: str
) -> list[tuple[StreamSet, list[Any]]]:
    """Each partition whose dead-letter stream holds ``entry_id``, with its row: only
    partition ``index``'s when the ref named one; found in several, a plain id is ambiguous."""
    found = []
    for streams in sets if index is None else [sets[index]]:
        rows = await redis.xrange(streams.dead_letter_stream, min=entry_id, max=entry_id)
        if rows:
            found.append((streams, rows))
    return found


def _bounds(until: str | Mapping[str, str] | None) -> dict[str, str]:
    """``until`` as :func:`dlq_bound` gives it (one id, or partition -> id) by partition."""
    return {"0": until} if isinstance(until, str) else dict(until or {})


async def _bounded(
    kernel: Kernel, sets: Sequence[StreamSet], until: str | Mapping[str, str] | None
) -> tuple[str | Mapping[str, str] | None, list[tuple[StreamSet, str]]]:
    """``--all``: the bound (``until``, else :func:`dlq_bound` read now) and each partition's
    last dead-letter id under it, for the partitions that have one."""
    if until is None:
        until = (await dlq_bound(kernel))["until"]
    bounds = _bounds(until)
    return until, [(s, bounds[str(s.index)]) for s in sets if str(s.index) in bounds]


async def dlq_list(kernel: Kernel, limit: int = 100, start: str = "-") -> dict[str, Any]:
    """The oldest ``limit`` dead letters from ``start`` (exclusive cursor with ``(``).

    With ``kernel.partitions`` > 1 the partitions are listed one after the other: ``start``
    and ``next`` are ``PARTITION/ID`` (``-`` = from the first), and each entry's ``ref``
    (``PARTITION/ENTRY_ID``) is what ``dlq_replay`` takes.
    """
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    sets = stream_sets(cfg)
    many = len(sets) > 1
    index, start = _split_ref(start, len(sets), "start") if many else (0, start)
    index = index or 0
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    for streams in sets[index:]:
        rows = await redis.xrange(
            streams.dead_letter_stream, min=start, max="+", count=limit - len(entries)
        )
        for entry_id, fields in rows:
            entry = _decode_dead(entry_id, fields)
            entry["stream"] = streams.dead_letter_stream
            entry["ref"] = f"{streams.index}/{entry['entry_id']}" if many else entry["entry_id"]
            entries.append(entry)
        start = "-"
        if len(entries) == limit:
            last = entries[-1]["entry_id"]
            cursor = f"{streams.index}/({last}" if many else f"({last}"
            break
    total = sum([await redis.xlen(s.dead_letter_stream) for s in sets])
    shown = _shown([s.dead_letter_stream for s in sets], cfg.dead_letter_stream)
    return {"stream": shown, "total": total, "entries": entries, "next": cursor}


REPLAY_PAGE = 200


async def dlq_bound(kernel: Kernel) -> dict[str, Any]:
    """What ``dlq_replay(all_entries=True)`` replays if started now: the last dead-letter id
    (``until``, None when the stream is empty) and how many entries there are up to it.

    Both are read in one MULTI, so ``total`` counts exactly the entries up to ``until``. With
    ``kernel.partitions`` > 1, ``until`` maps each non-empty partition (its number, as text)
    to its last id.
    """
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    sets = stream_sets(cfg)
    bounds: dict[str, str] = {}
    total = 0
    for streams in sets:
        last, count = await _dead_snapshot(redis, streams.dead_letter_stream)
        if last is not None:
            bounds[str(streams.index)] = last
            total += count
    until: str | dict[str, str] | None = bounds or None
    if len(sets) == 1:
        until = bounds.get("0")
    shown = _shown([s.dead_letter_stream for s in sets], cfg.dead_letter_stream)
    return {"stream": shown, "until": until, "total": total}


async def _dead_snapshot(redis: RedisClient, stream: str) -> tuple[str | None, int]:
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
    until: str | Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Put dead letters back on ``stream_in`` (original fields), then delete them (unless keep).

    Each entry's XADD and XDEL go in one MULTI, so a replayed entry is never lost or doubled.
    With ``kernel.partitions`` > 1 a dead letter goes back to its own partition's input; name
    it ``PARTITION/ENTRY_ID`` (``ref`` in ``dlq_list``). A plain id is looked for in every
    partition and replayed where it is the only one; found in several, it is ``ambiguous``.

    ``all_entries`` replays the entries present when the call starts, each once: the scan is
    bounded by the stream's last entry id read first (or by ``until``, e.g. from
    :func:`dlq_bound`). Entries dead-lettered meanwhile (a replayed command failing again, at
    once) get newer ids and are left for the next replay, so the call ends whatever workers do.
    """
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    sets = stream_sets(cfg)
    replay = _Replay(redis, keep, progress)
    missing: list[str] = []
    ambiguous: list[str] = []
    if all_entries:
        until, bounded = await _bounded(kernel, sets, until)
        for streams, bound in bounded:
            await replay.up_to(streams, bound)
    else:
        # Every ref is checked before any is replayed: a malformed one replays nothing.
        parsed = [(ref, *_entry_ref(ref, len(sets), "ids")) for ref in ids or []]
        for ref, index, entry_id in parsed:
            found = await _locate(redis, sets, index, entry_id)
            if len(found) > 1:
                ambiguous.append(ref)
            elif not found:
                missing.append(ref)
            else:
                await replay.rows(*found[0])
    out: dict[str, Any] = {
        "replayed": replay.done,
        "missing": missing,
        "stream_in": _shown([s.stream_in for s in sets], cfg.stream_in),
        "until": until if all_entries else None,
    }
    if ambiguous:
        out["ambiguous"] = ambiguous
    return out


class _Replay:
    """Dead letters back onto their partition's input, one MULTI per page."""

    def __init__(
        self, redis: RedisClient, keep: bool, progress: Callable[[int], None] | None
    ) -> None:
        self.redis = redis
        self.keep = keep
        self.progress = progress
        self.done: list[dict[str, str]] = []

    async def up_to(self, streams: StreamSet, bound: str) -> None:
        cursor = "-"
        while True:
            rows = await self.redis.xrange(
                streams.dead_letter_stream, min=cursor, max=bound, count=REPLAY_PAGE
            )
            if not rows:
                return
            await self.rows(streams, rows)
            last = _s(rows[-1][0])
            if last == bound or len(rows) < REPLAY_PAGE:
                return
            cursor = f"({last}"

    async def rows(self, streams: StreamSet, rows: list[Any]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for entry_id, fields in rows:
            original = {k: v for k, v in fields.items() if k not in DEAD_LETTER_FIELDS}
            pipe.xadd(streams.stream_in, original)
            if not self.keep:
                pipe.xdel(streams.dead_letter_stream, entry_id)
        answers = await pipe.execute()
        step = 1 if self.keep else 2
        for index, (entry_id, _fields) in enumerate(rows):
            self.done.append(
                {"dead_entry_id": _s(entry_id), "new_entry_id": _s(answers[index * step]),
                 "stream_in": streams.stream_in}
            )  # fmt: skip
        if self.progress is not None:
            self.progress(len(rows))


async def dlq_delete(
    kernel: Kernel,
    refs: list[str] | None = None,
    *,
    all_entries: bool = False,
    until: str | Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Delete dead letters for good: the ones ``refs`` names, or (``all_entries``) every one
    present when the call starts. For what cannot be fixed and replayed.

    ``refs`` are named as for :func:`dlq_replay` (``ref`` in ``dlq_list``: ``PARTITION/ID``
    with ``kernel.partitions`` > 1; a plain id is looked for in every partition). All are
    checked before any is deleted, so a malformed one deletes nothing. One not found (or
    deleted by someone else meanwhile) is ``missing``; a plain id found in several partitions
    is ``ambiguous`` and deleted nowhere.

    ``all_entries`` deletes up to the bound (``until``, else :func:`dlq_bound` read first)
    with one exact ``XTRIM MINID`` per partition: dead letters added meanwhile get newer ids
    and stay, so emptying the stream never races the workers. Their ids are not read (a dead
    letter may be large), so ``deleted`` is None there and ``count`` says how many went.
    """
    cfg = kernel.settings.kernel
    redis = await kernel_redis(kernel)
    sets = stream_sets(cfg)
    out: dict[str, Any] = {
        "stream": _shown([s.dead_letter_stream for s in sets], cfg.dead_letter_stream),
        "deleted": None,
        "count": 0,
        "missing": [],
        "ambiguous": [],
        "until": None,
    }
    if all_entries:
        until, bounded = await _bounded(kernel, sets, until)
        for streams, bound in bounded:
            out["count"] += await _trim_through(redis, streams.dead_letter_stream, bound)
        out["until"] = until
        return out
    # Every ref is checked before any is deleted; a ref given twice is deleted once.
    parsed = [(ref, *_entry_ref(ref, len(sets), "ids")) for ref in dict.fromkeys(refs or [])]
    deleted: list[str] = []
    for ref, index, entry_id in parsed:
        found = await _locate(redis, sets, index, entry_id)
        if len(found) > 1:
            out["ambiguous"].append(ref)
        elif found and await redis.xdel(found[0][0].dead_letter_stream, entry_id):
            deleted.append(ref)
        else:
            out["missing"].append(ref)
    out["deleted"], out["count"] = deleted, len(deleted)
    return out


async def _trim_through(redis: RedisClient, stream: str, bound: str) -> int:
    """Delete the entries of ``stream`` up to ``bound`` included (an exact ``XTRIM MINID`` at
    the next possible id); how many there were."""
    match = _ENTRY_ID.fullmatch(bound)
    if match is None:
        raise ValueError(f"until {bound[:80]!r} is not a stream entry id (MILLISECONDS-SEQUENCE)")
    ms, seq = int(match[1]), int(match[2])
    if seq < _ID_MAX:
        after = f"{ms}-{seq + 1}"
    elif ms < _ID_MAX:
        after = f"{ms + 1}-0"
    else:  # the greatest id there can be: nothing comes after it
        return int(await redis.xtrim(stream, maxlen=0, approximate=False))
    return int(await redis.xtrim(stream, minid=after, approximate=False))
