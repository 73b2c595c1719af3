"""Stream operations of the manager: ``stats``, ``dlq_list``, ``dlq_replay`` and the
``corec-kit manager dlq list|replay`` commands.

The work itself lives in :mod:`corec_plugin_kit.runtime.ops`, so the actions answer the same
from the stream, from ``corec-kit exec`` and from the CoreC adapter.
"""

from __future__ import annotations

from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field, model_validator

from corec_plugin_kit import CommandContext


class StatsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DlqListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=10_000, description="entries per page")
    start: str = Field("-", description="first entry id, or `(id` to start after it (paging)")


class DlqReplayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list, description="dead-letter entry ids to replay")
    all: bool = Field(False, description="replay every dead letter")
    keep: bool = Field(False, description="leave the dead letters in place after replaying")

    @model_validator(mode="after")
    def _something(self) -> DlqReplayParams:
        if not self.ids and not self.all:
            raise ValueError("give `ids` (a list of dead-letter entry ids) or `all: true`")
        if self.ids and self.all:
            raise ValueError("give either `ids` or `all`, not both")
        return self


async def stats(params: StatsParams, ctx: CommandContext) -> dict[str, Any]:
    """Lag, pending, stream lengths, breaker states and per-action record counts."""
    from corec_plugin_kit.runtime.ops import stream_stats

    return await stream_stats(ctx.kernel)


async def dlq_list(params: DlqListParams, ctx: CommandContext) -> dict[str, Any]:
    """List dead letters (oldest first) with their error and delivery count."""
    from corec_plugin_kit.runtime.ops import dlq_list as list_dead

    return await list_dead(ctx.kernel, params.limit, params.start)


async def dlq_replay(params: DlqReplayParams, ctx: CommandContext) -> dict[str, Any]:
    """Put dead letters back on stream_in (their original fields) and remove them."""
    from corec_plugin_kit.runtime.ops import dlq_replay as replay

    return await replay(ctx.kernel, params.ids, all_entries=params.all, keep=params.keep)


def register_operations(register: Any) -> None:
    register("stats", stats, StatsParams)
    register("dlq_list", dlq_list, DlqListParams)
    register("dlq_replay", dlq_replay, DlqReplayParams)


def add_cli(group: click.Group) -> None:
    """``corec-kit manager dlq list|replay`` and ``corec-kit manager stats``."""
    from corec_plugin_kit.cli import echo_json, pass_kernel

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
        from corec_plugin_kit.runtime.ops import stream_stats

        echo_json(run(kernel, lambda: stream_stats(kernel)))

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
        from corec_plugin_kit.runtime.ops import dlq_list as list_dead

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
    @click.option("--all", "all_entries", is_flag=True, help="Replay every dead letter.")
    @click.option("--keep", is_flag=True, help="Keep the dead letters after replaying them.")
    @pass_kernel
    def dlq_replay_cmd(kernel: Any, ids: tuple[str, ...], all_entries: bool, keep: bool) -> None:
        """Put dead letters back on stream_in (by entry id, or --all), with progress."""
        from corec_plugin_kit.runtime.ops import dlq_list as list_dead
        from corec_plugin_kit.runtime.ops import dlq_replay as replay

        if not ids and not all_entries:
            raise click.UsageError("name dead-letter entry ids, or pass --all")
        total = len(ids) or run(kernel, lambda: list_dead(kernel, 1))["total"]

        bar: Any
        with click.progressbar(
            length=total, label="replaying", file=click.get_text_stream("stderr")
        ) as bar:
            outcome = run(
                kernel,
                lambda: replay(
                    kernel, list(ids), all_entries=all_entries, keep=keep, progress=bar.update
                ),
            )
        click.echo(f"replayed {len(outcome['replayed'])} onto {outcome['stream_in']}")
        if outcome["missing"]:
            click.echo(f"not found: {', '.join(outcome['missing'])}", err=True)
            raise SystemExit(1)
