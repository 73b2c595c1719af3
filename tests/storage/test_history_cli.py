"""``corec-kit history``: filters, JSON, durations, purge; on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import old, rec

from corec_plugin_kit.cli.history import parse_duration, parse_since
from corec_plugin_kit.storage import Record, open_store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def history(
    request: pytest.FixtureRequest, corec_cli: Any, tmp_path: Path, monkeypatch: Any
) -> Callable[..., Any]:
    """``history(*args)`` runs ``corec-kit history`` on a database seeded with five records."""
    if request.param == "postgresql":
        url = request.getfixturevalue("corec_postgres_schema_url")
        monkeypatch.setenv("COREC_DATABASE_URL", url)
    records = [
        rec("a1", action="alpha", finished_at=old(40)),
        rec("a2", "error", action="alpha", finished_at=old(0.2), duration_ms=3.25),
        rec("b1", action="beta", finished_at=old(2)),
        rec("b2", action="beta", finished_at=old(0.1)),
        rec("b3", "error", action="beta", finished_at=old(10)),
    ]

    async def seed(batch: list[Record]) -> None:
        from corec_plugin_kit.config import load_settings

        store = open_store(load_settings().kernel)  # the same config the command reads
        try:
            await store.open()
            await store.write_batch(batch)
        finally:
            await store.close()

    def run(*args: str, seed_records: bool = True) -> Any:
        if seed_records:
            asyncio.run(seed(records))
        return corec_cli("history", *args)

    return run


def keys(result: Any) -> list[str]:
    assert result.exit_code == 0, result.output
    return [row["command_key"] for row in json.loads(result.stdout)]


def test_json_lists_newest_first(history: Callable[..., Any]) -> None:
    result = history("--json")
    assert keys(result) == ["b2", "a2", "b1", "b3", "a1"]
    row = json.loads(result.stdout)[1]
    assert row["status"] == "error"
    assert row["error"]["message"] == "a2 failed"
    assert row["duration_ms"] == 3.25
    datetime.fromisoformat(row["finished_at"])


def test_filters(history: Callable[..., Any]) -> None:
    assert keys(history("--json", "--action", "beta")) == ["b2", "b1", "b3"]
    assert keys(history("--json", "--status", "error")) == ["a2", "b3"]
    assert keys(history("--json", "--since", "1d")) == ["b2", "a2"]
    assert keys(history("--json", "--since", "12h", "--action", "alpha")) == ["a2"]
    since = (datetime.now(timezone.utc) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert keys(history("--json", "--since", since)) == ["b2", "a2", "b1"]
    assert keys(history("--json", "--limit", "2")) == ["b2", "a2"]


def test_until_and_time_ranges(history: Callable[..., Any]) -> None:
    assert keys(history("--json", "--until", "1d")) == ["b1", "b3", "a1"]
    assert keys(history("--json", "--until", "1d", "--status", "ok")) == ["b1", "a1"]
    assert keys(history("--json", "--since", "11d", "--until", "1d")) == ["b1", "b3"]
    assert keys(history("--json", "--since", "3d", "--until", "3h", "--action", "beta")) == ["b1"]
    # ISO timestamps, as for --since (b2 finished 0.1 day ago, a2 0.2 day ago).
    at = (datetime.now(timezone.utc) - timedelta(days=0.15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert keys(history("--json", "--until", at, "--limit", "2")) == ["a2", "b1"]
    assert keys(history("--json", "--since", at, "--until", "0s")) == ["b2"]


def test_since_after_until_is_a_usage_error(history: Callable[..., Any]) -> None:
    result = history("--since", "1d", "--until", "2d", seed_records=False)
    assert result.exit_code == 2
    assert "is later than --until" in result.stderr
    assert "give the earlier time to --since" in result.stderr
    assert "Traceback" not in result.output
    bad = history("--until", "last week", seed_records=False)
    assert bad.exit_code == 2
    assert "--until" in bad.stderr and "neither a duration" in bad.stderr


def test_text_output(history: Callable[..., Any]) -> None:
    result = history("--status", "error")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "alpha" in lines[0]
    assert "a2" in lines[0]
    assert "3.2ms" in lines[0]
    assert "handler_error: a2 failed" in lines[1]
    assert "b3" in lines[2]


def test_purge_older_than(history: Callable[..., Any]) -> None:
    result = history("--purge-older-than", "7d", "--json")
    assert keys(result) == ["b2", "a2", "b1"]
    assert "purged 2 records" in result.stderr


def test_purge_uses_retention_days(history: Callable[..., Any], monkeypatch: Any) -> None:
    result = history("--purge")
    assert result.exit_code == 3
    assert "records_retention_days" in result.stderr
    monkeypatch.setenv("COREC_KERNEL__RECORDS_RETENTION_DAYS", "1")
    result = history("--purge", "--json", seed_records=False)
    assert keys(result) == ["b2", "a2"]
    assert "purged 3 records" in result.stderr


def test_bad_since_is_a_usage_error(history: Callable[..., Any]) -> None:
    result = history("--since", "yesterday", seed_records=False)
    assert result.exit_code == 2
    assert "neither a duration" in result.stderr


def test_no_database_yet(history: Callable[..., Any], request: pytest.FixtureRequest) -> None:
    """Nothing recorded where history looks: it says where it looked, and where else to."""
    result = history(seed_records=False)
    assert result.exit_code == 0
    if "sqlite" in request.node.callspec.id:
        # The default database: a file under the current directory's state folder.
        assert result.stdout.startswith("no records: sqlite:////")  # the absolute path
        assert "no record database here" in result.stdout
        assert "run history there, or give it the worker's config" in result.stdout
    else:
        assert "holds no records yet" in result.stdout
    assert keys(history("--json", seed_records=False)) == []


def test_no_match_names_the_database(history: Callable[..., Any]) -> None:
    result = history("--action", "nothing_like_it")
    assert result.exit_code == 0
    assert result.stdout.startswith("no records match in ")


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1.5w", timedelta(weeks=1.5)),
        (" 10 D ", timedelta(days=10)),
    ],
)
def test_durations(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta
    now = datetime(2026, 1, 31, tzinfo=timezone.utc)
    assert parse_since(text, now) == now - delta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=timezone.utc)),
        ("2026-01-31T12:00:00", datetime(2026, 1, 31, 12, tzinfo=timezone.utc)),
        ("2026-01-31T14:00:00+02:00", datetime(2026, 1, 31, 12, tzinfo=timezone.utc)),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=timezone.utc)),
    ],
)
def test_iso_timestamps(text: str, expected: datetime) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5y", "-1d", "soon"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
