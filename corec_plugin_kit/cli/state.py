"""What every ``corec-kit`` command shares: the global options' :class:`State` (and the kernel
built from them on first use), JSON output, ``-p``/``--params`` parsing and the exit code of a
wire error type.

Imports click, ``errors`` and ``redaction`` only: ``config`` and ``kernel`` load when a command
first asks for the processors or the kernel.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import CorecError, InvalidCommand

if TYPE_CHECKING:
    from ..kernel import Kernel

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Global options, and the kernel built from them on first use."""

    def __init__(
        self,
        config: str | None,
        debug: bool,
        strict: bool,
        load: tuple[str, ...],
        disable: tuple[str, ...],
    ) -> None:
        self.config = config
        self.debug = debug
        self.strict = strict
        self.load = list(load) or None
        self.disable = list(disable)
        self._kernel: Kernel | None = None
        self._processors: Any = None

    def processors(self) -> Any:
        """A loaded ProcessorManager honouring --load/--disable/--strict, env and config.

        The kernel built later by :meth:`kernel` reuses it, so registration hooks run once. A
        config that does not validate is not an obstacle here (``list-processors`` must work to
        diagnose it); the kernel reports it.
        """
        if self._kernel is not None:
            return self._kernel.processors
        if self._processors is None:
            from ..config import load_settings
            from ..kernel import manager_for

            try:
                settings = load_settings(self.config)
            except CorecError:
                settings = None
            self._processors = manager_for(
                settings, strict=self.strict or None, load=self.load, disable=self.disable
            )
            self._processors.load()
        return self._processors

    def kernel(self) -> Kernel:
        if self._kernel is None:
            from ..kernel import Kernel

            self._kernel = Kernel.build(
                self.config,
                processors=self._processors,
                # --strict also makes unknown keys of a CoreC/codex-style config errors.
                overrides={"kernel": {"strict_processors": True}} if self.strict else None,
                strict=self.strict or None,
                load=self.load,
                disable=self.disable,
            )
        return self._kernel


def get_state() -> State:
    """The :class:`State` of the running ``corec-kit`` invocation."""
    ctx = click.get_current_context()
    state = ctx.find_object(State)
    if state is None:  # invoked without the top-level group (tests calling a subcommand)
        state = State(None, False, False, (), ())
        ctx.obj = state
    return state


def pass_kernel(func: F) -> F:
    """Decorator for processor CLI commands: pass the configured Kernel as first argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(get_state().kernel(), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def parse_params(pairs: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    """``--params JSON`` merged with ``-p key=value`` (string) and ``-p key:=json`` pairs."""
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise InvalidCommand(f"--params is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise InvalidCommand('--params must be a JSON object, e.g. \'{"name": "x"}\'')
        params.update(loaded)
    for pair in pairs:
        if ":=" in pair and pair.find("=") == pair.index(":=") + 1:
            key, raw = pair.split(":=", 1)
            try:
                params[key] = json.loads(raw)
            except ValueError as exc:
                raise InvalidCommand(f"-p {pair}: the value after := must be JSON: {exc}") from None
        elif "=" in pair:
            key, value = pair.split("=", 1)
            params[key] = value
        else:
            raise InvalidCommand(f"-p {pair}: write key=value (a string) or key:=JSON")
        if not key:
            raise InvalidCommand(f"-p {pair}: the key is empty")
    return params


params_options = [
    click.option(
        "-p",
        "--param",
        "pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="A param: key=value (string) or key:=JSON (number, bool, list...). Repeatable.",
    ),
    click.option("--params", "params_json", metavar="JSON", help="All params as a JSON object."),
    click.option("--id", "command_id", help="Command key (idempotency); default: generated."),
]


def with_params(func: F) -> F:
    """Add ``-p``/``--param``, ``--params`` and ``--id`` (see :func:`parse_params`)."""
    for option in reversed(params_options):
        func = option(func)
    return func
