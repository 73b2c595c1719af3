"""The kernel: settings + processors + routing + dispatch, built once per process.

``Kernel.build()`` is what the CLI, the CoreC adapter and the worker call. It loads processors
(entry points unless given a manager), validates every config section, builds the routing
table and reports every configuration problem at once.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .config import Settings, load_settings, raise_problems, strict_from_env
from .dispatch import Dispatcher
from .plugins import ProcessorManager, env_flag, env_list

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .errors import UnknownAction
    from .routing import RoutingTable
    from .runtime.connection import RedisClient, RedisHandle
    from .storage import RecordStore


class RuntimeView(Protocol):
    """What others may ask of the stream worker driving a kernel (``kernel.runtime``)."""

    #: This worker's consumer name in the group.
    consumer: str

    def stop(self) -> None:
        """Stop reading; in-flight commands get the grace period to finish."""

    def breaker_states(self) -> dict[str, str]:
        """Each processor's circuit breaker state: ``closed``, ``open`` or ``half_open``."""
        ...

    def breaker_figures(self) -> dict[str, dict[str, Any]]:
        """Each processor's circuit breaker as workers publish it, sorted by processor:
        ``{processor: {"state", "failures"}}`` (``failures``: consecutive transient ones)."""
        ...

    def counts(self) -> dict[str, int]:
        """The counts of this run (processed, ok, errors, retried, dead-lettered...)."""
        ...


def manager_for(
    settings: Settings | None,
    *,
    strict: bool | None = None,
    load: list[str] | None = None,
    disable: list[str] | None = None,
) -> ProcessorManager:
    """A ProcessorManager honouring flags, then ``COREC_*`` variables, then the config file.

    The allowlist comes from the first of ``load``, ``COREC_LOAD_PROCESSORS``,
    ``kernel.load_processors`` that is set; the blocklists of all three are merged; strict mode is
    on when any of the three asks for it.
    """
    k = settings.kernel if settings is not None else None
    allow = load or env_list("COREC_LOAD_PROCESSORS") or (k.load_processors if k else None)
    deny = set(disable or ()) | set(env_list("COREC_DISABLE_PROCESSORS") or ())
    if k is not None:
        deny |= set(k.disable_processors)
    return ProcessorManager(
        allow=allow,
        deny=deny,
        strict=bool(strict)
        or env_flag("COREC_STRICT_PROCESSORS")
        or bool(k is not None and k.strict_processors),
    )


class Kernel:
    """One configured kernel. Handlers reach it as ``ctx.kernel``.

    Attributes processors may use (docs/writing-processors.md, "What a processor may use of
    the kernel"): ``settings`` (``settings.kernel`` is the kernel section),
    ``processor_config(name)``, ``execute``, and, when the stream runtime runs, ``redis`` (a
    ``redis.asyncio.Redis``, or a ``RedisCluster`` on a cluster) and ``store`` (the record
    store). What they need of ``processors``, ``routing`` and ``dispatcher`` they get from
    ``corec_plugin_kit.api`` (``processor_infos``, ``describe_actions``, ``run_in_thread``...).
    """

    def __init__(self, settings: Settings, processors: ProcessorManager) -> None:
        self.settings = settings
        self.processors = processors
        self.routing: RoutingTable = self._route()
        self.dispatcher = Dispatcher(self, self.routing)
        # The runtime context: set by whoever runs the kernel, None otherwise.
        #: The stream runtime's Redis client (``decode_responses=False``; a cluster client on
        #: a Redis Cluster).
        self.redis: RedisClient | None = None
        #: The record store, when records are on and the worker or the CoreC adapter runs.
        self.store: RecordStore | None = None
        #: The connection :attr:`redis` came from, when the kernel opened it itself
        #: (``runtime.connection.kernel_redis``); closed by :meth:`stop`.
        self.redis_handle: RedisHandle | None = None
        #: The stream worker, when ``corec-kit run`` or the CoreC adapter drives this kernel.
        self.runtime: RuntimeView | None = None
        #: CoreC's ``db_config``, when the CoreC adapter built this kernel.
        self.corec_db_config: Mapping[str, Any] | None = None
        self._started = False

    @classmethod
    def build(
        cls,
        config: str | os.PathLike[str] | None = None,
        *,
        processors: ProcessorManager | None = None,
        overrides: dict[str, Any] | None = None,
        strict: bool | None = None,
        load: list[str] | None = None,
        disable: list[str] | None = None,
    ) -> Kernel:
        """Load config and processors; raise ConfigError / ProcessorError / ActionConflict."""
        settings = load_settings(config, overrides=overrides)
        if processors is None:
            processors = manager_for(settings, strict=strict, load=load, disable=disable)
        processors.load()
        problems = list(settings.problems)
        problems += settings.validate_processors(processors.config_models())
        warnings = settings.section_warnings(processors.infos)
        claimed = {action for info in processors.loaded for action in info.actions}
        warnings += [
            f"kernel.action_policies.{action}: no loaded processor claims this action, so "
            "the policy applies to nothing (`corec-kit actions` lists the actions)"
            for action in sorted(set(settings.kernel.action_policies) - claimed)
        ]
        if warnings and (strict or settings.kernel.strict_processors or strict_from_env()):
            problems += warnings
        else:
            for warning in warnings:
                log.warning("config %s: %s", settings.source or "(defaults)", warning)
            settings.warnings += warnings
        raise_problems(problems)
        return cls(settings, processors)

    def _route(self) -> RoutingTable:
        """The routing table of the loaded processors, each action with its policy in force
        (``kernel.action_policies`` over what the processor registered)."""
        from .policies import effective

        routing = self.processors.routing(self.settings.kernel.action_owners)
        configured = self.settings.kernel.action_policies
        for action in routing:
            spec = routing.route(action)
            spec.policy = effective(spec.registered_policy, configured.get(action))
        return routing

    def processor_config(self, name: str) -> BaseModel | None:
        return self.settings.processors.get(name)

    async def start(self) -> None:
        """Run the processors' start-up hooks (once); rebuild routing if one of them failed."""
        if self._started:
            return
        self._started = True
        before = {info.name for info in self.processors.loaded}
        await self.processors.startup(self)
        if {info.name for info in self.processors.loaded} != before:
            self.routing = self._route()
            self.dispatcher.routing = self.routing
            self.dispatcher.wrapped = self.processors.wraps_commands()

    async def reload(self) -> list[str]:
        """Load the processors installed since start (``SIGHUP``); the names added.

        Each new processor's config section is read from the config file as it is now and
        validated; its start-up hook runs; the routing table is rebuilt and swapped in at once,
        so commands already running finish on what they started with and the next ones see the
        new actions. A new processor that fails (invalid section, an action another processor
        claims, a failing start-up hook) is marked failed and left out; nothing else changes.
        Kernel settings and processors loaded already keep their values and code until a
        restart.
        """
        from .errors import ActionConflict, CorecError

        added = self.processors.load_new()
        if not added:
            return []
        models = self.processors.config_models()
        try:
            fresh = load_settings(self.settings.source)
        except CorecError as exc:
            for info in added:
                self.processors.fail(info, f"the config file cannot be read: {exc.message}")
            return []
        for info in added:
            if info.status != "loaded":
                continue
            problems = fresh.validate_processors({info.name: models.get(info.name)})
            if problems:
                self.processors.fail(info, f"invalid config: {'; '.join(problems)}")
                continue
            self.settings.processors[info.name] = fresh.processors.get(info.name)
        try:
            routing = self._route()
        except ActionConflict as exc:
            for info in added:
                self.processors.fail(info, exc.message)
            routing = self._route()
        if self._started:
            await self.processors.startup(self, only=added)
            routing = self._route()
        self.routing = self.dispatcher.routing = routing
        self.dispatcher.wrapped = self.processors.wraps_commands()
        return [info.name for info in added if info.status == "loaded"]

    def unknown_action(self, action: str) -> UnknownAction:
        """The error for an action no loaded processor claims, saying so when processors were
        installed after this kernel loaded its own (a restart or ``SIGHUP`` loads them)."""
        from .errors import UnknownAction

        return UnknownAction(action, newer=self.processors.installed_since_load())

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            await self.processors.shutdown(self)
        finally:
            # Kills what still runs in the process pool and lets go of the thread pool at once:
            # neither may keep a stopping process alive.
            self.dispatcher.close()
        if self.redis_handle is not None:
            handle, self.redis_handle, self.redis = self.redis_handle, None, None
            await handle.close()

    async def __aenter__(self) -> Kernel:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def execute(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one command envelope in-process (``exec``, CoreC adapter); returns the result."""
        from .envelopes import check_content, check_shape, result_envelope
        from .errors import InvalidCommand

        data = dict(command)
        # How the command arrived (the adapter's codex forms say "codex"): not an envelope key.
        wire = data.pop("wire", "kit")
        try:
            if wire not in ("kit", "codex"):
                raise InvalidCommand("`wire` must be 'kit' or 'codex'")
            parsed = check_shape(data)
            check_content(parsed)
        except InvalidCommand as exc:
            return result_envelope(
                str(command.get("id") or ""), str(command.get("action") or ""), error=exc
            )
        if not parsed.get("id"):
            parsed["id"] = f"exec-{uuid.uuid4().hex}"
        parsed["wire"] = wire
        envelope, _ = await self.dispatcher.dispatch(parsed)
        return envelope
