"""pytest plugin for processor authors (installed as the ``corec`` pytest11 entry point).

Fixtures:

* ``corec_processors``: a fresh :class:`ProcessorManager` that loads no entry points;
* ``corec_register``: ``corec_register(plugin, name="...")`` adds an in-test processor to it;
* ``corec_kernel``: ``corec_kernel(**kernel_overrides)`` builds a :class:`Kernel` over those
  processors with ``state_dir`` in a temporary folder and metrics off;
* ``corec_exec``: ``await corec_exec("action", params)`` runs one command in-process and returns
  the result envelope;
* ``corec_cli``: ``corec_cli("list-processors", "--json")`` runs ``corec-kit`` in-process with
  click's runner and returns the ``click.testing.Result``.

Stream and database fixtures (``corec_redis_url``, ``corec_streams``, ``corec_worker``...) come
from the same plugin when the runtime and storage are installed; see docs/writing-processors.md.
Importing this module is cheap: everything heavy is imported inside the fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from click.testing import Result

    from .kernel import Kernel
    from .plugins import ProcessorInfo, ProcessorManager


@pytest.fixture
def corec_processors() -> ProcessorManager:
    """A processor manager with no entry points loaded (register processors in the test)."""
    from .plugins import ProcessorManager

    return ProcessorManager(entry_points=False, trace=False)


@pytest.fixture
def corec_register(corec_processors: ProcessorManager) -> Callable[..., ProcessorInfo]:
    """Register an in-test processor: ``corec_register(module_or_object, name="mine")``."""

    def register(plugin: Any, name: str = "test", **kwargs: Any) -> ProcessorInfo:
        return corec_processors.register(plugin, name, **kwargs)

    return register


@pytest.fixture
def corec_kernel(
    corec_processors: ProcessorManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Kernel]:
    """Build a Kernel over ``corec_processors``: ``corec_kernel(concurrency=8, ...)``.

    Keyword arguments override the ``kernel`` section; ``sections={"mine": {...}}`` gives
    processor sections. ``COREC_*`` variables of the outer environment are ignored.
    """
    from .kernel import Kernel

    for name in list(os.environ):
        if name.startswith("COREC_"):
            monkeypatch.delenv(name)

    def build(sections: dict[str, Any] | None = None, **kernel: Any) -> Kernel:
        kernel.setdefault("state_dir", str(tmp_path / "state"))
        kernel.setdefault("metrics_port", 0)
        overrides: dict[str, Any] = {"kernel": kernel, **(sections or {})}
        return Kernel.build(
            None,
            processors=corec_processors,
            overrides=overrides,
        )

    return build


@pytest.fixture
def corec_exec(
    corec_kernel: Callable[..., Kernel],
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``await corec_exec(action, params=None, **command_keys)``: one in-process command."""

    async def run(
        action: str, params: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        kernel = corec_kernel()
        async with kernel:
            return await kernel.execute({"action": action, "params": params or {}, **extra})

    return run


@pytest.fixture
def corec_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``corec-kit`` in-process: ``corec_cli("exec", "ping")`` -> click Result.

    Runs in a temporary working directory (so ``./corec.json`` of the project is not read) with
    ``COREC_KERNEL__STATE_DIR`` pointing there. Installed processors are loaded as usual.
    """
    from click.testing import CliRunner

    from .cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COREC_KERNEL__STATE_DIR", str(tmp_path / ".corec"))
    monkeypatch.setenv("COREC_KERNEL__METRICS_PORT", "0")
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)

    return invoke


# The stream fixtures of the runtime and the database fixtures (and marker) of the storage
# package live in their own modules; pytest loads this one as the plugin, so they are
# re-exported here, each module's ``__all__`` saying what.
from .runtime import testing as _runtime_testing  # noqa: E402
from .runtime.testing import *  # noqa: E402, F403
from .storage import testing as _storage_testing  # noqa: E402
from .storage.testing import *  # noqa: E402, F403

__all__ = ["corec_cli", "corec_exec", "corec_kernel", "corec_processors", "corec_register"]
__all__ += _runtime_testing.__all__
__all__ += _storage_testing.__all__
