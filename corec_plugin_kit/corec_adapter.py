"""CoreC plugin-loader adapter: the kernel as one CoreC plugin, for both CoreC loaders.

``corec-kit corec install COREC_ROOT`` writes the files each loader needs (docs/corec.md).

CoreC's current loader (``plugins/registry.py``) imports ``plugins.<name>.main`` and awaits the
module-level :func:`inicializar` re-exported there::

    plugin = await inicializar(nucleus, config)  # registered as nucleus.plugins[name]
    respuesta = await nucleus.ejecutar_plugin(name, comando)  # plugin.manejar_comando(comando)

CoreC v4's ``PluginManager`` reads ``plugin.json``, imports its ``main_class`` and drives it::

    plugin = CorecKitPlugin(config=config, redis_client=redis_client, db_config=db_config)
    await plugin.inicializar(nucleus)
    plugin_manager.get_processor(canal)                  # isinstance(plugin, ProcesadorBase)
    respuesta = await plugin.procesar(datos, contexto)   # once per command
    await plugin.detener()

``procesar`` runs ``datos`` through :meth:`Kernel.execute`, the same in-process path as
``corec-kit exec``, and returns the result envelope of docs/protocol.md with CoreC's
``estado`` key beside ``status``, codex's ``message`` (the error's message, or ``"ok"``), and
``mensaje`` beside ``error`` when it failed. ``manejar_comando(comando)`` is the same for the
registry loader, and also takes codex's command forms (a pydantic model, ``{"data": JSON}``).

Records go to CoreC's own PostgreSQL: ``nucleus.db_pool`` when the nucleus has one (used, never
closed), else ``db_config`` (either CoreC shape). With ``stream_in``/``stream_out`` in the plugin
config the kit's stream worker runs as a task of CoreC's event loop, on a Redis client of its own
(``decode_responses=False``) built from CoreC's; :meth:`CorecKitPlugin.detener` stops it, and so
do the event loop's end (``asyncio.run`` cancels it: it hands back its entries and releases
everything) and interpreter exit.

``config`` is the plugin's section of CoreC's configuration. It may carry:

* ``config_file``: a corec-kit config file (JSON or TOML) to read, as ``--config`` would;
* ``kernel`` and one section per processor (``generator``, ``reviser``, ...): overrides applied
  on top of that file and the ``COREC_*`` environment, validated as in the file;
* ``strict``: a processor that fails to load is fatal (as ``--strict``);
* ``stream_in``, ``stream_out``: run the stream worker on these streams (``kernel.*`` keys);
* ``database``: where records go: ``"corec"`` (default: CoreC's pool or ``db_config``, else the
  kit's own ``kernel.database_url``/SQLite), ``"kit"`` (the kit's own), ``"off"``;
* ``channels``: CoreC v4's channels (its ``get_processor`` reads them here);
* ``procesador_base``: ``"module.ProcesadorBase"`` to register with, instead of looking for
  CoreC v4's ``src.core.processors.base``.

Other keys (CoreC's own, such as ``enabled``) are ignored. ``redis_client`` becomes
``kernel.redis`` (so the ``health`` action reports on it; it is never closed here) unless the
worker runs (then ``kernel.redis`` is the worker's own client), and ``db_config`` is kept as
``kernel.corec_db_config`` for processors that want CoreC's database.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import logging
import sys
import weakref
from abc import ABCMeta
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import CorecError, HandlerError, InvalidCommand

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger("corec_plugin_kit.corec")

PLUGIN_JSON = "plugin.json"
DEFAULT_NAME = "corec_kit"
_NOT_SECTIONS = {"config_file", "strict", "db_config", "redis_config", "bloque"}
#: Where CoreC v4 keeps ``ProcesadorBase`` (as imported from its tree's root, or one level up).
PROCESADOR_BASE_MODULES = ("src.core.processors.base", "corec_v4.src.core.processors.base")
_LIVE: weakref.WeakSet[CorecKitPlugin] = weakref.WeakSet()


def plugin_manifest() -> dict[str, Any]:
    """The ``plugin.json`` shipped inside the installed package, as CoreC reads it."""
    text = (
        resources.files(__package__ or "corec_plugin_kit")
        .joinpath(PLUGIN_JSON)
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def _as_dict(value: Any) -> dict[str, Any] | None:
    """A CoreC config object (dict, pydantic model) as a dict; ``None`` when it is neither."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    dump = getattr(value, "model_dump", None) or getattr(value, "dict", None)
    if callable(dump):
        data = dump()
        return dict(data) if isinstance(data, Mapping) else None
    return None


def corec_database_url(db_config: Any) -> str | None:
    """A ``postgresql://`` URL from CoreC's ``db_config``; ``None`` when it names no database.

    Both shapes: CoreC's ``dbname, user, password, host, port`` and v4's
    ``host, port, database, user, password``.
    """
    cfg = _as_dict(db_config)
    if not cfg:
        return None
    database = cfg.get("dbname") or cfg.get("database")
    host = cfg.get("host")
    if not database or not host:
        return None
    user = cfg.get("user") or ""
    password = cfg.get("password")
    auth = quote(str(user), safe="")
    if password:
        auth += ":" + quote(str(password), safe="")
    port = f":{int(cfg['port'])}" if cfg.get("port") else ""
    at = f"{auth}@" if auth else ""
    return f"postgresql://{at}{quote(str(host), safe='')}{port}/{quote(str(database), safe='')}"


def _redis_for_worker(nucleus: Any, client: Any) -> Any:
    """A ``redis.asyncio.Redis`` with ``decode_responses=False`` on CoreC's server, or ``None``.

    From ``nucleus.redis_config`` or ``nucleus.config.redis_config`` (``host, port, username,
    password``), else from the connection settings of CoreC's client (``decode_responses=True``
    in CoreC; the worker needs bytes).
    """
    import redis.asyncio as aioredis

    config = getattr(nucleus, "config", None)
    for source in (getattr(nucleus, "redis_config", None), getattr(config, "redis_config", None)):
        cfg = _as_dict(source)
        if cfg and cfg.get("host"):
            return aioredis.Redis(
                host=str(cfg["host"]),
                port=int(cfg.get("port") or 6379),
                db=int(cfg.get("db") or 0),
                username=cfg.get("username") or None,
                password=cfg.get("password") or None,
                decode_responses=False,
            )
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if pool is not None and isinstance(kwargs, Mapping) and kwargs:
        options = {**kwargs, "decode_responses": False}
        own = aioredis.ConnectionPool(connection_class=pool.connection_class, **options)
        return aioredis.Redis(connection_pool=own)
    return None


def _procesador_bases(explicit: str | None) -> list[ABCMeta]:
    """CoreC v4's ``ProcesadorBase`` classes that can be found (importing nothing new but them)."""
    names = [explicit] if explicit else list(PROCESADOR_BASE_MODULES)
    if not explicit:
        names += [n for n in list(sys.modules) if n.endswith("core.processors.base")]
    bases: list[ABCMeta] = []
    for name in dict.fromkeys(names):
        module_name, _, attr = name.rpartition(".") if explicit else (name, "", "ProcesadorBase")
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # no CoreC v4 here (or a broken one): not ours
                log.debug("no ProcesadorBase in %s", module_name, exc_info=True)
                continue
        base = getattr(module, attr, None)
        if isinstance(base, ABCMeta) and base not in bases:
            bases.append(base)
    return bases


def register_procesador_base(explicit: str | None = None) -> list[ABCMeta]:
    """Make :class:`CorecKitPlugin` a virtual subclass of CoreC v4's ``ProcesadorBase``.

    v4's ``PluginManager.get_processor(channel)`` only returns plugins for which
    ``isinstance(plugin, ProcesadorBase)``. Returns the classes registered with (none outside
    CoreC v4).
    """
    bases = _procesador_bases(explicit)
    for base in bases:
        if not issubclass(CorecKitPlugin, base):
            base.register(CorecKitPlugin)
    return bases


def _error_envelope(datos: Any, error: CorecError) -> dict[str, Any]:
    from .envelopes import result_envelope

    get = datos.get if isinstance(datos, Mapping) else (lambda _key: None)
    return result_envelope(str(get("id") or ""), str(get("action") or ""), error=error)


class CorecKitPlugin:
    """The object CoreC's plugin loader constructs from ``plugin.json``'s ``main_class``."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        redis_client: Any = None,
        db_config: Any = None,
    ) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.redis_client = redis_client
        self.db_config = db_config
        self.nucleus: Any = None
        self.kernel: Kernel | None = None
        self.name = str(self.config.get("name") or DEFAULT_NAME)
        self.store: Any = None
        self.worker: Any = None
        self._owned: list[Any] = []  # what detener closes: our store, Redis client or handle
        self._worker_task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        register_procesador_base(self.config.get("procesador_base"))

    def set_nucleus(self, nucleus: Any) -> None:
        """CoreC v4's ``ProcesadorBase.set_nucleus`` (``get_procesador`` calls it)."""
        self.nucleus = nucleus

    def overrides(self) -> dict[str, Any]:
        """The config sections carried by CoreC's ``config`` (``kernel`` and processors)."""
        return {
            key: dict(value)
            for key, value in self.config.items()
            if key not in _NOT_SECTIONS and isinstance(value, Mapping)
        }

    async def inicializar(self, nucleus: Any = None) -> None:
        """Build the kernel (config, processors, routing) and run the processors' start-up.

        Raises :class:`~corec_plugin_kit.errors.ConfigError` or
        :class:`~corec_plugin_kit.errors.ProcessorError` when the kernel cannot start, so that
        CoreC reports the plugin as failed with the one-line reason.
        """
        from .kernel import Kernel

        if self.kernel is not None:
            return
        self.nucleus = nucleus
        if self.redis_client is None:
            self.redis_client = getattr(nucleus, "redis_client", None)
        if self.db_config is None:
            self.db_config = getattr(nucleus, "db_config", None) or getattr(
                getattr(nucleus, "config", None), "db_config", None
            )
        overrides = self.overrides()
        streams = {
            k: str(self.config[k]) for k in ("stream_in", "stream_out") if self.config.get(k)
        }
        if streams:
            overrides["kernel"] = {**overrides.get("kernel", {}), **streams}
        kernel = Kernel.build(
            self.config.get("config_file"),
            overrides=overrides,
            strict=bool(self.config.get("strict")) or None,
        )
        kernel.redis = self.redis_client
        kernel.corec_db_config = self.db_config
        self._loop = asyncio.get_running_loop()
        try:
            self.store = kernel.store = await self._open_store(kernel, nucleus)
            await kernel.start()
            self.kernel = kernel
            _LIVE.add(self)
            if streams:
                await self._start_worker(kernel, nucleus)
        except BaseException:
            self.kernel = None
            await self._release(kernel)
            raise

    async def _open_store(self, kernel: Kernel, nucleus: Any) -> Any:
        """The record store: CoreC's PostgreSQL when there is one (see the module docstring)."""
        source = str(self.config.get("database") or "corec")
        if source == "off" or not kernel.settings.kernel.records:
            return None
        store: Any = None
        if source == "corec":
            from .storage import PostgresStore

            pool = getattr(nucleus, "db_pool", None)
            url = corec_database_url(self.db_config)
            if pool is not None:
                store = PostgresStore(pool=pool)
            elif url is not None:
                store = PostgresStore(url)
        if store is None:
            from .storage import open_store

            store = open_store(kernel.settings.kernel)
        if getattr(store, "owns_pool", True):
            self._owned.append(store)
        await store.open()
        return store

    async def _start_worker(self, kernel: Kernel, nucleus: Any) -> None:
        from .runtime.partitioned import make_worker

        redis = _redis_for_worker(nucleus, self.redis_client)
        reconnect = None
        if redis is not None:
            self._owned.append(redis)
            await redis.ping()
        else:  # no CoreC Redis to share: the kit's own kernel.redis_url (or embedded server)
            from .runtime.connection import RedisHandle

            handle = RedisHandle(kernel.settings.kernel)
            self._owned.append(handle)
            redis = await handle.connect()
            reconnect = handle.ensure_server
        kernel.redis = redis
        worker = make_worker(kernel, redis, self.store, reconnect=reconnect)
        kernel.runtime = self.worker = worker
        self._worker_task = asyncio.get_running_loop().create_task(
            self._run_worker(worker), name=f"corec-kit worker ({self.name})"
        )
        log.info("corec-kit worker reads %s", kernel.settings.kernel.stream_in)

    async def _run_worker(self, worker: Any) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            # The event loop ends (asyncio.run cancels every task): worker.run has already
            # handed its entries back; release the rest here, CoreC will not call detener.
            await self.detener()
            raise
        except Exception:
            log.exception("the corec-kit worker stopped")

    async def procesar(self, datos: Any, contexto: Any = None) -> dict[str, Any]:
        """Run one command envelope and return its result envelope (never raises for it).

        ``datos`` is a command envelope: a dict ``{"action", "params", "id"?, "meta"?}``, the
        stream-field forms (``{"payload": JSON}`` or flat fields with ``params`` as JSON text),
        or JSON text of the envelope. ``contexto``, when it is a dict and the command carries no
        ``meta``, is passed to the handler as ``ctx.meta``.
        """
        if self.kernel is None:
            error = HandlerError("the corec-kit plugin is not initialised: call inicializar first")
            return self._with_estado(_error_envelope(datos, error))
        try:
            command = self._command(datos)
        except InvalidCommand as exc:
            return self._with_estado(_error_envelope(datos, exc))
        if isinstance(contexto, Mapping) and command.get("meta") is None:
            command["meta"] = dict(contexto)
        envelope = await self.kernel.execute(command)
        if envelope.get("processor") is not None or envelope.get("error", {}).get("type") in (
            "unknown_action",
            "invalid_params",
        ):
            await self._record(command, envelope)
        return self._with_estado(envelope)

    async def manejar_comando(self, comando: Any) -> dict[str, Any]:
        """CoreC's ``nucleus.ejecutar_plugin(name, comando)`` calls this: as :meth:`procesar`.

        ``comando`` may also be a codex command: a pydantic model (``model_dump``), or
        ``{"data": JSON}`` as codex's stream entries carry it.
        """
        return await self.procesar(comando, None)

    async def detener(self) -> None:
        """Stop the worker, run the processors' shutdown hooks, release (safe to call twice)."""
        worker, self.worker = self.worker, None
        task, self._worker_task = self._worker_task, None
        if worker is not None:
            worker.stop()
        if task is not None and task is not asyncio.current_task() and not task.done():
            grace = worker.cfg.shutdown_grace_s if worker is not None else 0
            done, _ = await asyncio.wait({task}, timeout=grace + 10)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        kernel, self.kernel = self.kernel, None
        _LIVE.discard(self)
        await self._release(kernel)

    async def _release(self, kernel: Kernel | None) -> None:
        owned, self._owned = self._owned, []
        self.store = None
        try:
            if kernel is not None:
                kernel.runtime = None
                kernel.redis = None  # CoreC owns its client: never closed here
                kernel.store = None
                await kernel.stop()
        finally:
            for resource in reversed(owned):
                close = getattr(resource, "aclose", None) or resource.close
                try:
                    await close()
                except Exception:  # releasing: go on with the rest
                    log.debug("closing %r failed", resource, exc_info=True)

    async def _record(self, command: dict[str, Any], envelope: dict[str, Any]) -> None:
        """Write the command's record (the worker writes its own): failures are logged."""
        if self.store is None or not envelope.get("id"):
            return
        from .storage import Record

        record = Record.from_result(
            envelope,
            params=command.get("params"),
            deliveries=1,
            finished_at=datetime.now(timezone.utc),
        )
        try:
            await self.store.write_batch([record])
        except Exception:
            log.exception("recording command %s failed", record.command_key)

    @staticmethod
    def _command(datos: Any) -> dict[str, Any]:
        from .envelopes import parse_fields

        codex = False
        dump = getattr(datos, "model_dump", None)
        if callable(dump) and not isinstance(datos, Mapping):
            datos = dump(mode="json")  # a pydantic command (codex's PluginCommand, Cmd...)
            codex = True
        if isinstance(datos, Mapping) and "data" in datos and "action" not in datos:
            datos = datos["data"]  # codex's stream entry form: {"data": JSON}
            codex = True
            if isinstance(datos, Mapping):
                datos = dict(datos)
        if isinstance(datos, (str, bytes)):
            command = parse_fields({"payload": datos})
        elif not isinstance(datos, Mapping):
            raise InvalidCommand(
                "datos must be a command envelope (a dict with `action`), "
                f"not {type(datos).__name__}"
            )
        elif "payload" in datos or isinstance(datos.get("params"), (str, bytes)):
            command = parse_fields(dict(datos))
        else:
            command = dict(datos)
        if codex:
            command["wire"] = "codex"  # handlers pick codex's defaults (ctx.wire)
        return command

    @staticmethod
    def _with_estado(envelope: dict[str, Any]) -> dict[str, Any]:
        from .envelopes import codex_message

        envelope["estado"] = envelope["status"]
        envelope["message"] = codex_message(envelope)
        if envelope.get("error"):
            envelope["mensaje"] = envelope["message"]
        return envelope


async def inicializar(nucleus: Any, config: Mapping[str, Any] | None = None) -> CorecKitPlugin:
    """Entry point of CoreC's ``plugins/registry.py`` (``plugins/<name>/main.py`` re-exports it).

    Builds the plugin from ``config`` (its ``name`` key, default ``corec_kit``, names it), awaits
    its :meth:`~CorecKitPlugin.inicializar`, registers it as ``nucleus.plugins[name]`` (and with
    ``nucleus.registrar_plugin(name, plugin)`` where the nucleus has that) and returns it.
    ``nucleus.ejecutar_plugin(name, comando)`` then reaches :meth:`~CorecKitPlugin.manejar_comando`.
    """
    plugin = CorecKitPlugin(config)
    await plugin.inicializar(nucleus)
    plugins = getattr(nucleus, "plugins", None)
    if isinstance(plugins, dict):
        plugins[plugin.name] = plugin
    registrar = getattr(nucleus, "registrar_plugin", None)
    if callable(registrar):
        done = registrar(plugin.name, plugin)
        if asyncio.iscoroutine(done):
            await done
    return plugin


@atexit.register
def _release_at_exit() -> None:
    """Interpreter exit with plugins never stopped (CoreC's nucleus never calls ``detener``).

    When their event loop still exists and is idle, ``detener`` runs there (bounded); else the
    dispatcher's process and thread pools are let go of at once, so nothing keeps exit waiting.
    """
    for plugin in list(_LIVE):
        kernel, loop = plugin.kernel, plugin._loop
        if kernel is None:
            continue
        if loop is not None and not loop.is_closed() and not loop.is_running():
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait_for(plugin.detener(), 15))
                continue
        with contextlib.suppress(Exception):
            kernel.dispatcher.close()


__all__ = [
    "DEFAULT_NAME",
    "PLUGIN_JSON",
    "CorecKitPlugin",
    "corec_database_url",
    "inicializar",
    "plugin_manifest",
    "register_procesador_base",
]
