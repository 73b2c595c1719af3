"""``corec-kit run`` (the worker), ``corec-kit send`` (queue one command on the stream) and
``corec-kit streams`` (the streams of every partition).

Mounted lazily by :mod:`corec_plugin_kit.cli.core` (``LAZY_COMMANDS``); module level imports
click and the cli package's state only (fast ``--help``): the worker's wiring
(``runtime/service``) and the stream operations (``runtime/ops``) load when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import EXIT_HANDLER_ERROR, exit_code_for
from .state import complete_action, echo_json, get_state, parse_params, with_params

if TYPE_CHECKING:
    from ..kernel import Kernel


def _asyncio_run(coro: Any) -> Any:
    """Run on uvloop when it is installed (faster stream loop), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        import asyncio

        return asyncio.run(coro)
    return uvloop.run(coro)


@click.command("run")
@click.option("--burst", is_flag=True, help="Exit 0 once no new or reclaimable entry is left.")
@click.option(
    "--concurrency", type=click.IntRange(1), help="Commands in flight (kernel.concurrency)."
)
@click.option("--max-commands", type=click.IntRange(1), help="Stop after acknowledging N commands.")
@click.option("--consumer", help="Consumer name in the group (default: host-pid).")
@click.option(
    "--workers",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Worker processes on this host under one supervisor, which restarts any that dies and "
    "serves one metrics endpoint for all (auto: one per CPU). Consumers are named <consumer>-<i>.",
)
@click.option("--quiet", "-q", is_flag=True, help="Do not print the summary at exit.")
@click.option("--metrics-snapshot", type=click.Path(file_okay=False, path_type=Path), hidden=True)
def run(
    burst: bool,
    concurrency: int | None,
    max_commands: int | None,
    consumer: str | None,
    workers: str,
    quiet: bool,
    metrics_snapshot: Path | None,
) -> None:
    """Run the worker: read commands from stream_in, dispatch, write results.

    Runs until SIGTERM or Ctrl-C (finishing in-flight commands within shutdown_grace_s, then
    exit 0), or with --burst until the stream is drained. For several workers on one host use
    --workers; on other hosts start more `corec-kit run`: they all join one consumer group.
    """
    from ..runtime.supervisor import worker_count

    try:
        count = worker_count(workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers") from None
    state = get_state()
    _configure_logging(state.debug, f"[{consumer}] " if metrics_snapshot else "")
    kernel = state.kernel()
    if count > 1:
        run_args = [*(["--burst"] if burst else [])]
        run_args += [*(["--concurrency", str(concurrency)] if concurrency else [])]
        run_args += [*(["--max-commands", str(max_commands)] if max_commands else [])]
        _supervise(kernel, count, consumer, run_args, concurrency=concurrency, quiet=quiet)
        return
    from ..runtime.service import run_worker

    stats = _asyncio_run(
        run_worker(
            kernel,
            burst=burst,
            max_commands=max_commands,
            concurrency=concurrency,
            consumer=consumer,
            install_signals=True,
            metrics_snapshot=metrics_snapshot,
        )
    )
    if not quiet:
        summary = ", ".join(f"{k}={v}" for k, v in stats.as_dict().items())
        click.echo(f"worker stopped: {summary}", err=True)


def _configure_logging(debug: bool, prefix: str) -> None:
    import logging

    from ..redaction import install_log_redaction

    if not debug:
        logging.basicConfig(
            level=logging.INFO, format=f"%(asctime)s %(levelname)s {prefix}%(message)s"
        )
    # The root handler redacts URL passwords in every line, the libraries' lines included.
    install_log_redaction(root_handlers=True)


def _global_args() -> list[str]:
    """The global options of this invocation, for the worker processes (--plugin travels in
    COREC_PLUGINS, which the group exported)."""
    state = get_state()
    args = [*(["-c", state.config] if state.config else [])]
    args += [*(["--debug"] if state.debug else []), *(["--strict"] if state.strict else [])]
    for name in state.load or []:
        args += ["--load", name]
    for name in state.disable:
        args += ["--disable", name]
    return args


def _supervise(
    kernel: Kernel,
    count: int,
    consumer: str | None,
    run_args: list[str],
    *,
    concurrency: int | None,
    quiet: bool,
) -> None:
    """``--workers N``: start the workers under a supervisor; exit with its code."""
    import logging

    from ..runtime.connection import RedisHandle
    from ..runtime.service import metrics_display, startup_line
    from ..runtime.supervisor import Supervisor, worker_argv

    cfg = kernel.settings.kernel
    base = consumer or cfg.consumer_name()
    supervisor = Supervisor(
        worker_argv(_global_args(), run_args),
        count,
        base,
        grace=cfg.shutdown_grace_s,
    )
    try:
        server = supervisor.serve_metrics(cfg.metrics_port, cfg.metrics_addr)
        line = startup_line(
            kernel, redis=RedisHandle(cfg).display, consumer=f"{base}-0..{count - 1}",
            concurrency=concurrency or cfg.concurrency,
            metrics=metrics_display(cfg.metrics_port, cfg.metrics_addr), workers=count,
        )  # fmt: skip
        logging.getLogger("corec_plugin_kit.supervisor").info("%s", line)
        code = supervisor.run()
        if server is not None:
            server.shutdown()
            server.server_close()
        if not quiet:
            summary = ", ".join(f"{k}={v}" for k, v in supervisor.stats().items())
            click.echo(f"workers stopped: {summary}", err=True)
    finally:
        supervisor.close()
    if code:
        sys.exit(code)


@click.command("send")
@click.argument("action", shell_complete=complete_action)
@with_params
@click.option("--reply-to", help="Stream for the result (default: kernel.stream_out).")
@click.option("--flat", is_flag=True, help="Send CoreC's flat fields instead of one payload field.")
@click.option(
    "--codex",
    is_flag=True,
    help="Send codex's form: one `data` field (the reply then carries codex's `data` too).",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds --wait waits.")
def send(
    action: str,
    pairs: tuple[str, ...],
    params_json: str | None,
    command_id: str | None,
    reply_to: str | None,
    flat: bool,
    codex: bool,
    wait: bool,
    timeout: float,
) -> None:
    """Queue one command on stream_in (XADD). Prints its id, or its result with --wait.

    Exit codes with --wait are those of `exec` (0 ok, 1 handler error, 2 invalid command);
    a result that does not arrive in time exits 1 and leaves the command queued.
    """
    from ..runtime.ops import send_command

    if flat and codex:
        raise click.UsageError("--flat and --codex are two different forms; pick one")
    params = parse_params(pairs, params_json)
    kernel = get_state().kernel()
    ticker = _Ticker(timeout) if wait and sys.stderr.isatty() else None
    outcome = _asyncio_run(
        send_command(
            kernel,
            action,
            params,
            command_id=command_id,
            reply_to=reply_to,
            flat=flat,
            codex=codex,
            wait=timeout if wait else None,
            on_sent=_say_who_reads,
            progress=ticker,
        )
    )
    if ticker is not None:
        ticker.done()
    if wait:
        _print_result(outcome, timeout)
    else:
        echo_json(
            {"id": outcome["id"], "entry_id": outcome["entry_id"], "stream": outcome["stream"]}
        )


def _readers_text(readers: dict[str, Any] | None) -> str:
    if readers is None:
        return "is a worker running? start one with `corec-kit run`"
    if not readers["consumers"]:
        return (
            f"no worker reads it: the group {readers['group']} has no consumer; start one with "
            "`corec-kit run`"
        )
    return (
        f"{readers['consumers']} consumer(s) in the group {readers['group']}, "
        f"{readers['pending']} entries pending, lag {readers['lag']}: the workers are busy or "
        "stuck; see `corec-kit manager stats`"
    )


def _say_who_reads(outcome: dict[str, Any]) -> None:
    """``send --wait``: say at once when no worker reads the stream (rather than after the
    whole wait)."""
    readers = outcome.get("readers")
    if readers is not None and not readers["consumers"]:
        click.echo(
            f"Warning: {outcome['stream']}: {_readers_text(readers)}; waiting anyway", err=True
        )


class _Ticker:
    """``send --wait`` on a terminal: one status line on stderr, rewritten every second."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.shown = False

    def __call__(self, waited: float) -> None:
        click.echo(f"\rwaiting for the result: {waited:.0f}s of {self.timeout:g}s", nl=False,
                   err=True)  # fmt: skip
        self.shown = True

    def done(self) -> None:
        if self.shown:
            click.echo("\r\033[K", nl=False, err=True)  # clear the status line


def _print_result(outcome: dict[str, Any], timeout: float) -> None:
    """``send --wait``: print the result, exit as ``exec`` does (1 when none came in time)."""
    result = outcome.get("result")
    if result is None:
        click.echo(
            f"Error: no result for {outcome['id']} within {timeout:g}s; it stays queued on "
            f"{outcome['stream']} ({_readers_text(outcome.get('readers'))})",
            err=True,
        )
        sys.exit(EXIT_HANDLER_ERROR)
    echo_json(result)
    if result.get("status") != "ok":
        sys.exit(exit_code_for(str((result.get("error") or {}).get("type", ""))))


@click.command("streams")
@click.option("--id", "command_id", help="Print only the partition a command with this id goes to.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def streams(command_id: str | None, as_json: bool) -> None:
    """Print the stream names of every partition, or the partition of a command id.

    With kernel.partitions = P (default 1) commands are spread over P input streams; a
    command goes to partition crc32(id) % P, and its result to that partition's result
    stream. Producers that do not use `corec-kit send` pick the names from here. Each
    line: partition, hash slot, input stream, result stream, dead-letter stream.
    """
    from redis.crc import key_slot

    from ..partitions import stream_sets, streams_for

    cfg = get_state().kernel().settings.kernel
    sets = [streams_for(cfg, command_id)] if command_id is not None else list(stream_sets(cfg))
    rows = [
        {
            "partition": s.index,
            "slot": key_slot(s.stream_in.encode()),
            "stream_in": s.stream_in,
            "stream_out": s.stream_out,
            "dead_letter_stream": s.dead_letter_stream,
        }
        for s in sets
    ]
    if as_json:
        echo_json(rows if command_id is None else rows[0])
        return
    for row in rows:
        click.echo(
            f"{row['partition']}\tslot {row['slot']}\t{row['stream_in']}\t{row['stream_out']}"
            f"\t{row['dead_letter_stream']}"
        )
