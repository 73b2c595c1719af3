"""A processor with one trivial ``corec_command`` wrapper that awaits each command and returns
its result unchanged: what the hook costs (``benchmarks/bench_runtime.py``, scenario
``wrapped``)."""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import Any

from corec_plugin_kit import hookimpl


@hookimpl(wrapper=True)
def corec_command(call: Any) -> Generator[None, Awaitable[Any], Awaitable[Any]]:
    inner = yield

    async def observed() -> Any:
        return await inner

    return observed()
