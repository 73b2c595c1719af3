"""The worker's handling: one task per command, its time limit, and its answer.

``_handle`` routes the command once, asks the processor's circuit breaker, runs the
handler under its time limit (one timer, armed only if the handler waits) through
:meth:`Dispatcher.run <corec_plugin_kit.dispatch.Dispatcher.run>` and applies
:func:`~.policy.settle`'s decision. Answers are encoded once, here (``_set_answer``), so what
cannot be encoded is confined to its entry; the committer writes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections import deque
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ..envelopes import as_text as _s
from ..envelopes import codex_data, dumps, failed_envelope, result_envelope
from ..errors import CorecError, HandlerError
from .compat import start_task
from .policy import Step, exhausted, settle
from .state import Entry, WorkerState

if TYPE_CHECKING:
    from ..routing import ActionSpec
    from .breaker import CircuitBreaker

T = TypeVar("T")

log = logging.getLogger("corec_plugin_kit.worker")


class Handling(WorkerState):
    """Runs commands and turns their outcomes into answers, parked or retried entries."""

    def _spawn(self, entry: Entry) -> None:
        # The task is found through the entry (``inflight``) at shutdown: no set of tasks and
        # no done callback per command. It is named after the stream entry it runs.
        self.inflight[entry.entry_id] = entry
        entry.timed_out = False
        entry.task = start_task(self._handle(entry), loop=self._loop, name=entry.entry_id)

    async def _handle(self, entry: Entry) -> None:
        """The command's task: route, run under the time limit, settle. Most handlers finish
        in their first step, where no timer could fire anyway (the loop is not running): that
        step is taken here, and a timer is armed only for a handler that waits
        (:meth:`_wait_timed`)."""
        try:
            start = time.perf_counter()
            routed = self._route(entry, start)
            if routed is None:
                return
            spec, breaker = routed
            policy = spec.policy
            if policy is not None and policy.rate_limit is not None:
                # Its turn under the action's rate limit, shared by every worker (not timed:
                # the handler's time limit starts when it runs).
                await self.rate_limiter().wait(spec.action, policy.rate_limit, policy.rate_burst)
            run = self.dispatcher.run(
                spec, entry.command or {}, entry_id=entry.entry_id, attempt=entry.deliveries,
                timeout=False, started=start,
            )  # fmt: skip
            try:
                waiting_on = run.send(None)
            except StopIteration as finished:
                envelope, error = finished.value
            else:
                envelope, error = await self._wait_timed(entry, spec, start, run, waiting_on)
            outcome = "ok" if error is None else error.wire_type
            self.metrics.finished(spec.processor, spec.action, outcome, time.perf_counter() - start)
            self._settled(entry, envelope, error, breaker)
        except asyncio.CancelledError:
            # Shutdown past the grace period: the entry stays pending for another consumer.
            self.inflight.pop(entry.entry_id, None)
            self._release_key(entry)
            raise
        except Exception as exc:  # pragma: no cover - a kit bug: answer, dead-letter, go on
            log.exception("worker failed on entry %s; dead-lettering it", entry.entry_id)
            error = HandlerError(
                f"internal error in the worker: {type(exc).__name__}: {exc} (please report it)"
            )
            self._answer_invalid(entry, error, time.perf_counter(), entry.command)

    def _route(self, entry: Entry, start: float) -> tuple[ActionSpec, CircuitBreaker] | None:
        """The command's route and its processor's circuit breaker (looked up once: the
        outcome is recorded in it too), if it may run now; else it is answered (unknown
        action) or parked (the breaker is open), and ``None``."""
        command = entry.command
        assert command is not None  # parsed when taken
        action = command["action"]
        spec = self.dispatcher.routing.get(action)
        if spec is None:
            self._answer_invalid(entry, self.kernel.unknown_action(action), start, command)
            return None
        entry.processor = spec.processor
        breaker = self.breaker(spec.processor)
        admitted, entry.admitted = entry.admitted, False
        if not admitted and not breaker.allow():
            self._park(entry)
            return None
        return spec, breaker

    async def _wait_timed(
        self,
        entry: Entry,
        spec: ActionSpec,
        start: float,
        run: Coroutine[Any, Any, tuple[dict[str, Any], CorecError | None]],
        waiting_on: Any,
    ) -> tuple[dict[str, Any], CorecError | None]:
        """The rest of a command whose handler waits, under its time limit: one timer (cheaper
        than a timeout context) that cancels the task, counted from the start."""
        left = self.dispatcher.timeout_for(spec) - (time.perf_counter() - start)
        timer = self._loop.call_later(max(left, 0.0), self._timed_out, entry)
        try:
            return await _resume(run, waiting_on)
        except asyncio.CancelledError:
            if not entry.timed_out:
                raise
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            error = self.dispatcher.timeout_error(spec)
            envelope = result_envelope(
                entry.key, spec.action, error=error, processor=spec.processor,
                attempt=entry.deliveries, started=start, entry_id=entry.entry_id,
            )  # fmt: skip
            return envelope, error
        finally:
            timer.cancel()

    def _settled(
        self,
        entry: Entry,
        envelope: dict[str, Any],
        error: CorecError | None,
        breaker: CircuitBreaker,
    ) -> None:
        """Apply :func:`~.policy.settle`'s decision to a command that ran."""
        step = settle(
            error, breaker, deliveries=entry.deliveries, max_deliveries=self.cfg.max_deliveries
        )
        if step is Step.ANSWER:
            self._answer(entry, envelope)
        elif step is Step.ANSWER_DEAD:
            self._answer(entry, envelope, dead=True)
        elif step is Step.PARK:
            # The processor's dependency looks down: hold the entry (its claim renewed, its
            # delivery count untouched) and never dead-letter it for that.
            self._park(entry)
        elif step is Step.DEAD_LETTER:
            assert error is not None
            dead = exhausted(
                envelope["action"], error,
                deliveries=entry.deliveries, max_deliveries=self.cfg.max_deliveries,
            )  # fmt: skip
            self._answer(entry, failed_envelope(envelope, dead), dead=True)
        else:
            self.stats.retried += 1
            self._finish(entry)  # not acked: redelivered after claim_idle_ms

    def _timed_out(self, entry: Entry) -> None:
        task = entry.task
        if task is not None and not task.done():
            entry.timed_out = True
            task.cancel()

    def _answer_invalid(
        self,
        entry: Entry,
        exc: CorecError,
        start: float,
        command: dict[str, Any] | None = None,
    ) -> None:
        """Answer an entry that never reaches a handler (or broke the worker); dead-letter it."""
        action = (command or {}).get("action") or (
            # From the raw field when the command did not parse: made safe to record.
            _s(entry.fields.get(b"action", b""))[:100].replace("\x00", "\ufffd")
        )
        envelope = result_envelope(
            (command or {}).get("id") or entry.entry_id, action, error=exc,
            attempt=entry.deliveries, started=start, entry_id=entry.entry_id,
        )  # fmt: skip
        self.metrics.finished(None, str(action), exc.wire_type, time.perf_counter() - start)
        self._answer(entry, envelope, dead=True)

    def _answer(self, entry: Entry, envelope: dict[str, Any], *, dead: bool = False) -> None:
        self._set_answer(entry, envelope, dead=dead)
        self._finish(entry)

    def _set_answer(self, entry: Entry, envelope: dict[str, Any], *, dead: bool = False) -> None:
        """Encode the result once, here: what cannot be encoded is confined to this entry.

        A command that came in codex's ``data`` form also gets codex's response as ``data``.
        """
        codex = entry.command is not None and entry.command.get("wire") == "codex"
        try:
            entry.payload = dumps(envelope)
            entry.data = codex_data(envelope) if codex else None
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            envelope = failed_envelope(envelope, unencodable(envelope, exc))
            entry.payload = dumps(envelope)
            entry.data = codex_data(envelope) if codex else None
        entry.envelope = envelope
        entry.ack = True
        entry.dead = dead
        if dead:
            entry.error_wire = envelope["error"]

    def _park(self, entry: Entry) -> None:
        # The entry keeps its command key while parked: same-key entries wait behind it.
        self.inflight.pop(entry.entry_id, None)
        self.parked.setdefault(entry.processor or "", deque()).append(entry)
        self._parked_ids.add(entry.entry_id)
        self._room.set()

    def _finish(self, entry: Entry) -> None:
        done = self._done
        if not done:  # the committer waits for the first entry of a batch, no later one
            self._done_event.set()
        done.append(entry)
        # A handler slot is free: the reader may go on while the committer records this one.
        self._room.set()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Await ``coro``, already started and waiting on ``waiting_on``: what ``await`` does
    (hand each future to the task, send its value or throw its exception back in) for a
    coroutine whose first step was taken by hand."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - CancelledError too: thrown into coro
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as finished:
                return finished.value  # type: ignore[no-any-return]
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as finished:
                return finished.value  # type: ignore[no-any-return]


def unencodable(envelope: dict[str, Any], exc: Exception) -> HandlerError:
    """The error of a command whose result (or error details) cannot be encoded as JSON."""
    return HandlerError(
        f"the result of {str(envelope.get('action'))[:100]!r} cannot be encoded as JSON "
        f"({exc}); return JSON values (str, int within 64 bits, float, bool, None, list, dict)"
    )
