"""The public API for processors: everything a processor may import from the kit.

Processors import from ``corec_plugin_kit`` (hooks, errors, the handler context) or from this
module, never from the kit's other modules, whose layout may change between releases
(``tests/kernel/test_public_surface.py`` enforces it for the processors shipped here).

Of ``ctx.kernel`` itself a processor uses only what docs/writing-processors.md lists ("What a
processor may use of the kernel"); the functions below give it the rest.

Importing this module is as cheap as importing ``corec_plugin_kit``: the hook marker, the error
types and the redaction helpers (``re`` and ``logging`` only) are imported here; everything else
(the handler contexts and pydantic, the CLI helpers, the process pool, the stream operations and
Redis) loads on first attribute access, so ``corec-kit --help`` stays fast.

Handlers
    ``hookimpl``, ``CommandContext``, ``ProcessContext``, ``invalid_params``, the errors
CLI commands (``corec_cli``)
    ``pass_kernel``, ``get_state``, ``echo_json``, ``parse_params``
Work off the event loop
    ``run_in_thread``, ``run_in_process`` (the kernel's pools), ``ProcessPool``, ``WorkerDied``
The kernel's processors and actions
    ``processor_infos``, ``action_names``, ``describe_action``, ``describe_actions``
Stream operations (what ``corec-kit manager`` and the manager's actions run)
    ``stream_stats``, ``group_consumers``, ``dlq_list``, ``dlq_bound``, ``dlq_replay``,
    ``dlq_delete``, ``published_breakers``, ``worker_figures``, ``send_command``,
    ``await_result``, ``stream_sets``
Records
    ``open_store``
Redaction
    ``redact``, ``redact_data``
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import (
    ActionConflict,
    ConfigError,
    CorecError,
    DependencyUnavailable,
    HandlerError,
    HandlerTimeout,
    InvalidCommand,
    InvalidParams,
    NotImplementedYet,
    ProcessorError,
    RateLimited,
    RegistrationError,
    Unauthorized,
    UnknownAction,
)
from .hookspecs import hookimpl
from .redaction import redact, redact_data

if TYPE_CHECKING:
    from .cli import State, echo_json, get_state, parse_params, pass_kernel
    from .dispatch import CommandCall, CommandContext, ProcessContext, invalid_params
    from .kernel import Kernel
    from .partitions import stream_sets
    from .procpool import ProcessPool, WorkerDied
    from .runtime.ops import (
        await_result,
        dlq_bound,
        dlq_delete,
        dlq_list,
        dlq_replay,
        group_consumers,
        published_breakers,
        send_command,
        stream_stats,
        worker_figures,
    )
    from .storage import open_store

T = TypeVar("T")

#: name -> the kit module that defines it, imported on first access.
_LAZY = {
    # What a handler gets beside its params (``ctx``); it carries ``ctx.kernel``.
    "CommandContext": "dispatch",
    # What a ``corec_command`` wrapper gets: the command, its route and its context.
    "CommandCall": "dispatch",
    # What a ``blocking="process"`` handler gets: CommandContext without ``kernel``.
    "ProcessContext": "dispatch",
    # ``invalid_params(exc, action)``: a pydantic ValidationError as the kit's InvalidParams.
    "invalid_params": "dispatch",
    # The kernel a handler reaches through ``ctx.kernel`` (for annotations).
    "Kernel": "kernel",
    # The state of the running ``corec-kit`` invocation (config path, flags).
    "State": "cli",
    # ``get_state()``: the State of the running ``corec-kit`` invocation.
    "get_state": "cli",
    # Decorator for processor CLI commands: passes the configured Kernel as first argument.
    "pass_kernel": "cli",
    # ``echo_json(data)``: print data as indented JSON, as the kit's commands do.
    "echo_json": "cli",
    # ``parse_params(pairs, params_json)``: ``-p key=value`` / ``key:=JSON`` / ``--params``.
    "parse_params": "cli",
    # A killable process pool: ``await pool.run(fn, *args)``; ``close()`` stops it.
    "ProcessPool": "procpool",
    # Raised by ProcessPool.run when the worker process ended without answering.
    "WorkerDied": "procpool",
    # ``await stream_stats(kernel)``: lag, pending, stream lengths, breakers, record counts.
    "stream_stats": "runtime.ops",
    # ``await group_consumers(kernel, prune=, idle_ms=)``: the group's consumers, dead flagged.
    "group_consumers": "runtime.ops",
    # ``await dlq_list(kernel, limit, start)``: one page of dead letters, oldest first.
    "dlq_list": "runtime.ops",
    # ``await dlq_bound(kernel)``: the last dead-letter id (``until``) and the count up to it.
    "dlq_bound": "runtime.ops",
    # ``await dlq_replay(kernel, ids, all_entries=, keep=, until=, progress=)``: replay them.
    "dlq_replay": "runtime.ops",
    # ``await dlq_delete(kernel, refs, all_entries=, until=)``: delete them for good.
    "dlq_delete": "runtime.ops",
    # ``await published_breakers(kernel)``: the running workers' circuit breakers.
    "published_breakers": "runtime.ops",
    # ``await send_command(kernel, action, params, wait=)``: XADD a command (``corec-kit send``).
    "send_command": "runtime.ops",
    # ``await await_result(kernel, key, after, timeout)``: a command's result envelope, or None.
    "await_result": "runtime.ops",
    # ``stream_sets(kernel.settings.kernel)``: each partition's three stream names.
    "stream_sets": "partitions",
    # ``open_store(kernel.settings.kernel)``: the record store (``await store.open()`` first).
    "open_store": "storage",
    # ``await worker_figures(kernel)``: each running worker's published figures (counts by
    # outcome, duration buckets, in flight, breakers, processors), for dashboards.
    "worker_figures": "runtime.ops",
}


async def run_in_thread(kernel: Kernel, fn: Callable[..., T], /, *args: Any) -> T:
    """Await the blocking ``fn(*args)`` in the kernel's thread pool, the one ``blocking=True``
    handlers run in: its threads never keep a stopping worker alive, but a call in one cannot
    be stopped (cancelling the awaiting task leaves it running)."""
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(kernel.dispatcher.pool, fn, *args)


async def run_in_process(kernel: Kernel, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` in the kernel's process pool (the one ``blocking="process"``
    handlers run in): ``fn`` a module-level function, its arguments and result picklable;
    cancelling the awaiting task (a timeout, the worker's shutdown) kills that worker process."""
    return await kernel.dispatcher.run_in_process(fn, *args, **kwargs)


def processor_infos(kernel: Kernel) -> list[dict[str, Any]]:
    """Each processor the kernel found, as ``corec-kit list-processors --json`` shows it:
    ``name``, ``distribution``, ``version``, ``status`` (``loaded``, ``failed``,
    ``disabled``), ``reason``, ``actions``, ``module``."""
    return [info.as_dict() for info in kernel.processors.infos.values()]


def action_names(kernel: Kernel) -> list[str]:
    """The names of the actions the kernel routes, sorted."""
    return sorted(kernel.routing)


def describe_action(kernel: Kernel, action: str) -> dict[str, Any] | None:
    """What ``corec-kit describe ACTION`` prints (its processor, description, policy, the JSON
    Schema of its params...); ``None`` when no such action is routed."""
    spec = kernel.routing.get(action)
    return spec.describe() if spec is not None else None


def describe_actions(kernel: Kernel) -> dict[str, dict[str, Any]]:
    """:func:`describe_action` of every routed action, by name."""
    return {spec.action: spec.describe() for spec in kernel.routing.values()}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corec_plugin_kit.api' has no attribute {name!r}")
    from importlib import import_module

    # Not cached here: each access reads the defining module, as a direct import would.
    return getattr(import_module(f".{module}", "corec_plugin_kit"), name)


__all__ = [
    "ActionConflict",
    "CommandCall",
    "CommandContext",
    "ConfigError",
    "CorecError",
    "DependencyUnavailable",
    "HandlerError",
    "HandlerTimeout",
    "InvalidCommand",
    "InvalidParams",
    "Kernel",
    "NotImplementedYet",
    "ProcessContext",
    "ProcessPool",
    "ProcessorError",
    "RateLimited",
    "RegistrationError",
    "State",
    "Unauthorized",
    "UnknownAction",
    "WorkerDied",
    "action_names",
    "await_result",
    "describe_action",
    "describe_actions",
    "dlq_bound",
    "dlq_delete",
    "dlq_list",
    "dlq_replay",
    "echo_json",
    "get_state",
    "group_consumers",
    "hookimpl",
    "invalid_params",
    "open_store",
    "parse_params",
    "pass_kernel",
    "processor_infos",
    "published_breakers",
    "redact",
    "redact_data",
    "run_in_process",
    "run_in_thread",
    "send_command",
    "stream_sets",
    "stream_stats",
    "worker_figures",
]
