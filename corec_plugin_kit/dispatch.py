"""Dispatch: the one place that awaits handlers.

``exec``, the CoreC adapter and the stream worker all run a command through
:meth:`Dispatcher.dispatch`, so validation and error mapping are the same everywhere, and so
is each action's time limit (:meth:`Dispatcher.timeout_for`) and its timeout error
(:meth:`Dispatcher.timeout_error`). How the limit is enforced differs: ``exec`` and the CoreC
adapter (through :meth:`Kernel.execute`) run the handler under a timeout context here, while
the stream worker passes ``timeout=False`` and arms its own timer for a command that waits
(``loop.call_later``), which cancels the command's task and builds the timeout envelope itself.
The return value is the result envelope as a plain dict (docs/protocol.md), plus the typed
error when there is one, for the runtime's breaker and dead-letter decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from .envelopes import result_envelope
from .errors import CorecError, HandlerTimeout, InvalidParams, error_from_exception

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pydantic import BaseModel

    from .kernel import Kernel
    from .procpool import DaemonThreadPool, ProcessPool
    from .routing import ActionSpec, RoutingTable

log = logging.getLogger("corec_plugin_kit.dispatch")

T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def _with_timeout(aw: Awaitable[Any], seconds: float) -> Any:
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - 3.10 only

    async def _with_timeout(aw: Awaitable[Any], seconds: float) -> Any:
        return await asyncio.wait_for(aw, seconds)


@dataclass(slots=True)
class ProcessContext:
    """What a ``blocking="process"`` handler gets beside its params.

    The fields of :class:`CommandContext` that can cross to a worker process: everything but
    ``kernel`` (the handler runs in another process, with no kernel, Redis or store).
    """

    key: str
    action: str
    processor: str
    attempt: int
    entry_id: str | None
    meta: dict[str, Any] | None
    config: BaseModel | None
    #: How the command arrived: ``"kit"`` (the kit's envelopes) or ``"codex"`` (CoreC codex's
    #: single ``data`` field); a handler may pick defaults that suit its producer.
    wire: str = field(default="kit", kw_only=True)
    #: Tries of this delivery before this one, under the action's retry policy (0 = first).
    retry: int = field(default=0, kw_only=True)


@dataclass(slots=True)
class CommandContext(ProcessContext):
    """What a handler gets beside its params.

    ``key`` is the command key (the envelope ``id``, else the stream entry id): use it to make
    side effects idempotent, since delivery is at-least-once.
    """

    kernel: Kernel


@dataclass(slots=True)
class CommandCall:
    """What a :func:`~corec_plugin_kit.hookspecs.corec_command` wrapper gets: one command on
    its way to its handler."""

    #: The command envelope as parsed (``action``, ``params`` not yet validated, ``id``,
    #: ``meta``...). Read it; changing it changes nothing.
    command: dict[str, Any]
    #: The route: the action's registration (``spec.processor``, ``spec.params_model``...).
    spec: ActionSpec
    #: What the handler gets beside its params.
    ctx: CommandContext
    #: Runs the rest: validation, then the handler (the kit's innermost implementation).
    core: Callable[[], Awaitable[Any]]

    @property
    def action(self) -> str:
        return self.spec.action

    @property
    def processor(self) -> str:
        return self.spec.processor


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
        self.action_timeouts = dict(kernel.settings.kernel.action_timeouts)
        self._pool: DaemonThreadPool | None = None
        self._processes: ProcessPool | None = None
        #: Some processor wraps commands (``corec_command``); checked when the kernel is built
        #: and on reload, so that without one the dispatch never calls the hook.
        self.wrapped = kernel.processors.wraps_commands()
        #: ``max_concurrency`` of the actions whose policy has one: a semaphore each.
        self._slots: dict[str, asyncio.Semaphore] = {}

    @property
    def pool(self) -> DaemonThreadPool:
        """Thread pool for ``blocking=True`` handlers (created on first use).

        Its threads are daemons, never joined at exit: a handler stuck in one cannot keep a
        stopping worker alive (the thread cannot be stopped either; CPU-heavy work that must be
        stoppable belongs in :attr:`processes`).
        """
        if self._pool is None:
            from .procpool import DaemonThreadPool

            self._pool = DaemonThreadPool(thread_name_prefix="corec-blocking")
        return self._pool

    @property
    def processes(self) -> ProcessPool:
        """Process pool for ``blocking="process"`` handlers and :meth:`run_in_process`.

        One worker per CPU, started on first use; a call that times out or is cancelled has its
        worker process killed.
        """
        if self._processes is None:
            from .procpool import ProcessPool

            self._processes = ProcessPool()
        return self._processes

    async def run_in_process(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` in the process pool; for async handlers' heavy parts.

        ``fn`` must be a module-level function and its arguments and result picklable.
        Cancelling the awaiting task (the action's timeout, the worker's shutdown) kills the
        worker process running it; a worker that dies raises
        :class:`~corec_plugin_kit.procpool.WorkerDied`.
        """
        return await self.processes.run(fn, *args, **kwargs)

    def close(self) -> None:
        """Stop both pools without waiting: running process calls are killed."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._processes is not None:
            self._processes.close()
            self._processes = None

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
        """Run the handler under its timeout, off the loop for blocking handlers.

        ``blocking=True`` handlers run in the thread pool, ``blocking="process"`` ones in the
        process pool (cancelling this call, as the timeout does, kills their process).
        ``timeout=False`` leaves the timeout to the caller (the stream worker arms one timer
        per command itself, which is cheaper than a timeout context per call).
        """
        if spec.blocking == "process":
            pctx = ProcessContext(
                ctx.key,
                ctx.action,
                ctx.processor,
                ctx.attempt,
                ctx.entry_id,
                ctx.meta,
                ctx.config,
                wire=ctx.wire,
                retry=ctx.retry,
            )
            aw: Any = self.processes.run(spec.handler, model, pctx)
        elif spec.blocking:
            loop = asyncio.get_running_loop()
            aw = loop.run_in_executor(self.pool, functools.partial(spec.handler, model, ctx))
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
        """The action's timeout: ``kernel.action_timeouts[action]`` when set, else the timeout
        the action registered capped at ``kernel.handler_timeout_s``, else that default.

        So the operator bounds every action with ``handler_timeout_s`` alone, and only the
        operator (``action_timeouts``) can let one action run longer.
        """
        configured = self.action_timeouts.get(spec.action)
        if configured is not None:
            return configured
        if spec.timeout_s is not None:
            return min(spec.timeout_s, self.default_timeout)
        return self.default_timeout

    def timeout_error(self, spec: ActionSpec) -> HandlerTimeout:
        seconds = self.timeout_for(spec)
        return HandlerTimeout(
            f"{spec.action!r} did not finish within {seconds:g}s "
            f"(kernel.action_timeouts.{spec.action} sets this action's limit)",
            details={"timeout_s": seconds},
        )

    def _wrapped(
        self, spec: ActionSpec, command: dict[str, Any], ctx: CommandContext, timeout: bool
    ) -> Awaitable[Any]:
        """The command through the processors' ``corec_command`` wrappers."""

        async def core() -> Any:
            if spec.policy is not None:
                return await self._with_policy(spec, command, ctx, timeout)
            model = self.validate(spec, command.get("params") or {})
            return await self.call(spec, model, ctx, timeout=timeout)

        return self.kernel.processors.wrap_command(CommandCall(command, spec, ctx, core))

    async def _with_policy(
        self, spec: ActionSpec, command: dict[str, Any], ctx: CommandContext, timeout: bool
    ) -> Any:
        """Validate, then run the handler under the action's policy (``policies.py``): a slot
        of its concurrency cap, and retries of transient failures with backoff."""
        policy = spec.policy
        assert policy is not None
        model = self.validate(spec, command.get("params") or {})
        slot = self._slot(spec.action, policy.max_concurrency)
        async with slot if slot is not None else contextlib.nullcontext():
            retry = policy.retry
            while True:
                try:
                    return await self.call(spec, model, ctx, timeout=timeout)
                except Exception as exc:
                    error = exc if isinstance(exc, CorecError) else error_from_exception(exc)
                    tries = ctx.retry + 1
                    if retry is None or tries >= retry.attempts or not error.transient:
                        raise
                    pause = retry.pause(tries)
                    log.warning("%r try %d of %d failed (%s: %s); trying again in %.3gs",
                                spec.action, tries, retry.attempts, type(exc).__name__,
                                error.message, pause)  # fmt: skip
                    await asyncio.sleep(pause)
                    ctx.retry = tries

    def _slot(self, action: str, limit: int | None) -> asyncio.Semaphore | None:
        """The action's concurrency cap in this process (made on first use)."""
        if limit is None:
            return None
        slot = self._slots.get(action)
        if slot is None:  # an action's policy is fixed for the kernel's life
            slot = self._slots[action] = asyncio.Semaphore(limit)
        return slot

    async def dispatch(
        self,
        command: dict[str, Any],
        *,
        entry_id: str | None = None,
        attempt: int = 1,
        timeout: bool = True,
    ) -> tuple[dict[str, Any], CorecError | None]:
        """Route one command (``{action, params, id?, meta?}``) and :meth:`run` it.

        Never raises for a command's own failure: every error is in the envelope and returned
        as the second item. Only cancellation propagates.
        """
        start = time.perf_counter()
        action = command["action"]
        try:
            spec = self.routing.route(action)
        except CorecError as exc:
            key = command.get("id") or entry_id or ""
            envelope = result_envelope(
                key, action, error=exc, attempt=attempt, started=start, entry_id=entry_id
            )
            return envelope, exc
        return await self.run(
            spec, command, entry_id=entry_id, attempt=attempt, timeout=timeout, started=start
        )

    def _direct(self, spec: ActionSpec, command: dict[str, Any]) -> BaseModel:
        """The stream worker's common path (no policy, not blocking, timed by the worker):
        :meth:`validate` without a call per command, the handler then awaited in
        :meth:`run`'s own frame (what :meth:`call` does, for one coroutine less)."""
        params = command.get("params") or {}
        if type(params) is dict:
            try:
                model: BaseModel = spec.validate_python(params)
            except ValidationError as exc:
                raise invalid_params(exc, spec.action) from None
            return model
        return self.validate(spec, params)

    async def run(
        self,
        spec: ActionSpec,
        command: dict[str, Any],
        *,
        entry_id: str | None = None,
        attempt: int = 1,
        timeout: bool = True,
        started: float | None = None,
    ) -> tuple[dict[str, Any], CorecError | None]:
        """Validate and run a routed command; build its result envelope.

        The stream worker calls this directly, with the ``spec`` it already looked up (it
        needs the processor first, for its circuit breaker). Returns as :meth:`dispatch`.
        """
        start = time.perf_counter() if started is None else started
        action = spec.action
        key = command.get("id") or entry_id or ""
        error: CorecError | None = None
        result: Any = None
        try:
            ctx = CommandContext(
                key,
                action,
                spec.processor,
                attempt,
                entry_id,
                command.get("meta"),
                self.kernel.processor_config(spec.processor),
                self.kernel,
                wire=command.get("wire", "kit"),
            )
            if self.wrapped:
                result = await self._wrapped(spec, command, ctx, timeout)
            elif spec.policy is None and not spec.blocking and not timeout:
                result = await spec.handler(self._direct(spec, command), ctx)
            elif spec.policy is None:
                model = self.validate(spec, command.get("params") or {})
                result = await self.call(spec, model, ctx, timeout=timeout)
            else:
                result = await self._with_policy(spec, command, ctx, timeout)
            if hasattr(result, "model_dump"):
                result = result.model_dump(mode="json")
        except CorecError as exc:
            error = exc
        except Exception as exc:
            # A handler bug becomes a handler_error result, logged with its traceback.
            log.exception("handler for %r raised", action)
            error = error_from_exception(exc)
        envelope = result_envelope(
            key,
            action,
            result=result,
            error=error,
            processor=spec.processor,
            attempt=attempt,
            started=start,
            entry_id=entry_id,
        )
        return envelope, error
