"""Stream operations of the manager: ``stats``, ``dlq_list``, ``dlq_replay``, ``consumers`` and
the ``corec-kit manager stats|consumers|dlq list|replay`` commands.

The work itself lives in the kit (the stream operations of :mod:`corec_plugin_kit.api`), so the
actions answer the same from the stream, from ``corec-kit exec`` and from the CoreC adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO, cast

import click
from pydantic import BaseModel, ConfigDict, Field, model_validator

from corec_plugin_kit import CommandContext, InvalidParams


class StatsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DlqListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=10_000, description="entries per page")
    start: str = Field("-", description="first entry id, or `(id` to start after it (paging)")


class DlqReplayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list, description="dead-letter entry ids to replay")
    all: bool = Field(
        False, description="replay every dead letter present when the replay starts (each once)"
    )
    keep: bool = Field(False, description="leave the dead letters in place after replaying")

    @model_validator(mode="after")
    def _something(self) -> DlqReplayParams:
        if not self.ids and not self.all:
            raise ValueError("give `ids` (a list of dead-letter entry ids) or `all: true`")
        if self.ids and self.all:
            raise ValueError("give either `ids` or `all`, not both")
        return self


class ConsumersParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prune: bool = Field(
        False, description="remove consumers idle past `idle_ms` that own no pending entry"
    )
    idle_ms: int | None = Field(
        None, ge=1, description="the idle bound; default kernel.dead_consumer_idle_ms"
    )


async def stats(params: StatsParams, ctx: CommandContext) -> dict[str, Any]:
    """Lag, pending, stream lengths, breaker states and per-action record counts."""
    from corec_plugin_kit.api import redact_data, stream_stats

    # Errors are redacted where they are raised (CorecError); the output is redacted here, so
    # no text in it (a breaker's last error, a stream name) can carry a URL password.
    result: dict[str, Any] = redact_data(await stream_stats(ctx.kernel))
    return result


async def dlq_list(params: DlqListParams, ctx: CommandContext) -> dict[str, Any]:
    """List dead letters (oldest first) with their error and delivery count."""
    from corec_plugin_kit.api import dlq_list as list_dead

    return await list_dead(ctx.kernel, params.limit, params.start)


async def dlq_replay(params: DlqReplayParams, ctx: CommandContext) -> dict[str, Any]:
    """Put dead letters back on stream_in (their original fields) and remove them."""
    from corec_plugin_kit.api import dlq_replay as replay

    return await replay(ctx.kernel, params.ids, all_entries=params.all, keep=params.keep)


async def consumers(params: ConsumersParams, ctx: CommandContext) -> dict[str, Any]:
    """List the group's consumers (dead ones flagged); with `prune`, remove the dead ones."""
    from corec_plugin_kit.api import group_consumers

    try:
        return await group_consumers(ctx.kernel, prune=params.prune, idle_ms=params.idle_ms)
    except ValueError as exc:
        raise InvalidParams(
            str(exc), details=[{"loc": "idle_ms", "msg": str(exc), "type": "missing"}]
        ) from None


def register_operations(register: Any) -> None:
    register("stats", stats, StatsParams)
    register("dlq_list", dlq_list, DlqListParams)
    register("dlq_replay", dlq_replay, DlqReplayParams)
    register("consumers", consumers, ConsumersParams)


def add_cli(group: click.Group) -> None:
    """``corec-kit manager dlq list|replay``, ``corec-kit manager stats`` and ``consumers``."""
    from corec_plugin_kit.api import echo_json, pass_kernel

    def run(kernel: Any, coro_fn: Any) -> Any:
        import asyncio

        async def main() -> Any:
            async with kernel:
                return await coro_fn()

        return asyncio.run(main())

    @group.command("stats")
    @pass_kernel
    def stats_cmd(kernel: Any) -> None:
        """Lag, pending, stream lengths and per-action counts."""
        from corec_plugin_kit.api import redact_data, stream_stats

        echo_json(redact_data(run(kernel, lambda: stream_stats(kernel))))

    @group.command("consumers")
    @click.option("--prune", is_flag=True, help="Remove dead consumers (idle, owning nothing).")
    @click.option(
        "--idle-ms",
        type=click.IntRange(min=1),
        default=None,
        help="Idle bound in ms  [default: kernel.dead_consumer_idle_ms]",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_kernel
    def consumers_cmd(kernel: Any, prune: bool, idle_ms: int | None, as_json: bool) -> None:
        """The group's consumers; dead ones (idle past the bound, owning nothing) are marked."""
        from corec_plugin_kit.api import group_consumers

        try:
            report = run(kernel, lambda: group_consumers(kernel, prune=prune, idle_ms=idle_ms))
        except ValueError as exc:
            raise click.UsageError(f"{exc} (--idle-ms)") from None
        if as_json:
            echo_json(report)
            return
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

    @group.group("dlq")
    def dlq() -> None:
        """Inspect and replay the dead-letter stream."""

    @dlq.command("list")
    @click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
    @click.option("--start", default="-", help="First entry id, or (ID to continue after it.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_kernel
    def dlq_list_cmd(kernel: Any, limit: int, start: str, as_json: bool) -> None:
        """List dead letters, oldest first."""
        from corec_plugin_kit.api import dlq_list as list_dead

        page = run(kernel, lambda: list_dead(kernel, limit, start))
        if as_json:
            echo_json(page)
            return
        for entry in page["entries"]:
            error = entry["error"] or {}
            click.echo(
                f"{entry['entry_id']}  {entry['action'] or '?':<20} "
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

        --all replays the dead letters present when it starts, each once: those dead-lettered
        again meanwhile are left for the next replay.
        """
        from corec_plugin_kit.api import dlq_bound
        from corec_plugin_kit.api import dlq_replay as replay

        if not ids and not all_entries:
            raise click.UsageError("name dead-letter entry ids, or pass --all")
        until: str | None = None
        if all_entries:
            # The bound is read once, here: the bar's length is exactly what will be replayed.
            bound = run(kernel, lambda: dlq_bound(kernel))
            total, until = bound["total"], bound["until"]
            if until is None:
                click.echo(f"replayed 0 onto {kernel.settings.kernel.stream_in}")
                return
        else:
            total = len(ids)

        # click >= 8.5 serves get_text_stream through a module __getattr__ typed ``object``.
        get_text_stream = cast("Callable[[str], TextIO]", click.get_text_stream)
        bar: Any
        with click.progressbar(
            length=total, label="replaying", file=get_text_stream("stderr")
        ) as bar:
            outcome = run(
                kernel,
                lambda: replay(
                    kernel,
                    list(ids),
                    all_entries=all_entries,
                    keep=keep,
                    until=until,
                    progress=bar.update,
                ),
            )
        click.echo(f"replayed {len(outcome['replayed'])} onto {outcome['stream_in']}")
        if outcome["missing"]:
            click.echo(f"not found: {', '.join(outcome['missing'])}", err=True)
            raise SystemExit(1)
