"""Per-processor circuit breaker: closed -> open -> half-open -> closed.

* closed: commands flow; ``max_failures`` consecutive transient failures open it.
* open: the worker stops taking that processor's commands and leaves them pending (they do not
  burn deliveries and are never dead-lettered for it) until ``reset_timeout`` has passed.
* half-open: exactly one probe command is let through at a time; success closes the breaker,
  failure opens it again for another ``reset_timeout``.

Only transient failures count (timeouts, dependency errors, unexpected exceptions); invalid
params and unknown actions never do. The clock is injectable so tests can drive it.

No library was used: the well-kept ones (pybreaker, aiobreaker, purgatory) wrap the call
itself, while the worker needs to ask "may I take this command?" before it commits to it, and
to park it otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the corec_circuit_state gauge


class CircuitBreaker:
    """One processor's breaker. Not thread-safe: used from the event loop only."""

    __slots__ = (
        "_clock",
        "_opened_at",
        "_probing",
        "failures",
        "max_failures",
        "on_change",
        "reset_timeout",
        "state",
    )

    def __init__(
        self,
        max_failures: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.reset_timeout = reset_timeout
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.on_change = on_change

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)

    def current(self) -> str:
        """The state now (an open breaker whose timeout passed reads as half-open)."""
        if self.state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._set(HALF_OPEN)
            self._probing = False
        return self.state

    def allow(self) -> bool:
        """May one command of this processor start now? In half-open, claims the single probe."""
        if self.state == CLOSED:  # the common case, without a look at the clock
            return True
        state = self.current()
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self._probing = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self) -> None:
        self._probing = False
        if self.state == HALF_OPEN:
            self._open()
            return
        self.failures += 1
        if self.failures >= self.max_failures:
            self._open()

    def release(self) -> None:
        """The probe ended without a verdict (e.g. a business error): let another probe in."""
        self._probing = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(OPEN)
