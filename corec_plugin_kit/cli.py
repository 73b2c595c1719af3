"""``corec-kit``: the command line.

Start-up stays cheap: this module imports click and the error types only. Commands import what
they need when they run, and each processor's commands are mounted as a lazy group, so
``--help`` and shell completion never import processor code, pydantic, redis, asyncpg or jinja2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .errors import (
    EXIT_HANDLER_ERROR,
    EXIT_INTERNAL,
    EXIT_INVALID_COMMAND,
    CorecError,
    InvalidCommand,
)
from .redaction import install_log_redaction, redact, redact_data

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from .kernel import Kernel

F = TypeVar("F", bound=Callable[..., Any])

PROG = "corec-kit"
COMPLETE_VAR = "_COREC_KIT_COMPLETE"
WIRE_EXIT = {
    "invalid_command": EXIT_INVALID_COMMAND,
    "unknown_action": EXIT_INVALID_COMMAND,
    "invalid_params": EXIT_INVALID_COMMAND,
}


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
            from .config import load_settings
            from .kernel import manager_for

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
            from .kernel import Kernel

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
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(get_state().kernel(), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# --------------------------------------------------------------------------- groups


class ProcessorGroup(click.Group):
    """A processor's commands; its code is imported only when the group is used."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text, short_help=help_text)
        self._filled = False

    def _fill(self) -> None:
        if self._filled:
            return
        self._filled = True
        state = get_state()
        processors = state.processors()
        if not processors.add_cli(self.name, self):
            info = processors.infos.get(self.name)
            why = f"{info.status}: {info.reason}" if info else "not installed"
            raise CorecError(
                f"processor {self.name!r} is not available ({why}); "
                "see `corec-kit list-processors`",
                details=None,
            )

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            self._fill()
        except CorecError:
            return []
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._fill()
        return super().get_command(ctx, cmd_name)


# Commands defined in other modules of the kit: name -> (module, attribute, summary). They are
# imported only when run (or when their own --help is asked for); `corec-kit --help` and shell
# completion show the summary, which a test keeps equal to the command's first help line.
LAZY_COMMANDS = {
    "run": (
        "corec_plugin_kit.runtime.cli",
        "run",
        "Run the worker: read commands from stream_in, dispatch, write results.",
    ),
    "send": (
        "corec_plugin_kit.runtime.cli",
        "send",
        "Queue one command on stream_in (XADD). Prints its id, or its result with --wait.",
    ),
    "history": (
        "corec_plugin_kit.storage.cli",
        "history",
        "Show command records (newest first) from the records database.",
    ),
    "corec": (
        "corec_plugin_kit.corec_install",
        "corec",
        "Install the kit as a plugin into a CoreC tree.",
    ),
}


def _entry_points() -> list[Any]:
    """The ``corec.processors`` entry points, sorted by name.

    The same list as :func:`corec_plugin_kit.plugins.processor_entry_points`, read without
    importing the processor manager (pluggy, routing): ``--help`` and completion only need names.
    """
    from importlib import metadata

    return sorted(metadata.entry_points(group="corec.processors"), key=lambda ep: ep.name)


class KitGroup(click.Group):
    """Top-level group: built-in commands plus one lazy group per installed processor."""

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
            if ep.name in self.commands:
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

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CorecError as exc:
            if _debug(ctx):
                _print_traceback(exc)
                ctx.exit(exc.exit_code)
            click.echo(f"Error: {redact(exc.message)}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Aborted.", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last resort: one line, or --debug's traceback
            if _debug(ctx):
                _print_traceback(exc)
                ctx.exit(EXIT_INTERNAL)
            click.echo(
                redact(
                    f"Internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
                    "traceback, and report it)"
                ),
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(State)
    return state is not None and state.debug


def _print_traceback(exc: BaseException) -> None:
    """``--debug``: the full traceback (chained exceptions too), URL passwords redacted."""
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    click.echo(redact(text.rstrip("\n")), err=True)


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


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the kernel's and each processor's version, then exit.",
)
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False),
    envvar="COREC_CONFIG",
    help="Config file, JSON or TOML. [env: COREC_CONFIG; default: ./corec.json if present]",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option(
    "--strict",
    is_flag=True,
    help="A processor that fails to load is fatal. [env: COREC_STRICT_PROCESSORS=1]",
)
@click.option(
    "--load",
    multiple=True,
    metavar="NAME",
    help="Load only these processors (repeatable). [env: COREC_LOAD_PROCESSORS=a,b]",
)
@click.option(
    "--disable",
    multiple=True,
    metavar="NAME",
    help="Never load these processors (repeatable). [env: COREC_DISABLE_PROCESSORS=a,b]",
)
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE",
    help="Also load this module as a processor, uninstalled (repeatable; [NAME=]MODULE). "
    "[env: COREC_PLUGINS=a,b]",
)
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
    if plugins:
        existing = os.environ.get("COREC_PLUGINS")
        os.environ["COREC_PLUGINS"] = ",".join([*([existing] if existing else []), *plugins])
    ctx.obj = State(config, debug, strict, load, disable)


# --------------------------------------------------------------------------- inspection


@cli.command("list-processors")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--strict", is_flag=True, help="Exit 4 if any processor failed to load.")
def list_processors(as_json: bool, strict: bool) -> None:
    """List installed processors: name, distribution, version, status, reason, actions."""
    state = get_state()
    processors = state.processors()
    infos = [info.as_dict() for info in processors.infos.values()]
    if as_json:
        echo_json(infos)
    else:
        for info in infos:
            dist = f"{info['distribution']} {info['version']}" if info["distribution"] else "-"
            line = f"{info['name']:<14} {info['status']:<9} {dist}"
            if info["actions"]:
                line += f"  actions: {', '.join(info['actions'])}"
            click.echo(line)
            if info["reason"]:
                click.echo(f"{'':<14} reason: {info['reason']}")
        if not infos:
            click.echo("no processors installed (pip install corec-manager, or see README)")
    failed = [info["name"] for info in infos if info["status"] == "failed"]
    if strict and failed:
        from .errors import ProcessorError

        raise ProcessorError(f"processors failed to load: {', '.join(failed)} (see the reasons)")


@cli.command("actions")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def actions(as_json: bool) -> None:
    """Show the routing table: each action and the processor that claims it."""
    kernel = get_state().kernel()
    rows = {
        name: {
            "processor": spec.processor,
            "distribution": spec.distribution,
            "blocking": spec.blocking,
            "description": spec.description,
        }
        for name, spec in sorted(kernel.routing.items())
    }
    if as_json:
        echo_json(rows)
        return
    for name, row in rows.items():
        click.echo(f"{name:<22} {row['processor']:<12} {row['description']}")


@cli.command("describe")
@click.argument("action")
def describe(action: str) -> None:
    """Print an action's description and the JSON Schema of its params."""
    kernel = get_state().kernel()
    echo_json(kernel.routing.route(action).describe())


# --------------------------------------------------------------------------- commands


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
    for option in reversed(params_options):
        func = option(func)
    return func


@cli.command("exec")
@click.argument("action")
@with_params
def exec_(
    action: str, pairs: tuple[str, ...], params_json: str | None, command_id: str | None
) -> None:
    """Run one command in-process (no Redis) and print its result envelope.

    Exit 0 when the handler succeeded, 1 on a handler error or timeout, 2 when the command is
    invalid (unknown action, invalid params).

    \b
    Example:
      corec-kit exec ping
      corec-kit exec generate_plugin -p plugin_name=my_plugin -p dry_run:=true
    """
    import asyncio

    params = parse_params(pairs, params_json)
    kernel = get_state().kernel()
    command: dict[str, Any] = {"action": action, "params": params}
    if command_id:
        command["id"] = command_id

    async def run() -> dict[str, Any]:
        async with kernel:
            return await kernel.execute(command)

    envelope = asyncio.run(run())
    if envelope["status"] != "ok" and envelope.get("error"):
        envelope["error"] = redact_data(envelope["error"])
    echo_json(envelope)
    if envelope["status"] != "ok":
        err = envelope["error"] or {}
        click.echo(f"Error: {redact(str(err.get('message')))}", err=True)
        sys.exit(WIRE_EXIT.get(err.get("type", ""), EXIT_HANDLER_ERROR))


@cli.command("check")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(config_file: str | None, as_json: bool) -> None:
    """Validate the config and reach Redis and the database.

    Exit 0 when all is well, 3 for a config error, 4 for a processor error, 5 when Redis cannot
    be reached, 6 when the database cannot be reached.
    """
    import asyncio

    from .health import run_checks

    state = get_state()
    if config_file:
        state.config = config_file
    report, exit_code = asyncio.run(run_checks(state))
    warnings = state._kernel.settings.warnings if state._kernel is not None else []
    if warnings and report.get("config", {}).get("ok"):
        # Keys of a CoreC/codex-style config that mean nothing here (errors with --strict).
        report["config"]["detail"] += f"; {len(warnings)} warning(s): " + "; ".join(warnings)
        report["config"]["warnings"] = warnings
    report = redact_data(report)  # the details quote URLs; never their passwords
    if as_json:
        echo_json(report)
    else:
        for name, entry in report.items():
            mark = "ok " if entry["ok"] else "FAIL"
            click.echo(f"[{mark}] {name}: {entry['detail']}")
    if exit_code:
        sys.exit(exit_code)


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (click's built-in completion).

    \b
    bash:  eval "$(corec-kit completion bash)"   (or save it under ~/.bash_completion.d/)
    zsh:   eval "$(corec-kit completion zsh)"
    fish:  corec-kit completion fish > ~/.config/fish/completions/corec-kit.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click knows all three shells
    click.echo(cls(cli, {}, PROG, COMPLETE_VAR).source())


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name=PROG, complete_var=COMPLETE_VAR)


if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["cli", "get_state", "main", "pass_kernel"]
