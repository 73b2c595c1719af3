"""The console's pages and API endpoints (each a coroutine of a Starlette request).

Pages render a template; what a page refreshes lives in a ``fragments/`` template the page
includes, served alone at ``/fragments/<page>`` for the page's script to swap in.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..operations import DlqDeleteParams, DlqReplayParams
from . import data
from .forms import form_fields

if TYPE_CHECKING:
    from .app import Console, Handler

#: The longest one ``GET /api/result`` waits for a result (the page asks again).
RESULT_WAIT_S = 10.0


def _api() -> Any:
    import corec_plugin_kit.api as api

    return api


def _window(request: Request) -> int:
    from .app import WINDOWS

    try:
        value = int(request.query_params.get("window", WINDOWS[0]))
    except ValueError:
        return WINDOWS[0]
    return value if value in WINDOWS else WINDOWS[0]


def _fragment(request: Request, name: str) -> str:
    """``name``, or its ``fragments/`` part alone when the page's script asks for it."""
    return f"fragments/{name}" if request.url.path.startswith("/fragments") else name


async def overview_page(console: Console, request: Request) -> Response:
    from .app import WINDOWS

    window = _window(request)
    context = await data.overview(console.kernel, console.sampler, window)
    return console.render(request, _fragment(request, "overview.html"), title="Overview",
                          o=context, windows=WINDOWS, window=window)  # fmt: skip


async def workers_page(console: Console, request: Request) -> Response:
    rows = await data.workers(console.kernel, console.sampler)
    return console.render(request, _fragment(request, "workers.html"), title="Workers", rows=rows)


async def processors_page(console: Console, request: Request) -> Response:
    infos = _api().processor_infos(console.kernel)
    actions = _api().describe_actions(console.kernel)
    return console.render(request, "processors.html", title="Processors and actions",
                          processors=infos, actions=actions)  # fmt: skip


async def action_page(console: Console, request: Request) -> Response:
    name = request.path_params["action"]
    described = _api().describe_action(console.kernel, name)
    if described is None:
        raise ValueError(f"no action {name!r} is routed: see the Processors page")
    return console.render(request, "action.html", title=name, spec=described,
                          fields=form_fields(described["params_schema"]))  # fmt: skip


async def dead_letters_page(console: Console, request: Request) -> Response:
    query = request.query_params
    page = await data.dead_letters(
        console.kernel, action=query.get("action", ""), error_kind=query.get("error", ""),
        start=query.get("start", "-") or "-", limit=_int(query.get("limit"), 50, 1, 500),
    )  # fmt: skip
    return console.render(request, "dead_letters.html", title="Dead letters", page=page,
                          query=query, actions=_api().action_names(console.kernel))  # fmt: skip


async def dead_letter_page(console: Console, request: Request) -> Response:
    ref = request.query_params.get("ref", "")
    entry = await data.dead_letter(console.kernel, ref) if ref else None
    return console.render(request, "dead_letter.html", 200 if entry else 404,
                          title=f"Dead letter {ref}", entry=entry, ref=ref)  # fmt: skip


async def history_page(console: Console, request: Request) -> Response:
    query = request.query_params
    rows: list[dict[str, Any]] = []
    if console.store is not None:
        rows = await data.history(
            console.store, action=query.get("action") or None,
            status=query.get("status") or None, since=_time(query.get("since")),
            until=_time(query.get("until")), key=query.get("id") or None,
            limit=_int(query.get("limit"), 100, 1, 1000),
        )  # fmt: skip
    return console.render(request, "history.html", title="History", rows=rows, query=query,
                          store_error=console.store_error,
                          actions=_api().action_names(console.kernel))  # fmt: skip


def pages(console: Console) -> list[tuple[str, Handler]]:
    """``(path, handler)`` of every page and fragment."""
    table: list[tuple[str, Callable[[Console, Request], Awaitable[Response]]]] = [
        ("/", overview_page), ("/fragments/overview", overview_page),
        ("/workers", workers_page), ("/fragments/workers", workers_page),
        ("/processors", processors_page), ("/actions/{action}", action_page),
        ("/dead-letters", dead_letters_page), ("/dead-letters/entry", dead_letter_page),
        ("/history", history_page),
    ]  # fmt: skip
    return [(path, functools.partial(handler, console)) for path, handler in table]


def _int(text: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(text))) if text else default
    except ValueError:
        return default


def _time(text: str | None) -> datetime | None:
    """A ``datetime-local`` input's value (the browser's local time is sent as UTC by the
    page's script, with a ``Z``), or an ISO timestamp."""
    if not text:
        return None
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    value = datetime.fromisoformat(raw)
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def api(console: Console) -> list[tuple[str, str, Handler]]:
    """``(path, method, handler)`` of the JSON API."""

    async def send(request: Request) -> Response:
        body = await _body(request)
        action, params = body.get("action"), body.get("params", {})
        if not isinstance(action, str) or not action:
            raise ValueError("give `action`, the action to send")
        if not isinstance(params, dict):
            raise ValueError("`params` must be a JSON object")
        outcome = await _api().send_command(console.kernel, action, params)
        return JSONResponse(outcome)

    async def result(request: Request) -> Response:
        key, after = request.query_params.get("id"), request.query_params.get("after", "0-0")
        if not key:
            raise ValueError("give `id`, the command's id")
        wait = min(RESULT_WAIT_S, float(request.query_params.get("wait", RESULT_WAIT_S)))
        found = await _api().await_result(console.kernel, key, after, wait)
        return JSONResponse({"id": key, "result": found})

    async def replay(request: Request) -> Response:
        params = _params(DlqReplayParams, await _body(request), "dlq_replay")
        outcome: dict[str, Any] = await _api().dlq_replay(
            console.kernel, params.ids, all_entries=params.all, keep=params.keep
        )
        _name_refs(console.kernel, outcome["replayed"])
        return JSONResponse(outcome)

    async def delete(request: Request) -> Response:
        params = _params(DlqDeleteParams, await _body(request), "dlq_delete")
        outcome = await _api().dlq_delete(console.kernel, params.ids, all_entries=params.all)
        return JSONResponse(outcome)

    async def overview(request: Request) -> Response:
        return JSONResponse(await data.overview(console.kernel, console.sampler, _window(request)))

    return [
        ("/api/send", "POST", send), ("/api/result", "GET", result),
        ("/api/dlq/replay", "POST", replay), ("/api/dlq/delete", "POST", delete),
        ("/api/overview", "GET", overview),
    ]  # fmt: skip


P = TypeVar("P", bound=BaseModel)


def _params(model: type[P], body: dict[str, Any], action: str) -> P:
    """The request body checked as the manager's ``action`` checks its params (``ids`` or
    ``all``): the same rules and messages, an ``invalid_params`` error (400) otherwise."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _api().invalid_params(exc, action) from None


def _name_refs(kernel: Any, replayed: list[dict[str, Any]]) -> None:
    """Give each replayed dead letter its ``ref`` (``PARTITION/ID`` with partitions), as the
    page names its rows: the page finds the command ids there, to wait for the answers."""
    sets = _api().stream_sets(kernel.settings.kernel)
    index = {streams.stream_in: streams.index for streams in sets}
    for done in replayed:
        entry_id = done["dead_entry_id"]
        done["ref"] = f"{index[done['stream_in']]}/{entry_id}" if len(sets) > 1 else entry_id
