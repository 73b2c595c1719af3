"""The processor manager: the only module that talks to pluggy.

Loading order (documented in docs/writing-processors.md):

1. processors registered in code (tests, embedding applications), in registration order;
2. modules named by ``corec-kit --plugin`` / ``COREC_PLUGINS``, in the order given;
3. the ``corec.processors`` entry points, sorted by name, each loaded on its own so that one
   broken processor cannot keep the others out.

A processor is skipped, and listed as ``disabled``, when it is not in the allowlist
(``COREC_LOAD_PROCESSORS`` / ``--load`` / ``kernel.load_processors``) or is in the blocklist
(``COREC_DISABLE_PROCESSORS`` / ``--disable`` / ``kernel.disable_processors``). A processor that
fails to import, implements a hook the kernel does not define, or raises while registering is
listed as ``failed`` with its reason; with ``strict`` (``--strict``,
``COREC_STRICT_PROCESSORS=1``) that is fatal. ``COREC_TRACE_HOOKS=1`` writes every hook call to
stderr.

Every hook call goes through a typed method of :class:`ProcessorManager`; nothing else in the
kit writes ``pm.hook.<name>(...)``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from . import hookspecs
from .errors import ProcessorError
from .routing import Register, RoutingTable

if TYPE_CHECKING:
    from collections.abc import Awaitable

    import click
    from pydantic import BaseModel

    from .dispatch import CommandCall
    from .kernel import Kernel

log = logging.getLogger("corec_plugin_kit.plugins")


class _Core:
    """The innermost ``corec_command``: runs the command (validation, then the handler)."""

    @staticmethod
    @hookspecs.hookimpl(trylast=True)
    def corec_command(call: CommandCall) -> Awaitable[Any]:
        return call.core()


_CORE = _Core()

ENTRY_POINT_GROUP = "corec.processors"
Status = Literal["loaded", "failed", "disabled"]


@dataclass
class ProcessorInfo:
    """What ``list-processors`` shows about one processor."""

    name: str
    distribution: str | None = None
    version: str | None = None
    status: Status = "loaded"
    reason: str | None = None
    actions: list[str] = field(default_factory=list)
    module: str | None = None
    plugin: Any = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "reason": self.reason,
            "actions": list(self.actions),
            "module": self.module,
        }


def env_list(name: str) -> list[str] | None:
    """A comma-separated environment variable as a list (``None`` when unset)."""
    value = os.environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def processor_entry_points() -> list[metadata.EntryPoint]:
    """The installed ``corec.processors`` entry points, sorted by name (no import happens)."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


class ProcessorManager:
    """Loads processors and is the typed facade over their hooks.

    :param entry_points: load the installed ``corec.processors`` entry points (tests pass False).
    :param allow: only these processor names (``None`` = all).
    :param deny: never these processor names.
    :param strict: raise :class:`ProcessorError` instead of marking a processor ``failed``.
    :param trace: write every hook call to stderr (``COREC_TRACE_HOOKS=1``).
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        strict: bool = False,
        trace: bool | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(_CORE, name="corec-kit")
        self._use_entry_points = entry_points
        self.allow = set(allow) if allow is not None else None
        self.deny = set(deny)
        self.strict = strict
        self.infos: dict[str, ProcessorInfo] = {}
        self._claims: dict[str, Register] = {}
        self._loaded = False
        self._installed_cache: tuple[float, list[str]] | None = None
        self._wrappers: list[Any] = []
        self._traced = False
        if trace if trace is not None else env_flag("COREC_TRACE_HOOKS"):
            self._pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[corec-hooks] {msg}"))
            self._pm.enable_tracing()
            self._traced = True

    # ------------------------------------------------------------------ loading

    def _wanted(self, name: str) -> str | None:
        if name in self.deny:
            return "disabled by the blocklist (COREC_DISABLE_PROCESSORS / --disable)"
        if self.allow is not None and name not in self.allow:
            return "not in the allowlist (COREC_LOAD_PROCESSORS / --load)"
        return None

    def fail(self, info: ProcessorInfo, reason: str) -> None:
        """Mark a loaded processor failed and take it out (its actions leave the routing
        table when it is next built); logged, never raised, even in strict mode."""
        try:
            self._fail(info, reason)
        except ProcessorError as exc:
            log.warning("%s", exc.message)

    def _fail(self, info: ProcessorInfo, reason: str) -> None:
        info.status = "failed"
        info.reason = reason
        info.actions = []
        self._claims.pop(info.name, None)
        if info.plugin is not None and self._pm.is_registered(info.plugin):
            self._pm.unregister(info.plugin)
        info.plugin = None
        where = f"{info.distribution} {info.version}" if info.distribution else "in-process"
        message = f"processor {info.name!r} ({where}) failed: {reason}"
        if self.strict:
            raise ProcessorError(
                message + " (strict mode; fix or uninstall it, or drop --strict)",
                details=info.as_dict(),
            )
        log.warning("%s; skipped", message)

    def register(
        self,
        plugin: Any,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> ProcessorInfo:
        """Add a processor object (a module, class or instance with hookimpls) in code.

        Registration hooks run at once, so the returned info says ``loaded`` or ``failed``.
        """
        if isinstance(plugin, ModuleType):
            module = plugin.__name__
        else:
            cls = plugin if isinstance(plugin, type) else type(plugin)
            module = f"{cls.__module__}.{cls.__qualname__}"
        info = ProcessorInfo(name, distribution, version, module=module)
        if name in self.infos and self.infos[name].status == "loaded":
            raise ProcessorError(f"a processor named {name!r} is already registered")
        self.infos[name] = info
        skip = self._wanted(name)
        if skip:
            info.status, info.reason = "disabled", skip
            return info
        self._add(info, plugin)
        return info

    def _add(self, info: ProcessorInfo, plugin: Any) -> None:
        try:
            hash(plugin)
        except TypeError:
            # pluggy keeps plugins in sets; say so instead of failing inside a hook call.
            self._fail(
                info,
                f"a processor must be hashable (a module, class or object), "
                f"not {type(plugin).__name__}",
            )
            return
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith("corec_")
            and self._pm.parse_hookimpl_opts(plugin, attr) is not None
            and attr not in hookspecs.HOOK_NAMES
        ]
        if unknown:
            self._fail(
                info,
                f"implements unknown hook(s) {', '.join(unknown)}; known hooks: "
                f"{', '.join(hookspecs.HOOK_NAMES)} (is it written for a newer corec-plugin-kit?)",
            )
            return
        command_opts = self._pm.parse_hookimpl_opts(plugin, "corec_command")
        if command_opts is not None and not command_opts.get("wrapper"):
            self._fail(
                info,
                "implements corec_command as a plain hook: it must be a wrapper, "
                "@hookimpl(wrapper=True), that yields once (docs/hooks.md)",
            )
            return
        try:
            self._pm.register(plugin, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._fail(info, f"invalid hook implementation: {exc}")
            return
        info.plugin = plugin
        claim = Register(info.name, info.distribution)
        try:
            self._call_one(plugin, "corec_register_actions", register=claim)
        except Exception as exc:  # noqa: BLE001 - a processor's bug must not stop the others
            self._fail(info, f"corec_register_actions raised {type(exc).__name__}: {exc}")
            return
        self._claims[info.name] = claim
        info.actions = [spec.action for spec in claim.specs]

    def load(self) -> None:
        """Load the entry points (once). Safe to call again."""
        if self._loaded or not self._use_entry_points:
            self._loaded = True
            return
        self._loaded = True
        for spec in env_list("COREC_PLUGINS") or ():
            self._load_module(spec)
        for ep in processor_entry_points():
            self._load_entry_point(ep)

    def _load_entry_point(self, ep: metadata.EntryPoint) -> ProcessorInfo | None:
        if ep.name in self.infos:
            # Registered in code already; an installed twin would be a conflict by name.
            return None
        dist = getattr(ep, "dist", None)
        info = ProcessorInfo(
            ep.name,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
            module=ep.value,
        )
        self.infos[ep.name] = info
        skip = self._wanted(ep.name)
        if skip:
            info.status, info.reason = "disabled", skip
            return info
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import error is the processor's
            self._fail(info, f"import of {ep.value} failed: {type(exc).__name__}: {exc}")
            return info
        if self._pm.is_registered(plugin):
            # The same module, loaded already by --plugin under another name: once only.
            del self.infos[ep.name]
            return None
        self._add(info, plugin)
        return info

    def load_new(self) -> list[ProcessorInfo]:
        """Load processors installed since :meth:`load` (``SIGHUP``); those it loaded.

        Processors loaded already keep the code they were loaded with (a changed version of
        one needs a restart); one that failed or was disabled stays as it was.
        """
        if not self._loaded:
            self.load()
            return list(self.loaded)
        if not self._use_entry_points:
            return []
        self._installed_cache = None
        importlib.invalidate_caches()  # finders cache folder listings: see what was installed
        added = []
        for ep in processor_entry_points():
            info = self._load_entry_point(ep)
            if info is not None and info.status == "loaded":
                added.append(info)
        return added

    def installed_since_load(self, max_age: float = 2.0) -> list[str]:
        """Names of processors installed after :meth:`load` (not loaded here). The entry points
        are scanned at most once per ``max_age`` seconds: this serves error messages, which a
        producer can cause at any rate."""
        if not self._use_entry_points or not self._loaded:
            return []
        now = time.monotonic()
        cached = self._installed_cache
        if cached is None or now - cached[0] > max_age:
            names = [ep.name for ep in processor_entry_points() if ep.name not in self.infos]
            cached = self._installed_cache = (now, names)
        return list(cached[1])

    def _load_module(self, spec: str) -> None:
        """Load ``[name=]module`` as a processor without installing it (``COREC_PLUGINS``,
        which ``corec-kit --plugin`` sets).

        For developing a processor: ``corec-kit --plugin my_proc exec my_action`` with the
        module on ``sys.path`` (the current directory is added). The name defaults to the
        module's last dotted part.
        """
        name, _, module = spec.rpartition("=")
        installed = next((ep for ep in processor_entry_points() if ep.value == module), None)
        if installed is not None and not name:
            # An installed processor's own module (developing it from a checkout): its
            # entry-point name and distribution, and loaded once, not twice.
            name = installed.name
        name = name or module.rsplit(".", 1)[-1]
        if name in self.infos:
            return
        info = ProcessorInfo(name, module=module)
        dist = getattr(installed, "dist", None)
        if installed is not None and installed.name == name and dist is not None:
            info.distribution, info.version = dist.metadata["Name"], dist.version
        self.infos[name] = info
        skip = self._wanted(name)
        if skip:
            info.status, info.reason = "disabled", skip
            return
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            plugin = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import error is the processor's
            self._fail(info, f"import of {module} failed: {type(exc).__name__}: {exc}")
            return
        self._add(info, plugin)

    # ------------------------------------------------------------------ typed facade

    def _call_one(self, plugin: Any, hook: str, **kwargs: Any) -> list[Any]:
        """Call one processor's implementation of ``hook`` (through pluggy, so tracing works)."""
        others = [p for p in self._pm.get_plugins() if p is not plugin]
        caller = self._pm.subset_hook_caller(hook, remove_plugins=others)
        result: Any = caller(**kwargs)
        if result is None:
            return []
        return result if isinstance(result, list) else [result]

    @property
    def loaded(self) -> list[ProcessorInfo]:
        return [info for info in self.infos.values() if info.status == "loaded"]

    def routing(self, owners: dict[str, str] | None = None) -> RoutingTable:
        """The routing table of every loaded processor; raises ActionConflict."""
        self.load()
        return RoutingTable.build(
            [self._claims[info.name] for info in self.loaded if info.name in self._claims],
            owners,
        )

    def wraps_commands(self) -> bool:
        """Does a loaded processor implement :func:`~.hookspecs.corec_command`? Also takes
        note of the wrappers, outermost first, for :meth:`wrap_command`."""
        impls = self._pm.hook.corec_command.get_hookimpls()
        self._wrappers = [impl for impl in reversed(impls) if impl.plugin is not _CORE]
        return bool(self._wrappers)

    def wrap_command(self, call: CommandCall) -> Awaitable[Any]:
        """The awaitable of ``call`` through every ``corec_command`` wrapper, innermost the
        kit's own (``call.core()``: validation, then the handler).

        What pluggy's call does for wrappers, without looking the implementations up again
        for every command (the list is taken by :meth:`wraps_commands`): each wrapper runs to
        its ``yield``; an error there goes back out through the wrappers already started; the
        awaitable (or the error) is sent back through them innermost first. With
        ``COREC_TRACE_HOOKS`` the call goes through pluggy, traced.
        """
        if self._traced:
            aw: Awaitable[Any] = self._pm.hook.corec_command(call=call)
            return aw
        started = []
        result: Any = None
        error: BaseException | None = None
        try:
            for impl in self._wrappers:
                gen = impl.function(call) if impl.argnames else impl.function()
                try:
                    next(gen)
                except StopIteration:
                    raise RuntimeError(
                        f"the corec_command wrapper of {impl.plugin_name!r} did not yield"
                    ) from None
                started.append((impl, gen))
            result = call.core()
        except BaseException as exc:  # noqa: BLE001 - handed to the wrappers, then raised
            error = exc
        for impl, gen in reversed(started):
            try:
                if error is None:
                    gen.send(result)
                else:
                    gen.throw(error)
            except StopIteration as stop:
                result, error = stop.value, None
            except BaseException as exc:  # noqa: BLE001 - the next wrapper out sees it
                error = exc
            else:
                gen.close()
                error = RuntimeError(
                    f"the corec_command wrapper of {impl.plugin_name!r} yielded twice"
                )
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]

    def config_models(self) -> dict[str, type[BaseModel] | None]:
        """Each loaded processor's config section model (``None`` = takes no config)."""
        self.load()
        models: dict[str, type[BaseModel] | None] = {}
        for info in list(self.loaded):
            try:
                found = self._call_one(info.plugin, "corec_config_model")
            except Exception as exc:  # noqa: BLE001
                self._fail(info, f"corec_config_model raised {type(exc).__name__}: {exc}")
                continue
            models[info.name] = found[0] if found else None
        return models

    def add_cli(self, name: str, group: click.Group) -> bool:
        """Let processor ``name`` add its commands to ``group``; False if it is not loaded."""
        self.load()
        info = self.infos.get(name)
        if info is None or info.status != "loaded":
            return False
        self._call_one(info.plugin, "corec_cli", group=group)
        return True

    async def startup(self, kernel: Kernel, only: list[ProcessorInfo] | None = None) -> None:
        """Run every loaded processor's ``corec_startup`` (awaiting those that are async);
        ``only``: just these (processors added by :meth:`load_new`)."""
        chosen = self.loaded if only is None else [i for i in only if i.status == "loaded"]
        for info in chosen:
            try:
                for outcome in self._call_one(info.plugin, "corec_startup", kernel=kernel):
                    if inspect.isawaitable(outcome):
                        await outcome
            except Exception as exc:  # noqa: BLE001 - one processor's failure skips only it
                # _fail raises ProcessorError itself in strict mode.
                self._fail(info, f"corec_startup raised {type(exc).__name__}: {exc}")

    async def shutdown(self, kernel: Kernel) -> None:
        """Run ``corec_shutdown`` in reverse order; errors are logged, never raised."""
        for info in reversed(self.loaded):
            try:
                for outcome in self._call_one(info.plugin, "corec_shutdown", kernel=kernel):
                    if inspect.isawaitable(outcome):
                        await outcome
            except Exception:
                log.exception("processor %r: corec_shutdown failed", info.name)
