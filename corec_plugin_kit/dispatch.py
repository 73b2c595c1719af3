"""Dispatch: the one place that awaits handlers.

``exec``, the CoreC adapter and the stream worker all run a command through
:meth:`Dispatcher.dispatch`, so validation, timeouts and error mapping behave the same
everywhere. The return value is the result envelope as a plain dict (DESIGN.md section 3),
plus the typed error when there is one, for the runtime's breaker and dead-letter decisions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import CorecError, HandlerTimeout, InvalidParams, error_from_exception

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from pydantic import BaseModel

    from .kernel import Kernel
    from .routing import ActionSpec, RoutingTable

log = logging.getLogger("corec_plugin_kit.dispatch")

if sys.version_info >= (3, 11):

    async def _with_timeout(aw: Awaitable[Any], seconds: float) -> Any:
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - 3.10 only

    async def _with_timeout(aw: Awaitable[Any], seconds: float) -> Any:
        return await asyncio.wait_for(aw, seconds)


@dataclass(slots=True)
class CommandContext:
    """What a handler gets beside its params.

    ``key`` is the command key (the envelope ``id``, else the stream entry id): use it to make
    side effects idempotent, since delivery is at-least-once.
    """

    key: str
    action: str
    processor: str
    attempt: int
    entry_id: str | None
    meta: dict[str, Any] | None
    config: BaseModel | None
    kernel: Kernel


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def invalid_params(exc: ValidationError, action: str) -> InvalidParams:
    details = validation_details(exc)
    summary = "; ".join(f"{d['loc'] or '<params>'}: {d['msg']}" for d in details[:5])
    return InvalidParams(
        f"invalid params for {action!r}: {summary} (see `corec-kit describe {action}`)",
        details=details,
    )


class Dispatcher:
    """Routes and runs commands for one :class:`~corec_plugin_kit.kernel.Kernel`."""

    def __init__(self, kernel: Kernel, routing: RoutingTable) -> None:
        self.kernel = kernel
        self.routing = routing
        self.default_timeout = kernel.settings.kernel.handler_timeout_s
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """Thread pool for ``blocking=True`` handlers (created on first use)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(thread_name_prefix="corec-blocking")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def validate(self, spec: ActionSpec, params: Any) -> BaseModel:
        try:
            if isinstance(params, (str, bytes)):
                return spec.validate_json(params)  # type: ignore[no-any-return]
            return spec.validate_python(params)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise invalid_params(exc, spec.action) from None

    async def call(
        self, spec: ActionSpec, model: BaseModel, ctx: CommandContext, *, timeout: bool = True
    ) -> Any:
        """Run the handler under its timeout; blocking handlers run in the thread pool.

        ``timeout=False`` leaves the timeout to the caller (the stream worker arms one timer
        per command itself, which is cheaper than a timeout context per call).
        """
        if spec.blocking:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self.pool, functools.partial(spec.handler, model, ctx))
            aw: Any = fut
        else:
            aw = spec.handler(model, ctx)
        if not timeout:
            return await aw
        seconds = self.timeout_for(spec)
        try:
            return await _with_timeout(aw, seconds)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes before 3.11
            raise self.timeout_error(spec) from None

    def timeout_for(self, spec: ActionSpec) -> float:
        return spec.timeout_s or self.default_timeout

    def timeout_error(self, spec: ActionSpec) -> HandlerTimeout:
        seconds = self.timeout_for(spec)
        return HandlerTimeout(
            f"{spec.action!r} did not finish within {seconds:g}s "
            "(raise the action's timeout_s or kernel.handler_timeout_s)",
            details={"timeout_s": seconds},
        )

    async def dispatch(
        self,
        command: dict[str, Any],
        *,
        entry_id: str | None = None,
        attempt: int = 1,
        timeout: bool = True,
    ) -> tuple[dict[str, Any], CorecError | None]:
        """Run one command (``{action, params, id?, meta?}``) and build its result envelope.

        Never raises for a command's own failure: every error is in the envelope and returned
        as the second item. Only cancellation propagates.
        """
        start = time.perf_counter()
        action = command["action"]
        key = command.get("id") or entry_id or ""
        spec: ActionSpec | None = None
        error: CorecError | None = None
        result: Any = None
        try:
            spec = self.routing.route(action)
            model = self.validate(spec, command.get("params") or {})
            ctx = CommandContext(
                key,
                action,
                spec.processor,
                attempt,
                entry_id,
                command.get("meta"),
                self.kernel.processor_config(spec.processor),
                self.kernel,
            )
            result = await self.call(spec, model, ctx, timeout=timeout)
            if hasattr(result, "model_dump"):
                result = result.model_dump(mode="json")
        except CorecError as exc:
            error = exc
        except Exception as exc:
            # A handler bug becomes a handler_error result, logged with its traceback.
            log.exception("handler for %r raised", action)
            error = error_from_exception(exc)
        envelope = {
            "id": key,
            "action": action,
            "status": "ok" if error is None else "error",
            "result": result if error is None else None,
            "error": None if error is None else error.to_wire(),
            "processor": spec.processor if spec is not None else None,
            "attempt": attempt,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            "entry_id": entry_id,
        }
        return envelope, error
