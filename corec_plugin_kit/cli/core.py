"""The ``corec-kit`` root group: global options, lazy mounting of every command, error printing
and :func:`main`.

Start-up stays cheap: this module imports click, ``errors``, ``redaction`` and
:mod:`corec_plugin_kit.cli.state`. The commands live in the other modules of this package (and
in ``corec_install``) and are imported only through :data:`LAZY_COMMANDS`, when one of them is
run or its own ``--help`` is asked for; each processor's commands are mounted as a lazy group. So
``--help`` and shell completion never import a command's module, processor code, pydantic,
redis, asyncpg or jinja2, and no command module is imported by this one.

Shell completion (click's protocol, see :meth:`KitGroup._main_shell_completion`) runs no group
callback and has no active context: :class:`ProcessorGroup` finds the global options through the
context click hands it, ``--load``/``--disable`` complete the entry points' names (no import),
and whatever fails while completing completes nothing instead of printing a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import __version__
from ..errors import EXIT_INTERNAL, CorecError
from ..redaction import install_log_redaction, redact
from .state import F, State, export_plugins, get_state, quiet

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

PROG = "corec-kit"
COMPLETE_VAR = "_COREC_KIT_COMPLETE"

# Every command of the kit: name -> (module, attribute, summary). A command's module is imported
# only when it is run (or when its own --help is asked for); `corec-kit --help` and shell
# completion show the summary, which a test keeps equal to the command's first help line.
LAZY_COMMANDS = {
    "list-processors": (
        "corec_plugin_kit.cli.processors",
        "list_processors",
        "List installed processors: name, distribution, version, status, reason, actions.",
    ),
    "actions": (
        "corec_plugin_kit.cli.processors",
        "actions",
        "Show the routing table: each action and the processor that claims it.",
    ),
    "describe": (
        "corec_plugin_kit.cli.processors",
        "describe",
        "Print an action's description and the JSON Schema of its params.",
    ),
    "exec": (
        "corec_plugin_kit.cli.processors",
        "exec_",
        "Run one command in-process (no Redis) and print its result envelope.",
    ),
    "check": (
        "corec_plugin_kit.cli.check",
        "check",
        "Validate the config and reach Redis and the database.",
    ),
    "completion": (
        "corec_plugin_kit.cli.completion",
        "completion",
        "Print the shell completion script (click's built-in completion).",
    ),
    "run": (
        "corec_plugin_kit.cli.run",
        "run",
        "Run the worker: read commands from stream_in, dispatch, write results.",
    ),
    "send": (
        "corec_plugin_kit.cli.run",
        "send",
        "Queue one command on stream_in (XADD). Prints its id, or its result with --wait.",
    ),
    "streams": (
        "corec_plugin_kit.cli.run",
        "streams",
        "Print the stream names of every partition, or the partition of a command id.",
    ),
    "asyncapi": (
        "corec_plugin_kit.cli.asyncapi",
        "asyncapi",
        "Print the AsyncAPI 3.0 document of this install's streams, commands and results.",
    ),
    "history": (
        "corec_plugin_kit.cli.history",
        "history",
        "Show command records (newest first) from the records database.",
    ),
    "corec": (
        "corec_plugin_kit.corec_install",
        "corec",
        "Install the kit as a plugin into a CoreC tree.",
    ),
}


# --------------------------------------------------------------------------- groups


class ProcessorGroup(click.Group):
    """A processor's commands; its code is imported only when the group is used.

    The group fills itself from the :class:`State` of the context click passes (not the current
    one: shell completion resolves commands with no active context and no group callback run).
    While completing (a resilient context) the processors load silently, and a processor that is
    unavailable or fails offers no commands.
    """

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text, short_help=help_text)
        self._filled = False

    def _fill(self, ctx: click.Context) -> None:
        if self._filled:
            return
        self._filled = True
        if not ctx.resilient_parsing:
            self._add_commands(ctx)
            return
        # Completing: a processor that is unavailable or fails offers no commands, silently.
        with contextlib.suppress(Exception), quiet():
            self._add_commands(ctx)

    def _add_commands(self, ctx: click.Context) -> None:
        # The processor's corec_cli hook may itself look for the current context.
        with ctx.scope(cleanup=False):
            processors = get_state(ctx).processors()
            if processors.add_cli(self.name, self):
                return
        info = processors.infos.get(self.name)
        why = f"{info.status}: {info.reason}" if info else "not installed"
        raise CorecError(
            f"processor {self.name!r} is not available ({why}); see `corec-kit list-processors`",
            details=None,
        )

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            self._fill(ctx)
        except CorecError:
            return []
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._fill(ctx)
        return super().get_command(ctx, cmd_name)


def _entry_points() -> list[Any]:
    """The ``corec.processors`` entry points, sorted by name.

    The same list as :func:`corec_plugin_kit.plugins.processor_entry_points`, read without
    importing the processor manager (pluggy, routing): ``--help`` and completion only need names.
    """
    from importlib import metadata

    return sorted(metadata.entry_points(group="corec.processors"), key=lambda ep: ep.name)


def _plugin_name(spec: str) -> str:
    """The processor name of a ``--plugin``/``COREC_PLUGINS`` value ``[NAME=]MODULE``."""
    name, _, module = spec.strip().rpartition("=")
    return name or module.rsplit(".", 1)[-1]


def complete_processor(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """``shell_complete`` of ``--load``/``--disable``: the installed processors' entry-point names
    and the ``--plugin``/``COREC_PLUGINS`` names, without importing any processor; the names
    already given to the same option are left out."""
    from click.shell_completion import CompletionItem

    try:
        names = {ep.name: f"processor ({ep.value})" for ep in _entry_points()}
        specs = [*os.environ.get("COREC_PLUGINS", "").split(","), *ctx.params.get("plugins", ())]
        for spec in filter(None, (spec.strip() for spec in specs)):
            names.setdefault(_plugin_name(spec), f"--plugin {spec}")
        given = set(ctx.params.get(param.name or "") or ())
    except Exception:  # noqa: BLE001 - completion offers nothing rather than a traceback
        return []
    return [
        CompletionItem(name, help=text)
        for name, text in sorted(names.items())
        if name.startswith(incomplete) and name not in given
    ]


class KitGroup(click.Group):
    """Top-level group: the kit's commands plus one lazy group per installed processor."""

    def _lazy(self, name: str) -> click.Command | None:
        spec = LAZY_COMMANDS.get(name)
        if spec is None:
            return None
        from importlib import import_module

        try:
            command: click.Command = getattr(import_module(spec[0]), spec[1])
        except (ImportError, AttributeError):
            return None  # that part of the kit is not built into this install
        self.commands[name] = command
        return command

    def _processor_names(self) -> dict[str, str]:
        names = {}
        for ep in _entry_points():
            if ep.name in self.commands or ep.name in LAZY_COMMANDS:
                continue
            dist = getattr(ep, "dist", None)
            where = f" ({dist.metadata['Name']} {dist.version})" if dist is not None else ""
            names[ep.name] = f"Commands of the {ep.name} processor{where}."
        return names

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(LAZY_COMMANDS)) + sorted(self._processor_names())

    def _summaries(self, ctx: click.Context, names: list[str], limit: int) -> list[tuple[str, str]]:
        """(name, short help) of these commands, without importing the lazy ones."""
        rows = []
        for name in names:
            if name in LAZY_COMMANDS and name not in self.commands:
                summary = click.Command(name, help=LAZY_COMMANDS[name][2])
                rows.append((name, summary.get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        return rows

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        rows = self._summaries(ctx, names, formatter.width - 6 - max(map(len, names)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        items = [
            CompletionItem(name, help=text)
            for name, text in self._summaries(
                ctx, [n for n in self.list_commands(ctx) if n.startswith(incomplete)], 45
            )
        ]
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        lazy = self._lazy(cmd_name)
        if lazy is not None:
            return lazy
        help_text = self._processor_names().get(cmd_name)
        if help_text is None:
            return None
        return ProcessorGroup(cmd_name, help_text)

    def _main_shell_completion(
        self, ctx_args: MutableMapping[str, Any], prog_name: str, complete_var: str | None = None
    ) -> None:
        """Answer click's completion protocol (``_COREC_KIT_COMPLETE=bash_complete`` ...) and
        exit, as click does; anything that fails on the way completes nothing (exit 1, no
        output, no traceback on the user's command line)."""
        try:
            super()._main_shell_completion(ctx_args, prog_name, complete_var)
        except Exception:  # noqa: BLE001 - click's Exit included: a TAB never shows a traceback
            sys.exit(1)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Aborted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # `corec-kit actions | head -3`: the reader left; stop quietly, as a process killed
            # by SIGPIPE would (exit 141), and keep Python from failing again at its exit flush.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except Exception as exc:  # noqa: BLE001 - the last resort: one line, or --debug's traceback
            _fail(ctx, exc)


# --------------------------------------------------------------------------- errors


def _fail(ctx: click.Context, exc: Exception) -> NoReturn:
    """Exit with ``exc``'s code: one redacted line, or the traceback with ``--debug``.

    A :class:`CorecError` says what to do and exits with its own code; anything else is a bug of
    the kit or of a processor (EXIT_INTERNAL).
    """
    if _debug(ctx):
        _print_traceback(exc)
    elif isinstance(exc, CorecError):
        click.echo(f"Error: {redact(exc.message)}", err=True)
    else:
        click.echo(
            redact(
                f"Internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
                "traceback, and report it)"
            ),
            err=True,
        )
    ctx.exit(exc.exit_code if isinstance(exc, CorecError) else EXIT_INTERNAL)


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(State)
    return state is not None and state.debug


def _print_traceback(exc: BaseException) -> None:
    """``--debug``: the full traceback (chained exceptions too), URL passwords redacted."""
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    click.echo(redact(text.rstrip("\n")), err=True)


# --------------------------------------------------------------------------- root group


def _version_message() -> str:
    lines = [f"{PROG} {__version__} (corec-plugin-kit, Python {sys.version.split()[0]})"]
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        version = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "?"
        lines.append(f"  {ep.name}: {version}")
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit(0)


global_options = [
    click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_version,
        help="Show the kernel's and each processor's version, then exit.",
    ),
    click.option(
        "-c",
        "--config",
        type=click.Path(dir_okay=False),
        envvar="COREC_CONFIG",
        help="Config file, JSON or TOML. [env: COREC_CONFIG; default: ./corec.json if present]",
    ),
    click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors."),
    click.option(
        "--strict",
        is_flag=True,
        help="A processor that fails to load is fatal. [env: COREC_STRICT_PROCESSORS=1]",
    ),
    click.option(
        "--load",
        multiple=True,
        metavar="NAME",
        shell_complete=complete_processor,
        help="Load only these processors (repeatable). [env: COREC_LOAD_PROCESSORS=a,b]",
    ),
    click.option(
        "--disable",
        multiple=True,
        metavar="NAME",
        shell_complete=complete_processor,
        help="Never load these processors (repeatable). [env: COREC_DISABLE_PROCESSORS=a,b]",
    ),
    click.option(
        "--plugin",
        "plugins",
        multiple=True,
        metavar="MODULE",
        help="Also load this module as a processor, uninstalled (repeatable; [NAME=]MODULE). "
        "[env: COREC_PLUGINS=a,b]",
    ),
]


def with_global_options(func: F) -> F:
    for option in reversed(global_options):
        func = option(func)
    return func


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@with_global_options
@click.pass_context
def cli(
    ctx: click.Context,
    config: str | None,
    debug: bool,
    strict: bool,
    load: tuple[str, ...],
    disable: tuple[str, ...],
    plugins: tuple[str, ...],
) -> None:
    """Run and inspect CoreC processors.

    Processors are packages that claim command actions (entry-point group corec.processors).
    Commands arrive on a Redis stream; `corec-kit run` is the worker. Exit codes: 0 ok,
    1 handler error, 2 invalid command or unknown action, 3 config error, 4 processor error,
    5 Redis unreachable, 6 database unreachable, 70 internal error.
    """
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG)
    # Every log line of the kit (and, with --debug, of its libraries) has URL passwords redacted.
    install_log_redaction(root_handlers=debug)
    export_plugins(plugins)
    ctx.obj = State(config, debug, strict, load, disable)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name=PROG, complete_var=COMPLETE_VAR)
