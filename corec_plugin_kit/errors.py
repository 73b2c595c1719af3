"""One error hierarchy for the whole kit.

Every error the kernel or a processor raises on purpose derives from :class:`CorecError`.
Each class carries, once, the ways it is shown and how the stream worker treats it; this is
the only place errors are classified:

* ``wire_type``: the ``error.type`` of a result envelope on the stream (docs/protocol.md);
* ``exit_code``: the exit status of the ``corec-kit`` command that hit it;
* the message itself, one line that says what to do (URL passwords in it are redacted);
* ``transient`` (retry: left pending, counted by the circuit breaker) or ``command_fault``
  (never succeeds: answered and dead-lettered at once); neither: answered.

Nothing heavy is imported here: the CLI imports this module on every start.
"""

# Public names predate the N818 convention and are the documented API, so they keep their names.
# ruff: noqa: N818

from __future__ import annotations

from typing import Any

from .redaction import redact

# Exit codes of failures (documented in docs/cli.md and `corec-kit --help`); success is 0.
EXIT_HANDLER_ERROR = 1
EXIT_INVALID_COMMAND = 2
EXIT_CONFIG_ERROR = 3
EXIT_PROCESSOR_ERROR = 4
EXIT_REDIS_UNAVAILABLE = 5
EXIT_DATABASE_UNAVAILABLE = 6
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in the kit; run with --debug and report it


class CorecError(Exception):
    """Root of every error the kit raises on purpose."""

    wire_type: str = "handler_error"
    exit_code: int = EXIT_HANDLER_ERROR
    #: True when retrying may succeed (a dependency down, a timeout, an unexpected exception):
    #: the stream worker leaves the command pending for redelivery and counts the failure in the
    #: processor's circuit breaker. False for a final answer (invalid input, a handler's own
    #: HandlerError): the worker writes the error result and acknowledges.
    transient: bool = False
    #: True when the command itself can never succeed, whoever runs it and however often
    #: (not a command envelope, an action nobody claims, params that do not validate): the
    #: stream worker answers it and moves it to the dead-letter stream at once.
    command_fault: bool = False
    #: The parts of the command that did parse, when the error is about the rest (flat-form
    #: params that are not JSON): its ``id`` and ``reply_to`` still address the answer.
    command: dict[str, Any] | None = None

    def __init__(self, message: str, *, details: Any = None) -> None:
        # No message may carry a secret: the password of a URL in it becomes *** (see
        # corec_plugin_kit.redaction), wherever the error ends up (stream, CLI, logs).
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` object of a result envelope."""
        return {"type": self.wire_type, "message": self.message, "details": self.details}


class InvalidCommand(CorecError):
    """The stream entry or CLI input is not a command envelope (bad JSON, wrong shape, too big)."""

    wire_type = "invalid_command"
    exit_code = EXIT_INVALID_COMMAND
    command_fault = True


class UnknownAction(CorecError):
    """No loaded processor claims the action."""

    wire_type = "unknown_action"
    exit_code = EXIT_INVALID_COMMAND
    command_fault = True

    def __init__(self, action: str, newer: list[str] | None = None) -> None:
        hint = "run `corec-kit actions` to list the actions that are routed"
        details: dict[str, Any] = {"action": action}
        if newer:
            shown = ", ".join(newer[:10])
            hint = (
                f"processors were installed after this worker started ({shown}) and may claim "
                "it: restart the worker or send it SIGHUP (`kill -HUP PID`) to load them"
            )
            details["installed_since_start"] = newer[:10]
        super().__init__(f"unknown action {action!r}: {hint}", details=details)
        self.action = action


class InvalidParams(CorecError):
    """The params do not validate against the action's model.

    ``details`` is a list of ``{"loc": "a.b", "msg": ..., "type": ...}``, one per problem.
    """

    wire_type = "invalid_params"
    exit_code = EXIT_INVALID_COMMAND
    command_fault = True


class HandlerError(CorecError):
    """A handler failed. Processors raise this (or a subclass) for expected failures."""

    wire_type = "handler_error"
    exit_code = EXIT_HANDLER_ERROR


class NotImplementedYet(HandlerError):
    """An action is registered but its behaviour has not been built yet."""


class Unauthorized(CorecError):
    """The command may not run: a ``corec_command`` wrapper refused it (who sent it, what it
    asks). Answered, not retried, not dead-lettered."""

    wire_type = "unauthorized"
    exit_code = EXIT_INVALID_COMMAND


class RateLimited(CorecError):
    """Too many commands of this kind just now: a ``corec_command`` wrapper refused this one.
    Answered, not retried; the producer may send it again later (``details`` may say when)."""

    wire_type = "rate_limited"
    exit_code = EXIT_HANDLER_ERROR


class HandlerTimeout(CorecError):
    """A handler ran longer than its timeout."""

    wire_type = "timeout"
    exit_code = EXIT_HANDLER_ERROR
    transient = True


class DeadLettered(CorecError):
    """A command was delivered ``max_deliveries`` times and moved to the dead-letter stream."""

    wire_type = "dead_letter"
    exit_code = EXIT_HANDLER_ERROR


class DependencyUnavailable(HandlerError):
    """A dependency of a handler is down (counts towards the processor's circuit breaker).

    Raise it from a handler when the failure is not the command's fault: the runtime leaves
    the command pending instead of burning a delivery once the breaker opens.
    """

    transient = True


class ConfigError(CorecError):
    """The configuration file or environment is invalid; ``details`` lists every problem."""

    wire_type = "invalid_command"
    exit_code = EXIT_CONFIG_ERROR
    command_fault = True  # as every invalid_command: answered and dead-lettered at once


class ProcessorError(CorecError):
    """A processor could not be loaded or registered (only fatal with ``--strict``)."""

    wire_type = "handler_error"
    exit_code = EXIT_PROCESSOR_ERROR


class ActionConflict(ProcessorError):
    """Two processors claim one action and the config pins no winner."""

    def __init__(self, action: str, first: str, second: str) -> None:
        super().__init__(
            f"action {action!r} is claimed by both {first} and {second}: uninstall one, or pin the "
            f'winner in config: {{"kernel": {{"action_owners": {{"{action}": "<processor>"}}}}}}',
            details={"action": action, "claimed_by": [first, second]},
        )
        self.action = action


class RegistrationError(ProcessorError):
    """A processor registered an action wrongly (sync handler, bad model, bad name...)."""


class RedisUnavailable(CorecError):
    """Redis (or the embedded Valkey) cannot be reached."""

    wire_type = "handler_error"
    exit_code = EXIT_REDIS_UNAVAILABLE


class DatabaseUnavailable(DependencyUnavailable):
    """The records database cannot be reached."""

    exit_code = EXIT_DATABASE_UNAVAILABLE


class StreamGone(CorecError):
    """The consumer group or stream vanished (NOGROUP) and could not be re-created."""

    wire_type = "handler_error"
    exit_code = EXIT_REDIS_UNAVAILABLE


def exit_code_for(error_type: str) -> int:
    """The exit status of ``exec`` and ``send --wait`` for a result's ``error.type``: the
    ``exit_code`` of the class that carries that type among ``InvalidCommand``,
    ``UnknownAction``, ``InvalidParams`` (the command faults) and ``Unauthorized`` (a refused
    command, not a command fault), else :data:`EXIT_HANDLER_ERROR` (a handler's failure, a
    rate limit, a timeout, a dead letter)."""
    return _FAULT_EXIT.get(error_type, EXIT_HANDLER_ERROR)


_FAULT_EXIT = {
    cls.wire_type: cls.exit_code
    for cls in (InvalidCommand, UnknownAction, InvalidParams, Unauthorized)
}


def error_from_exception(exc: BaseException) -> CorecError:
    """Map any exception a handler raised to a typed error (unexpected ones become handler_error).

    ``asyncio.TimeoutError`` is listed beside the builtin: they are distinct classes before 3.11.
    """
    import asyncio  # here, not at the top: the CLI imports this module on every start

    if isinstance(exc, CorecError):
        return exc
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return HandlerTimeout(str(exc) or "handler timed out")
    error = HandlerError(f"{type(exc).__name__}: {exc}", details={"exception": type(exc).__name__})
    error.transient = True  # an unexpected exception may be a passing fault: retry it
    return error
