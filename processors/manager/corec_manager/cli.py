"""``corec-kit manager stats|consumers|dlq list|replay|delete``: the manager's commands.

Each is a click command defined at module level; :func:`add_cli` (called from the ``corec_cli``
hook) mounts them on the ``corec-kit manager`` group. A command gets the configured kernel from
``pass_kernel``, runs one of the kit's stream operations (the same ones the actions in
:mod:`corec_manager.operations` run) with :func:`run_in_kernel`, and prints the answer as text
or, with ``--json``, as JSON. The stream operations are imported inside the commands, so
``corec-kit manager --help`` does not load Redis.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, TypeVar, cast

import click

from corec_plugin_kit.api import echo_json, pass_kernel

T = TypeVar("T")

#: ``--json``, shared by the commands that print text by default.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def add_cli(group: click.Group) -> None:
    """``corec-kit manager dlq list|replay|delete``, ``corec-kit manager stats``,
    ``consumers`` and ``console`` (the web console, :mod:`corec_manager.console`)."""
    from .console import console_cmd

    group.add_command(stats_cmd)
    group.add_command(consumers_cmd)
    group.add_command(dlq)
    group.add_command(console_cmd)


def run_in_kernel(kernel: Any, operation: Callable[[], Awaitable[T]]) -> T:
    """Run ``operation()`` inside ``async with kernel`` (connected, then closed); its result."""
    import asyncio

    async def main() -> T:
        async with kernel:
            return await operation()

    return asyncio.run(main())


# -- corec-kit manager stats --------------------------------------------------------------------


@click.command("stats")
@pass_kernel
def stats_cmd(kernel: Any) -> None:
    """Lag, pending, stream lengths and per-action counts."""
    from corec_plugin_kit.api import redact_data, stream_stats

    echo_json(redact_data(run_in_kernel(kernel, lambda: stream_stats(kernel))))


# -- corec-kit manager consumers ----------------------------------------------------------------


@click.command("consumers")
@click.option("--prune", is_flag=True, help="Remove dead consumers (idle, owning nothing).")
@click.option(
    "--idle-ms",
    type=click.IntRange(min=1),
    default=None,
    help="Idle bound in ms  [default: kernel.dead_consumer_idle_ms]",
)
@json_option
@pass_kernel
def consumers_cmd(kernel: Any, prune: bool, idle_ms: int | None, as_json: bool) -> None:
    """The group's consumers; dead ones (idle past the bound, owning nothing) are marked."""
    from corec_plugin_kit.api import group_consumers

    try:
        report = run_in_kernel(
            kernel, lambda: group_consumers(kernel, prune=prune, idle_ms=idle_ms)
        )
    except ValueError as exc:
        raise click.UsageError(f"{exc} (--idle-ms)") from None
    if as_json:
        echo_json(report)
    else:
        echo_consumers(report, prune)


def echo_consumers(report: dict[str, Any], prune: bool) -> None:
    """One line per consumer, a summary, then what was pruned or how to prune."""
    for consumer in report["consumers"]:
        mark = "  dead" if consumer["dead"] else ""
        click.echo(
            f"{consumer['name']:<40} pending={consumer['pending']}"
            f"  idle={consumer['idle_ms'] / 1000:.1f}s{mark}"
        )
    dead = sum(1 for c in report["consumers"] if c["dead"])
    click.echo(
        f"{len(report['consumers'])} consumers in {report['group']} on {report['stream']}"
        + (f", {dead} dead" if report["idle_ms"] is not None else "")
    )
    if prune:
        click.echo(f"removed {len(report['removed'])}: {', '.join(report['removed']) or '-'}")
    elif dead:
        click.echo("remove them: corec-kit manager consumers --prune")


# -- corec-kit manager dlq list|replay|delete ---------------------------------------------------


@click.group("dlq")
def dlq() -> None:
    """Inspect, replay and delete the dead-letter stream's entries."""


@dlq.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--start",
    default="-",
    help="First entry id, or (ID to continue after it (PARTITION/ID with kernel.partitions > 1).",
)
@json_option
@pass_kernel
def dlq_list_cmd(kernel: Any, limit: int, start: str, as_json: bool) -> None:
    """List dead letters, oldest first."""
    from corec_plugin_kit.api import dlq_list as list_dead

    page = run_in_kernel(kernel, lambda: list_dead(kernel, limit, start))
    if as_json:
        echo_json(page)
    else:
        echo_dead_letters(page)


def echo_dead_letters(page: dict[str, Any]) -> None:
    """One line per dead letter (id, action, deliveries, error), a count, the next page."""
    for entry in page["entries"]:
        error = entry["error"] or {}
        click.echo(
            f"{entry['ref']}  {entry['action'] or '?':<20} "
            f"deliveries={entry['deliveries']}"
            f"  {error.get('type', '?')}: {error.get('message', '')}"
        )
    click.echo(f"{len(page['entries'])} shown of {page['total']} in {page['stream']}")
    if page["next"]:
        click.echo(f"more: corec-kit manager dlq list --start '{page['next']}'")


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_entries", is_flag=True, help="Replay the dead letters present now.")
@click.option("--keep", is_flag=True, help="Keep the dead letters after replaying them.")
@pass_kernel
def dlq_replay_cmd(kernel: Any, ids: tuple[str, ...], all_entries: bool, keep: bool) -> None:
    """Put dead letters back on stream_in (by entry id, or --all), with progress.

    With kernel.partitions > 1, name them PARTITION/ID (as `dlq list` shows them); each goes
    back to its own partition's input stream.

    --all replays the dead letters present when it starts, each once: those dead-lettered
    again meanwhile are left for the next replay.
    """
    from corec_plugin_kit.api import dlq_bound

    if not ids and not all_entries:
        raise click.UsageError("name dead-letter entry ids, or pass --all")
    until: str | dict[str, str] | None = None
    if all_entries:
        # The bound is read once, here: the bar's length is exactly what will be replayed.
        bound = run_in_kernel(kernel, lambda: dlq_bound(kernel))
        total, until = bound["total"], bound["until"]
        if until is None:
            click.echo(f"replayed 0 onto {kernel.settings.kernel.stream_in}")
            return
    else:
        total = len(ids)
    outcome = replay_with_progress(kernel, list(ids), total, all_entries, keep, until)
    click.echo(f"replayed {len(outcome['replayed'])} onto {outcome['stream_in']}")
    exit_if_unfound(outcome)


def exit_if_unfound(outcome: dict[str, Any]) -> None:
    """Name the ids that were not found, or found in several partitions, and exit 1 then."""
    if outcome.get("ambiguous"):
        click.echo(
            f"in several partitions: {', '.join(outcome['ambiguous'])} (name them "
            "PARTITION/ID, as `corec-kit manager dlq list` shows them)",
            err=True,
        )
    if outcome["missing"]:
        click.echo(f"not found: {', '.join(outcome['missing'])}", err=True)
    if outcome["missing"] or outcome.get("ambiguous"):
        raise SystemExit(1)


def replay_with_progress(
    kernel: Any,
    ids: list[str],
    total: int,
    all_entries: bool,
    keep: bool,
    until: str | dict[str, str] | None,
) -> dict[str, Any]:
    """Replay ``ids`` (or, with ``all_entries``, those up to ``until``) with a bar on stderr."""
    from corec_plugin_kit.api import dlq_replay as replay

    # click >= 8.5 serves get_text_stream through a module __getattr__ typed ``object``.
    get_text_stream = cast("Callable[[str], TextIO]", click.get_text_stream)
    bar: Any
    with click.progressbar(length=total, label="replaying", file=get_text_stream("stderr")) as bar:
        outcome = run_in_kernel(
            kernel,
            lambda: replay(
                kernel,
                ids,
                all_entries=all_entries,
                keep=keep,
                until=until,
                progress=bar.update,
            ),
        )
    return outcome


@dlq.command("delete")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_entries", is_flag=True, help="Delete the dead letters present now.")
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
@pass_kernel
def dlq_delete_cmd(kernel: Any, ids: tuple[str, ...], all_entries: bool, yes: bool) -> None:
    """Delete dead letters for good (by entry id, or --all), after asking.

    For dead letters that cannot be fixed and replayed. With kernel.partitions > 1, name them
    PARTITION/ID (as `dlq list` shows them). Asks "delete N dead letters from STREAM? [y/N]"
    first (on stderr) unless --yes; exits 1 when one is not found, or when the answer is no.

    --all deletes the dead letters present when it starts: those dead-lettered meanwhile
    stay, so it can empty the stream while workers run.
    """
    from corec_plugin_kit.api import dlq_bound, dlq_delete

    if not ids and not all_entries:
        raise click.UsageError("name dead-letter entry ids, or pass --all")
    if ids and all_entries:
        raise click.UsageError("name dead-letter entry ids or pass --all, not both")
    refs = list(dict.fromkeys(ids))
    malformed = [ref for ref in refs if not ENTRY_REF.fullmatch(ref)]
    if malformed:  # before asking: the answer would not matter
        raise click.BadParameter(
            f"{', '.join(malformed)}: name dead letters as `corec-kit manager dlq list` shows "
            "them, MILLISECONDS-SEQUENCE (e.g. 1712345678901-0) or PARTITION/MILLISECONDS-"
            "SEQUENCE",
            param_hint="IDS",
        )
    until: str | dict[str, str] | None = None
    if all_entries:
        # The bound is read once, here: the count asked about is exactly what is deleted.
        bound = run_in_kernel(kernel, lambda: dlq_bound(kernel))
        total, stream, until = bound["total"], bound["stream"], bound["until"]
        if until is None:
            click.echo(f"deleted 0 dead letters from {stream}")
            return
    else:
        total, stream = len(refs), shown_dead_letter_stream(kernel)
    if not yes:
        confirm_delete(total, stream)
    outcome = run_in_kernel(
        kernel, lambda: dlq_delete(kernel, refs, all_entries=all_entries, until=until)
    )
    click.echo(f"deleted {dead_letters(outcome['count'])} from {outcome['stream']}")
    exit_if_unfound(outcome)


#: A dead letter's ref as `dlq list` shows it (the kit checks it again, partitions included).
ENTRY_REF = re.compile(r"(\d+/)?\d+-\d+")


def dead_letters(count: int) -> str:
    """``1 dead letter``, ``2 dead letters``."""
    return f"{count} dead letter{'' if count == 1 else 's'}"


def shown_dead_letter_stream(kernel: Any) -> str:
    """The dead-letter stream's name, and how many partitions it has when more than one."""
    cfg = kernel.settings.kernel
    name: str = cfg.dead_letter_stream
    return name if cfg.partitions == 1 else f"{name} ({cfg.partitions} partitions)"


def confirm_delete(total: int, stream: str) -> None:
    """Ask on stderr before deleting; no, or no answer (stdin closed), deletes nothing and
    exits 1, so a script that forgot --yes fails instead of deleting."""
    try:
        agreed = click.confirm(f"delete {dead_letters(total)} from {stream}?", err=True)
    except click.Abort:  # end of input: nobody to ask
        click.echo("", err=True)
        agreed = False
    if not agreed:
        click.echo("nothing deleted (pass --yes to delete without asking)", err=True)
        raise SystemExit(1)
