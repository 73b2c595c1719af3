"""The stream worker's per-entry policy, as pure functions: no Redis, no store, no I/O.

* :func:`parse_entry`: a stream entry's fields -> its command, where to answer, or why not;
* :class:`ReplyRules`: which reply streams a command may name;
* :func:`settle`: after a command ran, what to do with its entry (:class:`Step`), recording
  the outcome in the processor's circuit breaker;
* :func:`exhausted`: the error of a command that failed ``max_deliveries`` times.

The worker (``runtime/worker.py`` and its parts) applies these decisions to Redis and the
record store. docs/protocol.md states the same rules for producers.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Any

from ..envelopes import parse_fields
from ..errors import CorecError, DeadLettered, InvalidCommand
from ..partitions import stream_sets

if TYPE_CHECKING:
    from ..config import KernelConfig
    from .breaker import CircuitBreaker


class Step(enum.Enum):
    """What happens to an entry whose command ran (or could not run)."""

    #: Write its result, acknowledge it.
    ANSWER = "answer"
    #: Write its result and a dead letter, acknowledge it (the command can never succeed).
    ANSWER_DEAD = "answer_dead"
    #: Hold it, claimed, its delivery count untouched: the processor's breaker is open.
    PARK = "park"
    #: Leave it pending, unacknowledged: redelivered after ``claim_idle_ms``.
    RETRY = "retry"
    #: Its last delivery failed: answer with a ``dead_letter`` error, dead-letter, acknowledge.
    DEAD_LETTER = "dead_letter"


def settle(
    error: CorecError | None,
    breaker: CircuitBreaker,
    *,
    deliveries: int,
    max_deliveries: int,
) -> Step:
    """Decide an entry's fate from its command's error (``None``: it succeeded).

    A final error (not ``transient``) is answered, and dead-lettered too when it is the
    command's own fault. A transient one counts as a failure of the processor: while its
    breaker is open the entry is parked (never dead-lettered for that); otherwise it is
    retried until its ``max_deliveries``-th delivery, which is dead-lettered.
    """
    if error is None:
        breaker.success()
        return Step.ANSWER
    if not error.transient:
        breaker.release()
        return Step.ANSWER_DEAD if error.command_fault else Step.ANSWER
    breaker.failure()
    if breaker.current() != "closed":
        return Step.PARK
    if deliveries >= max_deliveries:
        return Step.DEAD_LETTER
    return Step.RETRY


def exhausted(
    action: str, error: CorecError, *, deliveries: int, max_deliveries: int
) -> DeadLettered:
    """The error of a command whose ``deliveries``-th delivery failed with ``error``."""
    return DeadLettered(
        f"{action!r} failed {deliveries} times "
        f"(max_deliveries={max_deliveries}); last error: {error.message}",
        details={"last_error": error.to_wire(), "deliveries": deliveries},
    )


class ReplyRules:
    """The reply stream rules (docs/protocol.md): bounded length, never the input or the
    dead-letter stream, and matching ``reply_to_pattern`` when one is configured."""

    def __init__(self, cfg: KernelConfig) -> None:
        self.max_length = cfg.reply_to_max_length
        self.refused = {
            name for s in stream_sets(cfg) for name in (s.stream_in, s.dead_letter_stream)
        }
        self.pattern = re.compile(cfg.reply_to_pattern) if cfg.reply_to_pattern else None

    def check(self, name: str | None) -> None:
        """Raise :class:`InvalidCommand` when a command may not be answered on ``name``."""
        if name is None:
            return
        limit = self.max_length
        if len(name) > limit:
            raise InvalidCommand(
                f"`reply_to` is {len(name)} characters, over reply_to_max_length={limit}"
            )
        if name in self.refused:
            raise InvalidCommand(
                f"`reply_to` may not name the input or dead-letter stream ({name!r})"
            )
        pattern = self.pattern
        if pattern is not None and pattern.fullmatch(name) is None:
            raise InvalidCommand(
                f"`reply_to` {name[:100]!r} does not match kernel.reply_to_pattern "
                f"({pattern.pattern!r})"
            )


def parse_entry(
    fields: dict[Any, Any], rules: ReplyRules, max_bytes: int | None
) -> tuple[dict[str, Any] | None, str | None, CorecError | None]:
    """A stream entry's fields -> ``(command, reply_to, error)``.

    With ``error`` set the entry is answered at once and never reaches a handler; ``command``
    is then what did parse (if anything), and ``reply_to`` is kept only when the envelope
    itself was fine (flat-form params that are not JSON) and its reply stream is allowed.
    """
    try:
        command = parse_fields(fields, max_bytes)
    except CorecError as exc:
        partial = exc.command
        reply_to = None
        if partial is not None:
            try:  # the envelope is fine, the params are not: answer where it asks
                rules.check(partial.get("reply_to"))
                reply_to = partial.get("reply_to")
            except InvalidCommand:
                pass
        return partial, reply_to, exc
    reply_to = command.get("reply_to")
    try:
        rules.check(reply_to)
    except InvalidCommand as exc:
        return command, None, exc
    return command, reply_to, None
