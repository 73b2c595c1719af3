"""``corec-kit history``: look at command records, and purge old ones.

Mounted lazily by :mod:`corec_plugin_kit.cli.core` (``LAZY_COMMANDS``); this module imports
click and the cli package's state only, so listing commands in ``--help`` or shell completion
never loads a database driver: ``storage`` loads when the command runs.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click

from .state import F, complete_action, echo_json, get_state

if TYPE_CHECKING:
    from ..config import KernelConfig

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """``15m``, ``2h``, ``7d``, ``1.5w``, ``30s`` -> timedelta (ValueError otherwise)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 2h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A duration back from now, or an ISO 8601 timestamp (UTC when it names no zone)."""
    try:
        return (now or datetime.now(timezone.utc)) - parse_duration(text)
    except ValueError:
        pass
    raw = text.strip()
    if raw.endswith(("Z", "z")):  # fromisoformat accepts Z only from Python 3.11
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (15m, 2h, 7d) nor an ISO timestamp "
            "(2026-01-31T12:00:00Z)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _moment(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """``--since`` / ``--until``: one point in time, parsed by :func:`parse_since`."""
    try:
        return parse_since(value) if value is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    try:
        return parse_duration(value) if value is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _line(record: Any) -> str:
    finished = record.finished_at.strftime("%Y-%m-%d %H:%M:%S") if record.finished_at else "-"
    took = f"{record.duration_ms:.1f}ms" if record.duration_ms is not None else "-"
    line = (
        f"{finished}  {record.status:<5}  {record.action:<20} {record.processor or '-':<12} "
        f"x{record.deliveries:<2} {took:>10}  {record.command_key}"
    )
    if record.status != "ok" and isinstance(record.error, dict) and record.error.get("message"):
        line += f"\n{'':<21}{record.error.get('type', 'error')}: {record.error['message']}"
    return line


async def _history(
    cfg: KernelConfig,
    *,
    action: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    purge: timedelta | None,
) -> tuple[list[Any], int | None, str, bool]:
    """The records, how many were purged, where they were read, and whether a record
    database was there at all."""
    from ..storage import open_store

    store = open_store(cfg)
    try:
        if await store.schema_version() is None:
            return [], None if purge is None else 0, _nothing_here(cfg, store.url_display), False
        await store.open()
        purged = await store.purge(purge) if purge is not None else None
        records = await store.query(
            action=action, status=status, since=since, until=until, limit=limit
        )
        return records, purged, store.url_display, True
    finally:
        await store.close()


def _nothing_here(cfg: KernelConfig, where: str) -> str:
    """Where ``history`` looked, when no record database is there, and where else to look."""
    if cfg.database_url is not None:
        return f"{where}: it holds no records yet (no worker has written there)"
    path = (cfg.state_dir / "corec.db").resolve()
    return (
        f"sqlite:///{path}: no record database here. kernel.database_url is unset, so records "
        "go to <state_dir>/corec.db under the directory each worker runs in: run history "
        "there, or give it the worker's config (--config, COREC_DATABASE_URL)"
    )


def _purge_window(
    cfg: KernelConfig, purge: bool, purge_older_than: timedelta | None
) -> timedelta | None:
    """What to purge first: ``--purge-older-than``, else ``--purge``'s configured retention."""
    if not purge or purge_older_than is not None:
        return purge_older_than
    if cfg.records_retention_days is None:
        from ..errors import ConfigError

        raise ConfigError(
            "--purge needs kernel.records_retention_days in the config "
            "(or use --purge-older-than 30d)"
        )
    return timedelta(days=cfg.records_retention_days)


history_options = [
    click.option(
        "--action",
        metavar="A",
        shell_complete=complete_action,
        help="Only records of this action.",
    ),
    click.option("--status", type=click.Choice(["ok", "error"]), help="Only this outcome."),
    click.option(
        "--since",
        metavar="T",
        callback=_moment,
        help="Only records finished since T: a duration back from now (15m, 2h, 7d) or an ISO "
        "timestamp (UTC unless it names a zone).",
    ),
    click.option(
        "--until",
        metavar="T",
        callback=_moment,
        help="Only records finished at or before T, written as for --since (--until 7d: older "
        "than a week); with --since, a time range.",
    ),
    click.option(
        "--limit",
        default=50,
        show_default=True,
        metavar="N",
        type=click.IntRange(min=1),
        help="At most N records.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print a JSON list, newest first."),
    click.option(
        "--purge-older-than",
        "purge_older_than",
        callback=_duration,
        metavar="DURATION",
        help="First delete records finished longer ago than DURATION (e.g. 30d), in batches.",
    ),
    click.option(
        "--purge",
        is_flag=True,
        help="First delete records older than kernel.records_retention_days (config).",
    ),
]


def with_history_options(func: F) -> F:
    for option in reversed(history_options):
        func = option(func)
    return func


@click.command("history")
@with_history_options
def history(
    action: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
    purge_older_than: timedelta | None,
    purge: bool,
) -> None:
    """Show command records (newest first) from the records database.

    One line per command key: when it finished, status, action, processor, deliveries,
    duration and key (and the error message of failed ones).

    \b
    Examples:
      corec-kit history --status error --since 2h
      corec-kit history --since 2026-01-31T08:00:00Z --until 2026-01-31T09:00:00Z
      corec-kit history --action generate_plugin --json --limit 10
      corec-kit history --purge-older-than 30d --limit 1
    """
    import asyncio

    if since is not None and until is not None and since > until:
        raise click.UsageError(
            f"--since ({since.isoformat()}) is later than --until ({until.isoformat()}), so no "
            "record can match: give the earlier time to --since"
        )
    cfg = get_state().kernel().settings.kernel
    purge_older_than = _purge_window(cfg, purge, purge_older_than)
    records, purged, where, found = asyncio.run(
        _history(
            cfg,
            action=action,
            status=status,
            since=since,
            until=until,
            limit=limit,
            purge=purge_older_than,
        )
    )
    if purged is not None:
        click.echo(f"purged {purged} record{'s' if purged != 1 else ''} from {where}", err=True)
    if as_json:
        echo_json([record.as_dict() for record in records])
    elif not records:
        click.echo(f"no records match in {where}" if found else f"no records: {where}")
    else:
        for record in records:
            click.echo(_line(record))
