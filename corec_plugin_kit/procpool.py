"""Pools for blocking work that never outlive what they serve.

* :class:`ProcessPool`: CPU-heavy work runs in worker processes (pebble's ``ProcessPool``);
  cancelling the task that awaits :meth:`ProcessPool.run` (a timeout, the stream worker's
  shutdown) terminates the worker process that runs it, and :meth:`ProcessPool.close` kills
  them all without waiting for their work. A worker that dies (a segfault, the OOM killer)
  fails only its own call, with :class:`WorkerDied`.
* :class:`DaemonThreadPool`: a thread pool whose threads are daemons and are never joined at
  interpreter exit, so a handler stuck in a thread cannot keep a stopping worker alive (the
  standard ``ThreadPoolExecutor`` joins its threads at exit, whatever ``shutdown`` was told).

What runs in a process pool crosses a process boundary: the function must be importable by name
(a module-level ``def``) and its arguments and result picklable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import signal
import threading
from concurrent.futures import Executor, Future, InvalidStateError
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    import pebble

T = TypeVar("T")


class WorkerDied(RuntimeError):  # noqa: N818 - names the condition, like the kernel errors
    """The worker process running the call ended without answering (a signal, ``os._exit``)."""

    def __init__(self, exitcode: int | None, how: str = "") -> None:
        if exitcode is not None and exitcode < 0:
            try:
                how = f"killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"killed by signal {-exitcode}"
        elif exitcode is not None:
            how = f"exit code {exitcode}"
        how = how or "its pool broke: worker processes died or could not start"
        super().__init__(f"the worker process died ({how})")
        self.exitcode = exitcode


def _mp_context() -> Any:
    """forkserver where there is one (no fork of a threaded process), else spawn."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _worker_init() -> None:
    # pebble's workers answer SIGTERM by running multiprocessing's exit hooks first; a worker
    # busy in compiled code would only get to them after its work (pebble then waits 3 s before
    # SIGKILL). Our workers hold nothing worth cleaning up: let SIGTERM end them at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class ProcessPool:
    """A killable process pool, started on first use.

    ``max_workers`` defaults to the number of CPUs. Every call runs in whichever worker is free;
    a worker whose call was cancelled is terminated and replaced.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool: pebble.ProcessPool | None = None
        self._lock = threading.Lock()
        self._pending: set[Future[Any]] = set()  # what close() must answer

    def _get(self) -> pebble.ProcessPool:
        import pebble

        with self._lock:
            pool = self._pool
            if pool is None or not pool.active:
                if pool is not None:  # broken (its manager thread died): start afresh
                    _stop(pool)
                pool = self._pool = pebble.ProcessPool(
                    max_workers=self.max_workers, initializer=_worker_init, context=_mp_context()
                )
            return pool

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; ``cancel()`` on the future kills a running call."""
        future = self._get().schedule(fn, args=args, kwargs=kwargs)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` in a worker process.

        Cancelling the awaiting task (``asyncio.timeout``, ``task.cancel()``) terminates the
        worker process running the call. Raises :class:`WorkerDied` when the worker died, and
        whatever ``fn`` raised otherwise.
        """
        from concurrent.futures.process import BrokenProcessPool

        import pebble

        future = self.submit(fn, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except pebble.ProcessExpired as exc:
            raise WorkerDied(exc.exitcode) from None
        except BrokenProcessPool:  # a worker died while none was busy; the next call restarts
            raise WorkerDied(None) from None
        finally:
            if not future.done():
                future.cancel()  # wrap_future does it too; being explicit costs nothing

    def close(self) -> None:
        """Kill every worker now (running calls included) and stop the pool's threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool)
        # pebble leaves the futures of killed calls unanswered: answer them.
        for future in list(self._pending):
            with contextlib.suppress(InvalidStateError):
                future.set_exception(WorkerDied(None, "the pool was closed"))


def _stop(pool: pebble.ProcessPool) -> None:
    pool.stop()  # type: ignore[no-untyped-call]
    pool.join()


# --------------------------------------------------------------------------- threads


class DaemonThreadPool(Executor):
    """A ``ThreadPoolExecutor`` look-alike whose daemon threads are never joined at exit.

    Threads are started on demand up to ``max_workers`` and reused while idle. ``shutdown``
    with ``wait=False`` returns at once; a thread still running a call then ends with the
    process, not the other way round.
    """

    _counter = itertools.count()

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "") -> None:
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._prefix = thread_name_prefix or f"DaemonThreadPool-{next(self._counter)}"
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[T] = Future()
            self._queue.put((future, lambda: fn(*args, **kwargs)))
            if not self._idle.acquire(timeout=0) and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.add(thread)
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)  # wake the next thread too
                return
            future, call = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:  # noqa: BLE001 - handed to the future
                    future.set_exception(exc)
                    del exc
                else:
                    future.set_result(result)
                    del result
            del future, call
            if self._shutdown:
                continue
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._queue.put(None)
        if wait:
            for thread in list(self._threads):
                if thread is not threading.current_thread():
                    thread.join()
