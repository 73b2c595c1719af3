"""The ``redis`` and ``postgres`` markers are on the tests that need those servers, and only
there: tests/conftest.py adds them from the fixtures a test uses, so ``-m "not redis"`` really
deselects every test that would talk to the shared Redis.

Checked by collecting known tests in a ``pytest --collect-only -m ...`` subprocess: what the
markers select is what CI and developers get.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: (file, test, the markers it must carry), none of them written on the test itself.
CASES: list[tuple[str, str, set[str]]] = [
    # echo_kernel -> corec_streams -> corec_redis_url
    ("test_worker.py", "test_round_trip_thousands_in_both_wire_forms", {"redis"}),
    # corec_redis
    (
        "test_breaker.py",
        "test_dependency_down_parks_commands_without_burning_deliveries",
        {"redis"},
    ),
    # the module's own sync_redis fixture -> corec_redis_url
    ("test_chaos.py", "test_sigkill_with_hundreds_in_flight_loses_nothing", {"redis"}),
    # a back-end parameter whose fixture asks for corec_postgres_schema_url at run time
    (
        "test_records.py",
        "test_300_commands_sent_twice_leave_300_records[postgres]",
        {"redis", "postgres"},
    ),
    ("test_records.py", "test_300_commands_sent_twice_leave_300_records[sqlite]", {"redis"}),
    # a pure unit test, and one on a throwaway server of its own: neither marker
    ("test_breaker.py", "test_opens_after_max_failures_and_probes_once_when_half_open", set()),
    (
        "test_chaos.py",
        "test_redis_restarted_mid_run_recovers_without_a_busy_loop[restarted]",
        set(),
    ),
]
EXPECTED = {f"tests/runtime/{file}::{test}": markers for file, test, markers in CASES}
FILES = sorted({f"tests/runtime/{file}" for file, _test, _markers in CASES})


def collected(expression: str) -> set[str]:
    """The ids ``pytest --collect-only -m expression`` selects in FILES."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", expression, *FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: nothing selected
    return {line.strip() for line in done.stdout.splitlines() if "::" in line}


def test_service_markers_follow_the_fixtures() -> None:
    everything = collected("")
    assert set(EXPECTED) <= everything, sorted(set(EXPECTED) - everything)
    for marker in ("redis", "postgres"):
        selected = collected(marker)
        for test_id, markers in EXPECTED.items():
            assert (test_id in selected) == (marker in markers), (marker, test_id)


def test_service_markers_are_registered(pytestconfig: pytest.Config) -> None:
    # --strict-markers is on: an unregistered marker would make collection itself fail.
    assert "--strict-markers" in pytestconfig.getini("addopts")
    registered = {line.split(":", 1)[0].strip() for line in pytestconfig.getini("markers")}
    assert {"redis", "postgres", "slow", "model"} <= registered
