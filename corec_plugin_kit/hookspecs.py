"""The hooks a processor may implement: the contract between the kernel and its processors.

Hooks are grouped by phase. The kernel calls them in this order:

1. registration: :func:`corec_register_actions`, as each processor loads;
2. configuration: :func:`corec_config_model`, while the config sections are validated;
3. lifecycle: :func:`corec_startup`, then :func:`corec_shutdown`;
4. commands: :func:`corec_command` wraps every command on its way to its handler.

:func:`corec_cli` is called only when that processor's command group is invoked.

Implement a hook by defining a function of the same name decorated with
:data:`corec_plugin_kit.hookimpl` in the module your ``corec.processors`` entry point names.
You may accept fewer arguments than the spec lists (pluggy passes only those you name).

Handlers themselves are not hooks: they are ``async def`` callables handed to ``register`` and
awaited by the kernel's dispatch, which owns timeouts, retries, metrics and the circuit breaker.

Every hook is documented again, with its exact signature, in ``docs/hooks.md``; a test fails
when the two disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable

    import click
    from pydantic import BaseModel

    from .dispatch import CommandCall
    from .kernel import Kernel
    from .routing import Register

PROJECT_NAME = "corec"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------- configuration


@hookspec(firstresult=True)
def corec_config_model() -> type[BaseModel] | None:
    """Return the pydantic model of this processor's configuration section.

    Called once per processor while the configuration is validated, after registration and
    before start-up. The
    section of the config file named after the processor (and ``COREC_<NAME>__<KEY>`` variables)
    is validated against this model; every problem is reported at once with its key path. The
    validated instance reaches handlers as ``ctx.config``.

    :return: a ``pydantic.BaseModel`` subclass whose fields all have defaults (a processor must
        work with an empty section), or ``None`` when the processor takes no configuration.

    Stops at the first non-``None`` result (it is called per processor).

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- registration


@hookspec
def corec_register_actions(register: Register) -> None:
    """Claim actions by calling ``register`` once per action.

    Called once per processor as it loads, before the kernel builds its routing table (at
    start-up of every command that needs routing, never at import). ``register`` has the
    signature::

        register(action, handler, params=ParamsModel, *, description=None,
                 timeout_s=None, blocking=False)

    :param register: the callback; ``action`` is a name such as ``"generate_plugin"``
        (``[a-z][a-z0-9_.:-]*``), ``handler`` an ``async def handler(params, ctx)`` (or a plain
        ``def`` when ``blocking=True``, run in the kernel's thread pool, or a module-level
        ``def`` when ``blocking="process"``, run in the kernel's process pool, whose worker is
        killed at the timeout or on shutdown; it gets a ``ProcessContext``, without
        ``kernel``), ``params`` a pydantic model the command's params are validated against
        before the handler runs. ``timeout_s`` is capped by ``kernel.handler_timeout_s``;
        ``kernel.action_timeouts[action]`` overrides both.

    A handler that is not ``async def`` without ``blocking=True``, a name that is not valid, or an
    exception raised here marks the processor ``failed`` (with the reason) and skips it.
    Two processors claiming one action is an :class:`~corec_plugin_kit.errors.ActionConflict`
    unless ``kernel.action_owners`` pins the winner.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- command line


@hookspec
def corec_cli(group: click.Group) -> None:
    """Add this processor's commands to the click group the kernel mounted under its name.

    Called only when the user invokes ``corec-kit <processor> ...`` (``--help`` of the top-level
    command does not import processor code). Add subcommands with ``@group.command()``.

    :param group: the ``click.Group`` named after the processor.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def corec_startup(kernel: Kernel) -> Awaitable[None] | None:
    """Prepare the processor before the first command is dispatched.

    Called once per process by ``run``, ``exec`` and the CoreC adapter, after routing is built and
    inside the event loop. May be a plain function or ``async def``. An exception here marks the
    processor ``failed`` and its actions unroutable (fatal with ``--strict``).

    :param kernel: the running :class:`~corec_plugin_kit.kernel.Kernel` (config, routing,
        processors, and the Redis client and record store when the runtime has them).

    .. versionadded:: 0.1
    """


@hookspec
def corec_shutdown(kernel: Kernel) -> Awaitable[None] | None:
    """Release what :func:`corec_startup` acquired.

    Called once per process after the last command finished (or after the shutdown grace
    period), in reverse registration order. May be ``async def``. Exceptions are logged, never
    raised: one processor's failure does not keep the others from shutting down.

    :param kernel: the same kernel object :func:`corec_startup` received.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- commands


@hookspec(firstresult=True)
def corec_command(call: CommandCall) -> Awaitable[Any]:
    """Wrap every command on its way to its handler: observe, refuse, or change its result.

    Implement it as a new-style pluggy **wrapper**, ``@hookimpl(wrapper=True)``, a generator
    that yields once. The code before the ``yield`` runs before the command is
    validated and handled; raising a :class:`~corec_plugin_kit.errors.CorecError` there (e.g.
    :class:`~corec_plugin_kit.errors.Unauthorized`) refuses the command with that error. The
    ``yield`` returns an **awaitable** of the handler's result (validation, handler, the rest of
    the chain); the wrapper returns an awaitable too, usually a coroutine that awaits the one it
    got, and may look at the result or the error, replace the result, or raise::

        @hookimpl(wrapper=True)
        def corec_command(call):
            if call.command.get("meta", {}).get("role") != "admin":
                raise Unauthorized(f"{call.action} needs role admin")
            inner = yield

            async def run():
                result = await inner
                return {"wrapped": result}

            return run()

    Called for every command (stream worker, ``exec``, the CoreC adapter), before validation.
    Several wrappers nest in pluggy's order: the last registered outermost, ``tryfirst=True``
    outermost of all, ``trylast=True`` innermost. A processor that implements it as a plain
    (non-wrapper) hook fails to load. When no processor implements it, the dispatch never calls
    it (checked when the kernel starts and on ``SIGHUP``).

    :param call: the command (``call.command``: the envelope as parsed, ``params`` not yet
        validated), its route (``call.action``, ``call.processor``, ``call.spec``) and its
        context (``call.ctx``, what the handler will get).
    :return: an awaitable of the result.

    .. versionadded:: 0.1
    """
    raise NotImplementedError  # never called: the kit's own implementation runs the handler


HOOK_NAMES: tuple[str, ...] = (
    "corec_config_model",
    "corec_register_actions",
    "corec_cli",
    "corec_startup",
    "corec_shutdown",
    "corec_command",
)

__all__ = ["HOOK_NAMES", "PROJECT_NAME", "hookimpl", "hookspec"]
