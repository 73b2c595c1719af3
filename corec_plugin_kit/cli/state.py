"""What every ``corec-kit`` command shares: the global options' :class:`State` (and the kernel
built from them on first use), JSON output, ``-p``/``--params`` parsing, and the shell completion
of action names (:func:`complete_action`).

Imports click and ``errors`` only: ``config`` and ``kernel`` load when a command first asks for
the processors or the kernel (or when an action name is completed).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import CorecError, InvalidCommand

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from ..kernel import Kernel
    from ..routing import RoutingTable

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

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> State:
        """The state of the root group's parsed ``params`` (``--plugin`` exported as by the
        group itself): what shell completion uses, where the group's callback never runs."""
        export_plugins(tuple(params.get("plugins") or ()))
        return cls(
            params.get("config"),
            bool(params.get("debug")),
            bool(params.get("strict")),
            tuple(params.get("load") or ()),
            tuple(params.get("disable") or ()),
        )

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

    def routing(self) -> RoutingTable:
        """The routing table of the kernel; with a config that does not validate, the one of the
        processors alone (for completing action names, which must not need a valid config)."""
        try:
            return self.kernel().routing
        except CorecError:
            routing: RoutingTable = self.processors().routing()
            return routing


def export_plugins(plugins: tuple[str, ...]) -> None:
    """``--plugin`` values: appended to ``COREC_PLUGINS``, where the processor manager reads them
    (and the worker processes of ``run --workers`` inherit them)."""
    if plugins:
        existing = os.environ.get("COREC_PLUGINS")
        os.environ["COREC_PLUGINS"] = ",".join([*([existing] if existing else []), *plugins])


def get_state(ctx: click.Context | None = None) -> State:
    """The :class:`State` of this ``corec-kit`` invocation (of ``ctx``, default: the current one).

    The root group's callback makes it; where that callback has not run, it is made from the
    root context's parsed global options: shell completion resolves commands without running any
    callback (and without an active context, hence the ``ctx`` argument), and tests may invoke a
    subcommand without the group.
    """
    if ctx is None:
        ctx = click.get_current_context()
    state = ctx.find_object(State)
    if state is None:
        root = ctx.find_root()
        state = State.from_params(root.params)
        if root.obj is None:
            root.obj = state  # every context of this invocation finds it from now on
        else:
            ctx.obj = state
    return state


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep stdout, stderr and logging silent: while completing, anything a processor prints or
    logs as it loads would corrupt the completion protocol's answer or the user's command line."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def complete_action(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """``shell_complete`` callback of an action-name parameter (``exec ACTION``, ``--action``).

    The names come from the routing table, so the processors are imported (honouring the global
    options already on the line: ``-c``, ``--load``, ``--disable``, ``--plugin``, ``--strict``).
    Any failure completes nothing: a TAB never prints a traceback.
    """
    from click.shell_completion import CompletionItem

    try:
        with quiet():
            specs = sorted(get_state(ctx).routing().items())
    except Exception:  # noqa: BLE001 - completion offers nothing rather than a traceback
        return []
    return [
        CompletionItem(name, help=spec.description)
        for name, spec in specs
        if name.startswith(incomplete)
    ]


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
