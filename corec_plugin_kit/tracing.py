"""OpenTelemetry tracing of commands: a processor of the kit, loaded only when asked for.

``COREC_PLUGINS=corec_plugin_kit.tracing`` (or ``corec-kit --plugin corec_plugin_kit.tracing``)
loads this module as the processor ``tracing``; an application that builds its own
:class:`~corec_plugin_kit.plugins.ProcessorManager` registers a :class:`Tracing` instead. It
claims no action. Its :func:`~corec_plugin_kit.hookspecs.corec_command` wrapper, outermost of
all, puts one CONSUMER span around every routed command, continuing the producer's trace
from ``meta.traceparent`` / ``meta.tracestate`` (W3C trace context); its start-up hook sets the
OpenTelemetry SDK up from the ``OTEL_*`` variables when the process has no tracer provider yet.

* With ``OTEL_SDK_DISABLED=true`` this module implements no hook at all, so the dispatch never
  calls the wrapper (``Dispatcher.wrapped`` stays False).
* Without OpenTelemetry (the ``otel`` extra) importing it fails with what to install: the
  processor is listed ``failed`` and nothing else changes.

The producer side is :class:`SendSpan`, which ``runtime/ops.send_command`` uses when the
process has OpenTelemetry loaded. Spans follow the OpenTelemetry messaging semantic conventions
v1.44.0 ("process" and "send" spans); docs/operations.md, "Tracing", lists what they hold.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ConfigError, error_from_exception
from .hookspecs import hookimpl
from .redaction import redact

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # the `otel` extra is not installed
    raise ImportError(
        f"tracing needs OpenTelemetry ({exc}): pip install 'corec-plugin-kit[otel]'"
    ) from None

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, SpanContext, TracerProvider

    from .config import KernelConfig
    from .dispatch import CommandCall
    from .kernel import Kernel

log = logging.getLogger("corec_plugin_kit.tracing")

#: The semantic conventions the spans follow (their schema URL, given to the tracer).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
#: The instrumentation scope of every span made here.
SCOPE = "corec_plugin_kit.tracing"
#: ``messaging.system`` (not one of the conventions' well-known values, which allow others).
SYSTEM = "redis"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The service name of the SDK set up here, when OTEL_SERVICE_NAME does not give one.
DEFAULT_SERVICE_NAME = "corec-kit"

_W3C = TraceContextTextMapPropagator()
#: How much earlier than the action's limit a cancelled command still counts as timed out: the
#: stream worker arms its timer just before the dispatch, so a moment before this span began.
_TIMER_SLACK_S = 0.005


def sdk_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """``OTEL_SDK_DISABLED=true``, OpenTelemetry's own off switch: no hook, no span."""
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def creation_context(meta: Mapping[str, Any] | None) -> tuple[Context, SpanContext] | None:
    """The producer's context carried in ``meta`` (``traceparent``, and ``tracestate`` when
    there is one), as a context to parent a span with and as the span context to link to;
    ``None`` when ``meta`` has no ``traceparent`` that parses."""
    if not meta:
        return None
    traceparent = meta.get(TRACEPARENT)
    if not isinstance(traceparent, str):
        return None
    carrier = {TRACEPARENT: traceparent}
    tracestate = meta.get(TRACESTATE)
    if isinstance(tracestate, str):
        carrier[TRACESTATE] = tracestate
    found = _W3C.extract(carrier, otel_context.Context())
    span_context = trace.get_current_span(found).get_span_context()
    return (found, span_context) if span_context.is_valid else None


def _destination(cfg: KernelConfig, command_id: Any, attributes: dict[str, Any]) -> str:
    """Set the destination attributes (the configured ``stream_in``; with partitions, the
    partition the command's ``id`` maps to); the destination's name."""
    attributes["messaging.destination.name"] = cfg.stream_in
    if cfg.partitions > 1 and isinstance(command_id, str) and command_id:
        from .partitions import partition_of

        attributes["messaging.destination.partition.id"] = str(
            partition_of(command_id, cfg.partitions)
        )
    return cfg.stream_in


class Tracing:
    """The tracing processor's hooks, with one tracer provider (default: the global one).

    :param tracer_provider: where spans go; ``None`` uses the global provider and, when none
        is set at start-up, sets one up from the ``OTEL_*`` variables (:func:`configure_sdk`).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._given = tracer_provider
        # With the global provider this is a proxy: it follows the provider set later.
        self._tracer = trace.get_tracer(
            SCOPE, __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        self._sdk: SdkTracerProvider | None = None

    @hookimpl
    def corec_startup(self, kernel: Kernel) -> None:
        """Give the process a tracer provider when neither the application (nor
        ``opentelemetry-instrument``) set one."""
        unset = isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        if self._given is None and self._sdk is None and unset:
            self._sdk = configure_sdk()

    @hookimpl
    def corec_shutdown(self, kernel: Kernel) -> None:
        """Export the spans still buffered by the provider set up here."""
        if self._sdk is not None:
            self._sdk.force_flush(5_000)

    @hookimpl(wrapper=True, tryfirst=True)
    def corec_command(self, call: CommandCall) -> Generator[None, Any, Awaitable[Any]]:
        """One CONSUMER span per command, current while the command runs (spans of the
        validation, the inner wrappers' awaitables and an async handler are its children);
        ended however the command ends, a refusal and cancellation included."""
        started = time.monotonic()
        span = self._start(call)
        try:
            inner = yield
        except BaseException as exc:  # refused by an inner wrapper: the span says so
            self._finish(span, call, started, exc)
            raise
        return self._run(span, call, started, inner)

    async def _run(self, span: Span, call: CommandCall, started: float, inner: Any) -> Any:
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = await inner
        except BaseException as exc:  # errors and cancellation (the worker's timer) alike
            self._finish(span, call, started, exc)
            raise
        finally:
            otel_context.detach(token)
        self._finish(span, call, started, None)
        return result

    def _start(self, call: CommandCall) -> Span:
        ctx = call.ctx
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "corec.action": call.action,
            "corec.processor": call.processor,
            "corec.key": ctx.key,
            "corec.attempt": ctx.attempt,
        }
        name = "process"
        if ctx.entry_id is not None:  # read from the stream (not `exec`, not in-process)
            cfg = ctx.kernel.settings.kernel
            name = f"process {_destination(cfg, call.command.get('id'), attributes)}"
            attributes["messaging.consumer.group.name"] = cfg.group
            attributes["messaging.message.id"] = ctx.entry_id
            runtime = ctx.kernel.runtime
            if runtime is not None:
                attributes["messaging.client.id"] = runtime.consumer
        parent: Context | None = None
        links: list[Link] | None = None
        found = creation_context(ctx.meta)
        if found is not None:
            links = [Link(found[1])]
            # The conventions' rule for a single message: the producer's context is the
            # parent unless the command runs in the scope of another span (then a link only).
            if not trace.get_current_span().get_span_context().is_valid:
                parent = found[0]
        return self._tracer.start_span(
            name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
        )

    def _finish(
        self, span: Span, call: CommandCall, started: float, exc: BaseException | None
    ) -> None:
        if exc is None:
            span.set_attribute("corec.outcome", "ok")
        else:
            if isinstance(exc, Exception):  # the result's error, as the dispatch maps it
                error = error_from_exception(exc)
                outcome, message = error.wire_type, error.message
            else:
                outcome, message = self._cancelled(call, started)
            span.set_attribute("corec.outcome", outcome)
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, message))
        span.end()

    @staticmethod
    def _cancelled(call: CommandCall, started: float) -> tuple[str, str]:
        """A cancelled command: the stream worker's timer (it cancels the task at the action's
        limit, and answers ``timeout``), or a stop."""
        dispatcher = call.ctx.kernel.dispatcher
        if time.monotonic() - started >= dispatcher.timeout_for(call.spec) - _TIMER_SLACK_S:
            return "timeout", dispatcher.timeout_error(call.spec).message
        return "cancelled", "cancelled before it finished (the worker stopped)"


#: The exporter ``otlp`` stands for, by OTLP protocol (grpc when none is set, as the SDK's own
#: configuration does), and the package that provides each exporter.
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_EXPORTER_PACKAGES = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
}


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``; ``none``: none),
    ``otlp`` resolved by ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``
    to ``otlp_proto_grpc`` (default) or ``otlp_proto_http``.

    :raises ConfigError: an OTLP protocol that is neither ``grpc`` nor ``http/protobuf``.
    """
    names = []
    for name in (part.strip() for part in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")):
        if not name or name == "none":
            continue
        if name == "otlp":
            protocol = (
                environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc"
            ).strip()
            if protocol not in _OTLP_BY_PROTOCOL:
                raise ConfigError(
                    f"tracing: the OTLP protocol {protocol!r} is not one of "
                    f"{', '.join(_OTLP_BY_PROTOCOL)} (OTEL_EXPORTER_OTLP_PROTOCOL)"
                )
            name = _OTLP_BY_PROTOCOL[protocol]
        names.append(name)
    return names


def configure_sdk(environ: Mapping[str, str] = os.environ) -> SdkTracerProvider | None:
    """Set the global tracer provider up from the ``OTEL_*`` variables, as OpenTelemetry's
    SDK reads them: the exporters of :func:`exporter_names` (any name an installed exporter
    registers: ``console``, ``otlp_proto_http``...), each behind a batch processor; the
    resource from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (service name
    ``corec-kit`` when neither gives one); the sampler from ``OTEL_TRACES_SAMPLER``. ``None``
    when the SDK is not installed.

    :raises ConfigError: an exporter no installed package provides.
    """
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "tracing: no tracer provider is set and the OpenTelemetry SDK is not installed: "
            "spans are not recorded (pip install 'corec-plugin-kit[otel]')"
        )
        return None
    from importlib.metadata import entry_points

    names = exporter_names(environ)
    exporters = []
    for name in names:
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            package = _EXPORTER_PACKAGES.get(name, "the package that provides it")
            given = environ.get("OTEL_TRACES_EXPORTER")
            asked = f"OTEL_TRACES_EXPORTER={given}" if given else "OTEL_TRACES_EXPORTER's default"
            raise ConfigError(
                f"tracing: no installed package provides the span exporter {name!r} ({asked}):"
                f" pip install {package}, or set OTEL_TRACES_EXPORTER=console (or none)"
            )
        exporters.append(found[0].load()())
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    provider = SdkProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing: OpenTelemetry SDK set up, exporters: %s", ", ".join(names) or "none")
    return provider


class SendSpan:
    """The producer side: the "send" span (PRODUCER) of one command ``send_command`` XADDs,
    and the ``meta`` that carries its context to the worker.

    Made only in a process that has OpenTelemetry loaded. A ``traceparent`` the caller put in
    ``meta`` is the command's own creation context: it is sent unchanged and the span links to
    it. Otherwise ``meta`` gets the span's context (with a tracer provider) or the current one
    (without: the no-op span has none of its own).
    """

    def __init__(
        self, cfg: KernelConfig, action: str, key: str, meta: Mapping[str, Any] | None
    ) -> None:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "corec.action": action,
            "corec.key": key,
        }
        destination = _destination(cfg, key, attributes)
        custom = creation_context(meta)
        tracer = trace.get_tracer(SCOPE, __version__, schema_url=SCHEMA_URL)
        self.span = tracer.start_span(
            f"send {destination}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            links=[Link(custom[1])] if custom is not None else None,
        )
        #: What to send as the envelope's ``meta`` (``None``: nothing).
        self.meta: dict[str, Any] | None = dict(meta) if meta else None
        if meta is None or TRACEPARENT not in meta:
            carrier: dict[str, str] = {}
            mine = self.span.get_span_context().is_valid
            _W3C.inject(carrier, trace.set_span_in_context(self.span) if mine else None)
            if carrier:
                self.meta = {**(self.meta or {}), **carrier}
        self._open = True

    def end(self, entry_id: str | None = None, error: BaseException | None = None) -> None:
        """End the span (once; later calls do nothing): sent as ``entry_id``, or failed."""
        if not self._open:
            return
        self._open = False
        if entry_id is not None:
            self.span.set_attribute("messaging.message.id", entry_id)
        if error is not None:
            self.span.set_attribute("error.type", type(error).__qualname__)
            self.span.set_status(Status(StatusCode.ERROR, redact(str(error))))
        self.span.end()


# The processor that COREC_PLUGINS=corec_plugin_kit.tracing loads is this module: its hooks are
# those of one Tracing on the global provider, and there are none with OTEL_SDK_DISABLED=true.
if not sdk_disabled():
    _TRACING = Tracing()
    corec_startup = _TRACING.corec_startup
    corec_shutdown = _TRACING.corec_shutdown
    corec_command = _TRACING.corec_command

__all__ = [
    "SCHEMA_URL",
    "SendSpan",
    "Tracing",
    "configure_sdk",
    "creation_context",
    "exporter_names",
]
