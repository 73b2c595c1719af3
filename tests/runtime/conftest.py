"""Runtime test fixtures: an in-test ``echo_proc`` processor over real Redis streams."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

import echo_proc  # noqa: E402


@pytest.fixture
def echo_kernel(corec_register: Any, corec_kernel: Any, corec_streams: dict[str, Any]) -> Any:
    """``echo_kernel(**kernel_overrides)``: a Kernel with echo_proc on this test's streams."""
    corec_register(echo_proc, name="echo_proc")

    def build(**overrides: Any) -> Any:
        settings = {"records": False, "block_ms": 100, **corec_streams, **overrides}
        return corec_kernel(**settings)

    return build
