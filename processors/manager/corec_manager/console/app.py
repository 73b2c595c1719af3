"""The console's web application (Starlette): pages rendered with Jinja2, a small JSON API for
what changes state, and the sign-in and CSRF checks of :mod:`.auth` in front of both.

Pages: ``/`` overview, ``/workers``, ``/processors``, ``/actions/{action}``, ``/dead-letters``
(and ``/dead-letters/entry?ref=``), ``/history``. The live parts of a page reload themselves
from ``/fragments/...`` (the same templates, without the frame) every second.

API (JSON): ``POST /api/send``, ``GET /api/result``, ``POST /api/dlq/replay``,
``POST /api/dlq/delete``, ``GET /api/overview``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from corec_plugin_kit.api import CorecError

from .auth import COOKIE, CSRF_HEADER, Auth, is_loopback
from .rates import Sampler

log = logging.getLogger("corec_manager.console")
HERE = Path(__file__).parent
#: How often the console reads the workers' figures (seconds).
SAMPLE_S = 1.0
#: Windows the overview offers (seconds).
WINDOWS = (60, 300, 900)

Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """The state one console serves from: the kernel, its record store, the figures read."""

    def __init__(self, kernel: Any, auth: Auth) -> None:
        self.kernel = kernel
        self.auth = auth
        self.sampler = Sampler(keep_s=max(WINDOWS) + 60)
        self.store: Any = None
        self.store_error: str | None = None
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["json"] = _pretty_json

    async def sample(self) -> None:
        """Read the workers' figures once a second, for rates and percentiles."""
        import corec_plugin_kit.api as api

        while True:
            try:
                self.sampler.add(await api.worker_figures(self.kernel))
            except Exception as exc:  # noqa: BLE001 - Redis away: the pages say so
                log.debug("figures not read: %s", exc)
            await asyncio.sleep(SAMPLE_S)

    async def open_store(self) -> None:
        """The record store for the history page (``records`` off: the page says so)."""
        import corec_plugin_kit.api as api

        if not self.kernel.settings.kernel.records:
            self.store_error = "records are off (kernel.records = false): no history is kept"
            return
        store = api.open_store(self.kernel.settings.kernel)
        try:
            await store.open()
        except CorecError as exc:
            self.store_error = f"the record store cannot be opened: {exc.message}"
            return
        self.store = store

    def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        signed_in = self.auth.signed_in(request.cookies.get(cookie_name(request)), None)
        page = self.templates.get_template(name).render(
            request=request,
            csrf=self.auth.csrf if signed_in else "",
            signed_in=signed_in,
            stream_in=self.kernel.settings.kernel.stream_in,
            **context,
        )
        return HTMLResponse(page, status)

    def error(self, request: Request, message: str, status: int) -> Response:
        """A refusal or failure: JSON for the API, a page (or a fragment's line) otherwise."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": {"type": "error", "message": message}}, status)
        if request.url.path.startswith("/fragments/"):
            return HTMLResponse(f"<p class='error'>{escape(message)}</p>", status)
        return self.render(request, "error.html", status, title="Not done", message=message)


def _pretty_json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


#: Sent with every answer: no script, style or frame from elsewhere (the pages use their own
#: files only), never framed by another page (clickjacking a replay button), no Referer (the
#: first URL carries the token).
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def cookie_name(request: Request) -> str:
    """The session cookie's name, with the port: browsers keep cookies per host, not per
    port, so two consoles on one host would otherwise sign each other out."""
    return f"{COOKIE}_{request.url.port or (443 if request.url.scheme == 'https' else 80)}"


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def guarded(console: Console, handler: Handler, *, write: bool = False) -> Handler:
    """``handler`` behind the sign-in (and, with ``write``, the CSRF) checks of :mod:`.auth`."""

    async def endpoint(request: Request) -> Response:
        auth = console.auth
        token = request.query_params.get("token")
        if token is not None and not write:
            return _sign_in(request, auth, token)
        cookie, authorization = (
            request.cookies.get(cookie_name(request)),
            request.headers.get("authorization"),
        )
        if auth.open_reads and not is_loopback(request.url.hostname or ""):
            # DNS rebinding: a site whose name now points at 127.0.0.1 must not read the pages
            # that a loopback console leaves open. The browser sends that name as the Host.
            message = "this console answers on 127.0.0.1, ::1 or localhost only"
            return console.error(request, message, 421)
        if write:
            refusal = auth.write_refusal(
                cookie=cookie, authorization=authorization,
                csrf=request.headers.get(CSRF_HEADER), origin=request.headers.get("origin"),
                own_origin=own_origin(request),
            )  # fmt: skip
            if refusal is not None:
                return JSONResponse({"error": {"type": "forbidden", "message": refusal}}, 403)
        elif not auth.may_read(cookie, authorization):
            return console.render(request, "signin.html", 401, title="Sign in")
        try:
            return await handler(request)
        except CorecError as exc:
            return console.error(request, exc.message, 400 if exc.exit_code == 2 else 503)
        except ValueError as exc:
            return console.error(request, str(exc), 400)

    return endpoint


def _sign_in(request: Request, auth: Auth, token: str) -> Response:
    """``?token=`` once: set the session cookie and go to the same page without it."""
    if not auth.token_ok(token):
        return HTMLResponse(
            "<p>wrong token: use the URL `corec-kit manager console` printed</p>", 401
        )
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        cookie_name(request), auth.session, httponly=True, samesite="strict", path="/",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


def build_app(kernel: Any, auth: Auth) -> Starlette:
    """The console for ``kernel`` (configured, not started), guarded by ``auth``."""
    from . import views

    console = Console(kernel, auth)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with kernel:
            await console.open_store()
            sampler = asyncio.ensure_future(console.sample())
            try:
                yield
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                if console.store is not None:
                    await console.store.close()

    pages = views.pages(console)
    api = views.api(console)
    routes: list[Route | Mount] = [
        Route(path, guarded(console, fn), methods=["GET"]) for path, fn in pages
    ]
    routes += [
        Route(path, guarded(console, fn, write=method == "POST"), methods=[method])
        for path, method, fn in api
    ]
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
    app.state.console = console
    return app
