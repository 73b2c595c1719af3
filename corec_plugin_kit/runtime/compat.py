"""Version shims for the stream runtime (Python 3.10 to 3.13): the only place that checks
``sys.version_info``."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

#: ``start_task(coro, loop=loop, name=name)``: start ``coro`` as a task named ``name``. The
#: loop is passed explicitly: without it the task looks the loop up through the policy, which
#: under ``uvloop.run()`` has none. On 3.11 a task given no name formats one ("Task-N"):
#: naming it saved 1.3 % of a command's instructions (benchmarks/bench_instructions.py). No
#: Python function in between: the worker starts one task per command.
start_task: Callable[..., asyncio.Task[Any]]
if sys.version_info >= (3, 12):
    # Eagerly: a task that never suspends finishes without a trip through the loop.
    start_task = functools.partial(asyncio.Task, eager_start=True)
else:  # pragma: no cover - version dependent (eager start needs 3.12)
    start_task = asyncio.Task


if sys.version_info >= (3, 11):
    #: ``async with timeout_ctx(seconds)``: the builtin ``TimeoutError`` past ``seconds``.
    timeout_ctx = asyncio.timeout

else:  # pragma: no cover - 3.10 only
    from async_timeout import timeout as _async_timeout

    @asynccontextmanager
    async def timeout_ctx(seconds: float) -> AsyncIterator[None]:
        """As on 3.11+: the builtin ``TimeoutError`` (an ``OSError``, which the worker treats
        as a transient Redis failure), where 3.10 raises ``asyncio.TimeoutError``."""
        try:
            async with _async_timeout(seconds):
                yield
        except asyncio.TimeoutError:
            raise TimeoutError(f"no reply within {seconds:g}s") from None
