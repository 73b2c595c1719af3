"""corec-plugin-kit: the plugin runtime for CoreC processors.

The public surface is small and re-exported here. Importing this package is cheap (pluggy and
the error types only): the models, the kernel and the runtime load on first attribute access,
so ``corec-kit --help`` and shell completion stay fast.

Writing a processor::

    from pydantic import BaseModel
    from corec_plugin_kit import hookimpl

    class Greet(BaseModel):
        name: str

    async def greet(params: Greet, ctx):
        return {"greeting": f"hello {params.name}"}

    @hookimpl
    def corec_register_actions(register):
        register("greet", greet, Greet, description="Say hello")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from .hookspecs import hookimpl, hookspec

if TYPE_CHECKING:
    from .dispatch import CommandContext
    from .kernel import Kernel
    from .plugins import ProcessorInfo, ProcessorManager
    from .routing import ActionSpec, Register, RoutingTable

__version__ = "0.1.0"

_LAZY = {
    "CommandContext": "dispatch",
    "Kernel": "kernel",
    "ProcessorManager": "plugins",
    "ProcessorInfo": "plugins",
    "ActionSpec": "routing",
    "Register": "routing",
    "RoutingTable": "routing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corec_plugin_kit' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ActionConflict",
    "ActionSpec",
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
    "ProcessorError",
    "ProcessorInfo",
    "ProcessorManager",
    "RateLimited",
    "Register",
    "RegistrationError",
    "RoutingTable",
    "Unauthorized",
    "UnknownAction",
    "__version__",
    "hookimpl",
    "hookspec",
]
