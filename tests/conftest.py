"""Shared test helpers: running the real ``corec-kit`` console script in a subprocess.

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
