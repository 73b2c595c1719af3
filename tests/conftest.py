"""Shared test helpers: running the real ``corec-kit`` console script in a subprocess, and the
``redis`` / ``postgres`` markers put on every test that needs those servers.

The fixtures for in-process work (``corec_processors``, ``corec_register``, ``corec_kernel``,
``corec_exec``, ``corec_cli``) come from the kit's own pytest plugin, ``corec_plugin_kit.testing``,
exactly as processor authors get them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COREC_KIT = str(BIN / "corec-kit")

#: The kit's fixtures that reach a test server (corec_plugin_kit/runtime/testing.py and
#: corec_plugin_kit/storage/testing.py). Every fixture of the suite that needs a server builds
#: on one of them (echo_kernel and sync_redis on corec_streams / corec_redis_url; corec_db_pool
#: and fresh_database on corec_postgres_*), so a test needs the server exactly when its fixture
#: closure names one.
SERVICE_FIXTURES = {
    "redis": frozenset({"corec_redis_url", "corec_redis", "corec_streams"}),
    "postgres": frozenset(
        {"corec_postgres_url", "corec_postgres_schema_url", "corec_postgres_store"}
    ),
}
#: Values of the back-end parameters (``database_url``, ``corec_store``, ``new_store``...)
#: whose fixtures ask for a PostgreSQL fixture at run time (``request.getfixturevalue``), which
#: the static fixture closure cannot show.
POSTGRES_PARAMS = frozenset({"postgres", "postgresql"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs Redis ``redis`` and every one that needs PostgreSQL
    ``postgres`` (so ``-m "not redis"`` deselects them all), from the fixtures it uses."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        needs = {marker for marker, names in SERVICE_FIXTURES.items() if used & names}
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any(
            isinstance(value, str) and value in POSTGRES_PARAMS
            for value in callspec.params.values()
        ):
            needs.add("postgres")
        for marker in sorted(needs):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@dataclass
class Run:
    """A finished ``corec-kit`` subprocess."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any ``COREC_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    env.update(extra)
    return env


@pytest.fixture
def kit(tmp_path: Path) -> Callable[..., Run]:
    """``kit("exec", "ping", env={...})``: run the installed ``corec-kit`` in ``tmp_path``.

    The working directory is a fresh temporary folder (so no ``./corec.json`` is read) and the
    outer ``COREC_*`` variables are dropped; ``env`` adds variables for this run.
    """

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        exe: str = COREC_KIT,
        timeout: float = 60,
        cwd: Path | None = None,
    ) -> Run:
        full_env = clean_env(
            COREC_KERNEL__STATE_DIR=str(tmp_path / ".corec"), COREC_KERNEL__METRICS_PORT="0"
        )
        full_env.update(env or {})
        proc = subprocess.run(
            [exe, *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=timeout,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run
