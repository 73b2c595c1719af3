"""Stream operations of the manager: the ``stats``, ``dlq_list``, ``dlq_replay``,
``dlq_delete`` and ``consumers`` actions (the ``corec-kit manager`` commands that run them are in
:mod:`corec_manager.cli`).

The work itself lives in the kit (the stream operations of :mod:`corec_plugin_kit.api`), so the
actions answer the same from the stream, from ``corec-kit exec`` and from the CoreC adapter.
"""

from __future__ import annotations

from typing import Any

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

    ids: list[str] = Field(
        default_factory=list,
        description="dead-letter entry ids to replay (PARTITION/ID with kernel.partitions > 1: "
        "the `ref` of dlq_list)",
    )
    all: bool = Field(
        False, description="replay every dead letter present when the replay starts (each once)"
    )
    keep: bool = Field(False, description="leave the dead letters in place after replaying")

    @model_validator(mode="after")
    def _something(self) -> DlqReplayParams:
        _ids_or_all(self.ids, self.all)
        return self


class DlqDeleteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(
        default_factory=list,
        description="dead-letter entry ids to delete (PARTITION/ID with kernel.partitions > 1: "
        "the `ref` of dlq_list)",
    )
    all: bool = Field(
        False,
        description="delete every dead letter present when the deletion starts (those "
        "dead-lettered meanwhile stay)",
    )

    @model_validator(mode="after")
    def _something(self) -> DlqDeleteParams:
        _ids_or_all(self.ids, self.all)
        return self


def _ids_or_all(ids: list[str], all_entries: bool) -> None:
    """The dead letters a command names: a list of ids or ``all``, exactly one of them."""
    if not ids and not all_entries:
        raise ValueError("give `ids` (a list of dead-letter entry ids) or `all: true`")
    if ids and all_entries:
        raise ValueError("give either `ids` or `all`, not both")


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


async def dlq_delete(params: DlqDeleteParams, ctx: CommandContext) -> dict[str, Any]:
    """Delete dead letters for good (by id, or all those present when it starts)."""
    from corec_plugin_kit.api import dlq_delete as delete

    return await delete(ctx.kernel, params.ids, all_entries=params.all)


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
    register("dlq_delete", dlq_delete, DlqDeleteParams)
    register("consumers", consumers, ConsumersParams)
