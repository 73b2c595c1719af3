"""Blocking handlers: ``blocking="process"`` in the killable process pool, threads that never
hold a process up, and the timeout every action gets (``kernel.action_timeouts``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kernel_procs import Sleep, processor, slow
from pydantic import BaseModel

from corec_plugin_kit.errors import RegistrationError
from corec_plugin_kit.procpool import DaemonThreadPool, ProcessPool, WorkerDied
from corec_plugin_kit.routing import Register

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

import echo_proc  # noqa: E402
from shared_helpers import pid_alive  # noqa: E402

pytestmark = pytest.mark.timeout(60)


async def gone(pid: int, within: float = 3.0) -> float:
    """Seconds until ``pid`` no longer exists; fails past ``within``."""
    start = time.monotonic()
    while pid_alive(pid):
        if time.monotonic() - start > within:
            raise AssertionError(f"process {pid} still alive after {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def _read_pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


async def pid_in(path: Path, within: float = 20.0) -> int:
    """The pid a ``burn`` call wrote to ``path`` once it started."""
    start = time.monotonic()
    while (pid := _read_pid(path)) is None:
        if time.monotonic() - start > within:
            raise AssertionError(f"{path} never written")
        await asyncio.sleep(0.01)
    return pid


@pytest.fixture
def echo(corec_register: Any, corec_kernel: Any) -> Any:
    corec_register(echo_proc, name="echo_proc")
    return corec_kernel


async def test_a_process_handler_runs_in_another_process(echo: Any) -> None:
    async with echo() as kernel:
        out = await kernel.execute({"action": "burn", "params": {"seconds": 0, "n": 3}, "id": "k"})
    assert out["status"] == "ok", out
    assert out["result"]["pid"] != os.getpid()
    # What crosses to the worker process: params and the context, without the kernel.
    assert out["result"] == {"n": 3, "pid": out["result"]["pid"], "key": "k", "has_kernel": False}


async def test_a_timed_out_process_handler_answers_timeout_at_once_and_its_process_dies(
    echo: Any, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    async with echo(action_timeouts={"burn": 1}) as kernel:
        await kernel.execute({"action": "burn", "params": {"seconds": 0}})  # pool started
        start = time.monotonic()
        out = await kernel.execute(
            {"action": "burn", "params": {"seconds": 60, "pid_file": str(pid_file)}}
        )
        took = time.monotonic() - start
        assert out["error"]["type"] == "timeout", out
        assert out["error"]["details"] == {"timeout_s": 1}
        assert 0.9 < took < 1.6, took
        pid = _read_pid(pid_file)
        assert pid is not None and pid != os.getpid()
        assert await gone(pid) < 1.0
        # The pool replaced the killed worker: the next call runs.
        again = await kernel.execute({"action": "burn", "params": {"seconds": 0}})
        assert again["status"] == "ok", again


async def test_cancelling_the_awaiting_task_kills_the_process(echo: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with echo() as kernel:
        task = asyncio.ensure_future(
            kernel.execute({"action": "burn", "params": {"seconds": 60, "pid_file": str(pid_file)}})
        )
        pid = await pid_in(pid_file)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await gone(pid) < 1.0


async def test_close_kills_running_process_handlers_without_waiting(
    echo: Any, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    async with echo() as kernel:
        task = asyncio.ensure_future(
            kernel.execute({"action": "burn", "params": {"seconds": 60, "pid_file": str(pid_file)}})
        )
        pid = await pid_in(pid_file)
        start = time.monotonic()
        kernel.dispatcher.close()
        assert time.monotonic() - start < 1.0
        assert not pid_alive(pid)
        out = await asyncio.wait_for(task, 5)
    assert out["status"] == "error"
    assert out["error"]["type"] == "handler_error"


async def test_a_worker_process_that_dies_fails_only_its_call(echo: Any) -> None:
    async with echo() as kernel:
        died = await kernel.execute(
            {"action": "burn", "params": {"seconds": 0, "signal": int(signal.SIGKILL)}}
        )
        assert died["error"]["type"] == "handler_error", died
        assert "worker process died (killed by SIGKILL)" in died["error"]["message"]
        ok = await kernel.execute({"action": "burn", "params": {"seconds": 0, "n": 1}})
    assert ok["status"] == "ok", ok


async def test_run_in_process_for_async_handlers(echo: Any) -> None:
    async with echo() as kernel:
        pid = await kernel.dispatcher.run_in_process(os.getpid)
    assert pid != os.getpid()


async def test_many_process_calls_at_once(echo: Any) -> None:
    async with echo() as kernel:
        outs = await asyncio.gather(
            *(
                kernel.execute({"action": "burn", "params": {"seconds": 0.01, "n": i}})
                for i in range(40)
            )
        )
    assert [o["result"]["n"] for o in outs] == list(range(40))


# --------------------------------------------------------------------------- timeouts


async def test_action_timeouts_win_and_registered_timeouts_are_capped(
    corec_register: Any, corec_kernel: Any
) -> None:
    def corec_register_actions(register: Any) -> None:
        register("long", slow, Sleep, timeout_s=300)
        register("short", slow, Sleep, timeout_s=0.2)
        register("plain", slow, Sleep)

    corec_register(processor(corec_register_actions=corec_register_actions), name="p")
    kernel = corec_kernel(handler_timeout_s=5, action_timeouts={"plain": 30, "short": 0.1})
    timeout_for = kernel.dispatcher.timeout_for
    routing = kernel.routing
    assert timeout_for(routing["long"]) == 5  # the processor cannot outlast the operator's bound
    assert timeout_for(routing["short"]) == 0.1  # the operator's word wins both ways
    assert timeout_for(routing["plain"]) == 30
    async with kernel:
        out = await kernel.execute({"action": "short", "params": {"seconds": 2}})
    assert out["error"]["details"] == {"timeout_s": 0.1}
    assert "kernel.action_timeouts.short" in out["error"]["message"]


# --------------------------------------------------------------------------- registration


class Params(BaseModel):
    x: int = 0


def module_level(params: Params, ctx: Any) -> int:
    return params.x


def test_process_handlers_must_be_picklable_plain_functions() -> None:
    def local(params: Params, ctx: Any) -> int:
        return 0

    async def coroutine(params: Params, ctx: Any) -> int:
        return 0

    class LocalParams(BaseModel):
        x: int = 0

    register = Register("p")
    register("ok", module_level, Params, blocking="process")
    register("no_params", module_level, blocking="process")  # the shared NoParams crosses too
    with pytest.raises(RegistrationError, match="module level"):
        register("local", local, Params, blocking="process")
    with pytest.raises(RegistrationError, match="module level"):
        register("local_params", module_level, LocalParams, blocking="process")
    with pytest.raises(RegistrationError, match="plain `def`"):
        register("coro", coroutine, Params, blocking="process")
    with pytest.raises(RegistrationError, match="False, True or 'process'"):
        register("typo", module_level, Params, blocking="thread")  # type: ignore[arg-type]
    assert [s.blocking for s in register.specs] == ["process", "process"]


async def test_an_action_without_params_runs_in_a_process(
    corec_register: Any, corec_kernel: Any
) -> None:
    def corec_register_actions(register: Any) -> None:
        register("pid", os_getpid_handler, blocking="process")

    corec_register(processor(corec_register_actions=corec_register_actions), name="p")
    async with corec_kernel() as kernel:
        out = await kernel.execute({"action": "pid"})
    assert out["status"] == "ok", out
    assert out["result"] != os.getpid()


def os_getpid_handler(params: Any, ctx: Any) -> int:
    return os.getpid()


# --------------------------------------------------------------------------- the pools


async def test_process_pool_maps_a_dead_worker_and_recovers() -> None:
    pool = ProcessPool(1)
    try:
        with pytest.raises(WorkerDied, match="SIGSEGV"):
            await pool.run(_segfault)
        assert await pool.run(os.getpid) != os.getpid()
    finally:
        pool.close()


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def test_daemon_thread_pool_runs_reuses_and_cancels() -> None:
    pool = DaemonThreadPool(max_workers=2, thread_name_prefix="t")
    futures = [pool.submit(lambda i=i: i * 2) for i in range(10)]
    assert [f.result(5) for f in futures] == [i * 2 for i in range(10)]
    assert len(pool._threads) <= 2
    assert all(t.daemon for t in pool._threads)
    blocker = pool.submit(time.sleep, 0.3)
    blocker2 = pool.submit(time.sleep, 0.3)
    deadline = time.monotonic() + 5
    while not (blocker.running() and blocker2.running()) and time.monotonic() < deadline:
        time.sleep(0.005)
    queued = pool.submit(time.sleep, 0.3)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(time.sleep, 0)
    blocker.result(5)
    blocker2.result(5)
    failing = DaemonThreadPool(1)
    with pytest.raises(ZeroDivisionError):
        failing.submit(lambda: 1 / 0).result(5)
    failing.shutdown(wait=True)


@pytest.mark.parametrize("action", ["burn_thread", "burn"])
def test_a_stuck_blocking_handler_does_not_keep_exec_alive(kit: Any, action: str) -> None:
    """A thread handler cannot be stopped, but it no longer holds the process up at exit
    (ThreadPoolExecutor joins its threads then); a process handler is killed."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "COREC_PLUGINS": "echo_proc",
        "COREC_LOAD_PROCESSORS": "echo_proc",
        "COREC_KERNEL__ACTION_TIMEOUTS": f'{{"{action}": 0.5}}',
    }
    start = time.monotonic()
    out = kit("exec", action, "-p", "seconds:=30", env=env, timeout=30)
    took = time.monotonic() - start
    assert '"timeout"' in out.stdout, (out.stdout, out.stderr)
    assert took < 8, took
