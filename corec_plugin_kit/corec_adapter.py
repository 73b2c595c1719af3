"""CoreC plugin-loader adapter: the kernel as one CoreC plugin.

CoreC reads ``plugin.json`` (shipped beside this module), imports its ``main_class`` and drives
it::

    plugin = CorecKitPlugin(config, redis_client, db_config)
    await plugin.inicializar(nucleus)
    respuesta = await plugin.procesar(datos, contexto)   # once per command
    await plugin.detener()

``procesar`` runs ``datos`` through :meth:`Kernel.execute`, the same in-process path as
``corec-kit exec``, and returns the result envelope of docs/protocol.md with CoreC's
``estado`` key beside ``status`` (and ``mensaje`` beside ``error`` when it failed).

``config`` is the plugin's section of CoreC's configuration. It may carry:

* ``config_file``: a corec-kit config file (JSON or TOML) to read, as ``--config`` would;
* ``kernel`` and one section per processor (``generator``, ``reviser``, ...): overrides applied
  on top of that file and the ``COREC_*`` environment, validated as in the file;
* ``strict``: a processor that fails to load is fatal (as ``--strict``).

Other keys (CoreC's own, such as ``enabled``) are ignored. ``redis_client`` becomes
``kernel.redis`` (so the ``health`` action reports on it; it is never closed here) and
``db_config`` is kept as ``kernel.corec_db_config`` for processors that want CoreC's database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import CorecError, HandlerError, InvalidCommand

if TYPE_CHECKING:
    from .kernel import Kernel

PLUGIN_JSON = "plugin.json"
_NOT_SECTIONS = {"config_file", "strict"}


def plugin_manifest() -> dict[str, Any]:
    """The ``plugin.json`` shipped inside the installed package, as CoreC reads it."""
    text = (
        resources.files(__package__ or "corec_plugin_kit")
        .joinpath(PLUGIN_JSON)
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def _error_envelope(datos: Any, error: CorecError) -> dict[str, Any]:
    get = datos.get if isinstance(datos, Mapping) else (lambda _key: None)
    return {
        "id": str(get("id") or ""),
        "action": str(get("action") or ""),
        "status": "error",
        "result": None,
        "error": error.to_wire(),
        "processor": None,
        "attempt": 1,
        "duration_ms": 0.0,
        "entry_id": None,
    }


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

        self.nucleus = nucleus
        kernel = Kernel.build(
            self.config.get("config_file"),
            overrides=self.overrides(),
            strict=bool(self.config.get("strict")) or None,
        )
        kernel.redis = self.redis_client
        kernel.corec_db_config = self.db_config
        await kernel.start()
        self.kernel = kernel

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
        return self._with_estado(await self.kernel.execute(command))

    async def detener(self) -> None:
        """Run the processors' shutdown hooks and release the kernel (safe to call twice)."""
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.redis = None  # CoreC owns its client: never closed here
            await kernel.stop()

    @staticmethod
    def _command(datos: Any) -> dict[str, Any]:
        from .envelopes import parse_fields

        if isinstance(datos, (str, bytes)):
            return parse_fields({"payload": datos})
        if not isinstance(datos, Mapping):
            raise InvalidCommand(
                "datos must be a command envelope (a dict with `action`), "
                f"not {type(datos).__name__}"
            )
        if "payload" in datos or isinstance(datos.get("params"), (str, bytes)):
            return parse_fields(dict(datos))
        return dict(datos)

    @staticmethod
    def _with_estado(envelope: dict[str, Any]) -> dict[str, Any]:
        envelope["estado"] = envelope["status"]
        if envelope.get("error"):
            envelope["mensaje"] = envelope["error"]["message"]
        return envelope


__all__ = ["PLUGIN_JSON", "CorecKitPlugin", "plugin_manifest"]
