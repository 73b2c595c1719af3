"""``Record.from_result``: a command's record from its result envelope, no database needed."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from corec_plugin_kit.storage import Record
from corec_plugin_kit.storage._base import COLUMNS

FINISHED = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=timezone.utc)


def test_from_result_takes_each_field_from_the_envelope_and_the_rest_from_the_caller() -> None:
    envelope = {
        "id": "cmd-1",
        "action": "generate_plugin",
        "processor": "generator",
        "status": "error",
        "result": None,
        "error": {"type": "handler_error", "message": "boom"},
        "duration_ms": 12.5,
        "replayed": False,  # keys a record does not hold are ignored
    }
    record = Record.from_result(
        envelope, params={"plugin_name": "x"}, deliveries=3, finished_at=FINISHED
    )
    assert record == Record(
        command_key="cmd-1",
        action="generate_plugin",
        processor="generator",
        status="error",
        params={"plugin_name": "x"},
        result=None,
        error={"type": "handler_error", "message": "boom"},
        deliveries=3,
        created_at=None,  # the store fills it on first insert
        finished_at=FINISHED,
        duration_ms=12.5,
    )


def test_from_result_of_an_ok_envelope_without_optional_keys() -> None:
    envelope = {"id": "k", "action": "ping", "status": "ok"}
    record = Record.from_result(envelope, params=None, deliveries=1, finished_at=FINISHED)
    assert (record.command_key, record.action, record.status) == ("k", "ping", "ok")
    assert (record.processor, record.result, record.error, record.duration_ms) == (None,) * 4
    assert (record.deliveries, record.finished_at, record.created_at) == (1, FINISHED, None)


def test_record_fields_are_the_columns_in_order() -> None:
    """Rows are read into records by position: the field order is the column order."""
    assert tuple(field.name for field in dataclasses.fields(Record)) == COLUMNS
