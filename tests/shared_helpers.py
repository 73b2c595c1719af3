"""Helpers every test folder imports: polling a condition to a deadline, is a process alive,
a free TCP port.

A uniquely named module (not conftest.py): ``tests/`` is on ``sys.path`` because the root
conftest lives there, so ``from shared_helpers import ...`` works from any test folder.

Tests wait for *conditions*, never for a fixed time: ``wait_until(predicate, timeout)`` returns
as soon as the predicate holds and fails with ``what`` when the deadline passes first, so a slow
machine makes a test slower, not red, and a fast one does not wait for nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path


def wait_until(
    predicate: Callable[[], object], timeout: float = 30, what: str = "", interval: float = 0.05
) -> None:
    """Poll ``predicate()`` until truthy; past ``timeout`` s, an AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = 30,
    what: str = "",
    interval: float = 0.05,
) -> None:
    """``wait_until`` for the event loop: ``predicate`` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def pid_alive(pid: int, *, zombie_alive: bool = True) -> bool:
    """Whether process ``pid`` exists.

    A zombie (exited, not reaped yet) counts as alive unless ``zombie_alive=False``: for a child
    of the test process an unreaped process is a leak the test should see, while an orphan handed
    to a container's PID 1 may stay a zombie with nobody at fault (it runs no code any more).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    if zombie_alive:
        return True
    try:
        return proc_stat(pid)[0] != "Z"
    except FileNotFoundError:  # reaped in between
        return False


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def free_port() -> int:
    """A TCP port nothing listens on right now (for throwaway servers, or a closed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
