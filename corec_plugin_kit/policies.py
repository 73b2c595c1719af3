"""Per-action policies: retries with backoff, a rate limit, a concurrency cap.

An action gets a policy where it is registered (``register(..., retry=..., rate_limit=...,
max_concurrency=...)``) and from the operator (``kernel.action_policies``, which wins key by
key). With no policy an action costs nothing extra: the dispatch checks ``spec.policy is None``.

* ``retry``: a **transient** failure (a timeout, ``DependencyUnavailable``, an unexpected
  exception) is tried again in the same worker, after ``base_s``, ``2 * base_s``, ... (at
  most ``max_s``), up to ``attempts`` tries in all, instead of waiting ``claim_idle_ms`` for
  the command to be reclaimed. A final error (``HandlerError``, invalid params) is never
  retried. Only the last try's outcome counts in the circuit breaker. ``ctx.retry`` is the
  number of tries before the current one.
* ``rate_limit``: at most this many commands of the action per second, across every worker
  of the deployment (kept in Redis: ``runtime/ratelimit.py``); a command over the limit waits
  its turn in the worker (it is not refused), so the limit also slows the reading. ``rate_burst``
  lets that many run back to back after a quiet spell. Applies to the stream worker.
* ``max_concurrency``: at most this many commands of the action run at once in one worker
  process; the others wait for a slot.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """Tries of a command whose handler fails transiently, and the pauses between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(3, ge=1, le=100, description="tries in all, the first included")
    base_s: float = Field(0.1, gt=0, le=3600, description="pause before the second try")
    max_s: float = Field(5.0, gt=0, le=3600, description="longest pause (each one doubles)")

    def pause(self, tries: int) -> float:
        """The pause after ``tries`` failed tries: ``base_s * 2**(tries - 1)``, at most
        ``max_s``."""
        return float(min(self.max_s, self.base_s * 2 ** min(tries - 1, 30)))


class ActionPolicy(BaseModel):
    """What an action's commands are allowed: retries, a rate, a concurrency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry: RetryPolicy | None = Field(None, description="retry transient failures in-process")
    rate_limit: float | None = Field(
        None, gt=0, description="commands per second across all workers (waits, not refusals)"
    )
    rate_burst: int = Field(1, ge=1, le=100_000, description="commands let through at once")
    max_concurrency: int | None = Field(
        None, ge=1, le=100_000, description="commands running at once per worker process"
    )

    @property
    def active(self) -> bool:
        """Does it ask for anything (a retry of one try asks for nothing)?"""
        retries = self.retry is not None and self.retry.attempts > 1
        return bool(retries or self.rate_limit or self.max_concurrency)

    def over(self, base: ActionPolicy | None) -> ActionPolicy:
        """This policy over ``base``: the keys set here win, the others come from ``base``."""
        if base is None:
            return self
        values: dict[str, Any] = dict(base)
        values.update({name: getattr(self, name) for name in self.model_fields_set})
        return ActionPolicy.model_validate(values)


def effective(
    registered: ActionPolicy | None, configured: ActionPolicy | None
) -> ActionPolicy | None:
    """An action's policy: the operator's keys over the processor's; ``None`` when it asks
    for nothing (so the dispatch skips the policy path)."""
    policy = configured.over(registered) if configured is not None else registered
    return policy if policy is not None and policy.active else None
