"""OpenTelemetry tracing (corec_plugin_kit.tracing, the ``otel`` extra) on a real worker and
real Redis, spans caught by the SDK's in-memory exporter: the worker's CONSUMER span continues
the producer's trace (``meta.traceparent``), failures and time-outs give ERROR spans that end,
``exec`` is traced too, and with tracing off nothing is wrapped, made or imported. One test
runs the real CLI (``--plugin corec_plugin_kit.tracing``), whose SDK is set up from OTEL_*.

Skipped when OpenTelemetry is not installed, unless CI is set: then it fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import redis
from runtime_helpers import payload, results, subprocess_env

from corec_plugin_kit import ConfigError, Unauthorized, hookimpl
from corec_plugin_kit.plugins import ProcessorManager
from corec_plugin_kit.runtime.ops import send_command
from corec_plugin_kit.runtime.testing import require_service

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    from corec_plugin_kit import tracing
except ImportError:
    HAVE_OTEL = False
else:
    HAVE_OTEL = True

#: The W3C trace-context specification's own example: what a producer in any language sends.
TRACE_ID, PARENT_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@pytest.fixture(autouse=True)
def _needs_opentelemetry() -> None:
    require_service(
        HAVE_OTEL, "OpenTelemetry (pip install -e '.[otel]', the kit's extra)", "is not installed"
    )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Any:
    """A tracer provider of this test only (the global one is never set in-process)."""
    made = TracerProvider(shutdown_on_exit=False)
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


def traceparent(context: Any) -> str:
    """The W3C ``traceparent`` of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def consumer_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    """The finished CONSUMER spans by command key."""
    found: dict[str, ReadableSpan] = {}
    for span in exporter.get_finished_spans():
        if span.kind is SpanKind.CONSUMER:
            assert span.attributes is not None
            key = str(span.attributes["corec.key"])
            assert key not in found, f"two spans for {key}"
            found[key] = span
    return found


def fresh_module() -> ModuleType:
    """corec_plugin_kit.tracing imported anew (its hooks are decided at import)."""
    spec = importlib.util.spec_from_file_location("corec_plugin_kit.tracing", tracing.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_worker_span_continues_the_producer_trace(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any, provider: Any, exporter: InMemorySpanExporter,
) -> None:  # fmt: skip
    corec_register(tracing.Tracing(provider), name="tracing")
    kernel = echo_kernel()
    assert kernel.dispatcher.wrapped
    producer_tracer = provider.get_tracer("producer")
    with producer_tracer.start_as_current_span("order", kind=SpanKind.PRODUCER) as producer:
        sent = await send_command(kernel, "echo", {"n": 1}, command_id="t1", meta={"who": "a"})
    mine = producer.get_span_context()
    [(_eid, fields)] = await corec_redis.xrange(corec_streams["stream_in"])
    # The producer's context rides in meta, beside what the caller put there.
    assert orjson.loads(fields[b"payload"])["meta"] == {
        "who": "a", "traceparent": traceparent(mine)
    }  # fmt: skip

    await corec_worker(kernel)
    assert (await results(corec_redis, corec_streams["stream_out"]))["t1"]["status"] == "ok"
    span = consumer_spans(exporter)["t1"]
    stream = corec_streams["stream_in"]
    assert span.name == f"process {stream}"
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == mine.trace_id  # one trace, producer to worker
    assert span.parent.span_id == mine.span_id
    assert [link.context.span_id for link in span.links] == [mine.span_id]
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert isinstance(attributes.pop("messaging.client.id"), str)  # the worker's consumer name
    assert attributes == {
        "messaging.system": "redis",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": stream,
        "messaging.consumer.group.name": corec_streams["group"],
        "messaging.message.id": sent["entry_id"],
        "corec.action": "echo",
        "corec.processor": "echo_proc",
        "corec.key": "t1",
        "corec.attempt": 1,
        "corec.outcome": "ok",
    }
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.schema_url == tracing.SCHEMA_URL


async def test_failed_commands_give_error_spans(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any, provider: Any, exporter: InMemorySpanExporter,
) -> None:  # fmt: skip
    corec_register(tracing.Tracing(provider), name="tracing")
    stream = corec_streams["stream_in"]
    await corec_redis.xadd(stream, payload("fail", {}, id="refused"))
    await corec_redis.xadd(stream, payload("boom", {}, id="bug"))
    await corec_redis.xadd(stream, payload("echo", {"n": "x"}, id="invalid"))
    await corec_redis.xadd(stream, payload("echo", {"n": 2}, id="fine"))
    await corec_worker(echo_kernel(max_deliveries=1))
    spans = consumer_spans(exporter)
    expected = {
        "refused": ("handler_error", "this action always refuses"),
        "bug": ("handler_error", "RuntimeError: unexpected"),
        "invalid": ("invalid_params", "invalid params for 'echo'"),
    }
    for key, (kind, message) in expected.items():
        span = spans[key]
        assert span.status.status_code is StatusCode.ERROR, key
        assert (span.status.description or "").startswith(message), span.status.description
        assert span.attributes is not None
        assert span.attributes["error.type"] == span.attributes["corec.outcome"] == kind
    assert spans["fine"].attributes is not None
    assert "error.type" not in spans["fine"].attributes


async def test_a_timed_out_command_s_span_ends(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any, provider: Any, exporter: InMemorySpanExporter,
) -> None:  # fmt: skip
    """The stream worker's timer cancels the command's task: the span still ends, as a
    timeout."""
    corec_register(tracing.Tracing(provider), name="tracing")
    await corec_redis.xadd(corec_streams["stream_in"], payload("sleep", {"seconds": 30}, id="s1"))
    kernel = echo_kernel(max_deliveries=1, action_timeouts={"sleep": 0.2})
    await corec_worker(kernel)
    got = await results(corec_redis, corec_streams["stream_out"])
    assert got["s1"]["error"]["details"]["last_error"]["type"] == "timeout"
    span = consumer_spans(exporter)["s1"]
    assert span.end_time is not None and span.start_time is not None
    assert 0.15 < (span.end_time - span.start_time) / 1e9 < 10
    assert span.status.status_code is StatusCode.ERROR
    assert "did not finish within 0.2s" in (span.status.description or "")
    assert span.attributes is not None and span.attributes["error.type"] == "timeout"


class Gatekeeper:
    """Refuses every ``echo`` before it runs (an inner wrapper: the span is outermost)."""

    @staticmethod
    @hookimpl(wrapper=True)
    def corec_command(call: Any) -> Any:
        if call.action == "echo" and (call.command.get("params") or {}).get("n") == 13:
            raise Unauthorized("13 is not allowed")
        return (yield)


class SpanReporter:
    """``current_span``: answers the id of the span current in the handler."""

    @staticmethod
    async def current_span(params: Any, ctx: Any) -> dict[str, Any]:
        return {"span_id": trace.get_current_span().get_span_context().span_id}

    @staticmethod
    @hookimpl
    def corec_register_actions(register: Any) -> None:
        register("current_span", SpanReporter.current_span)


async def test_exec_is_traced_too(
    corec_register: Any, echo_kernel: Any, provider: Any, exporter: InMemorySpanExporter
) -> None:
    """``exec`` (and the CoreC adapter): a producer in another language put ``traceparent`` in
    meta; a timeout, a refusal by another wrapper and a cancellation end their spans."""
    corec_register(tracing.Tracing(provider), name="tracing")
    corec_register(Gatekeeper(), name="gatekeeper")
    corec_register(SpanReporter(), name="reporter")
    kernel = echo_kernel(action_timeouts={"sleep": 0.1})
    meta = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}
    async with kernel:
        ok = await kernel.execute({"action": "echo", "params": {"n": 1}, "id": "ok", "meta": meta})
        late = await kernel.execute({"action": "sleep", "params": {"seconds": 30}, "id": "late"})
        refused = await kernel.execute({"action": "echo", "params": {"n": 13}, "id": "refused"})
        current = await kernel.execute({"action": "current_span", "id": "current"})
        with provider.get_tracer("app").start_as_current_span("ambient") as ambient:
            inside = await kernel.execute(
                {"action": "echo", "params": {"n": 2}, "id": "inside", "meta": meta}
            )
    assert [ok["status"], late["error"]["type"], refused["error"]["type"], inside["status"]] == [
        "ok", "timeout", "unauthorized", "ok",
    ]  # fmt: skip
    spans = consumer_spans(exporter)

    span = spans["ok"]
    assert span.name == "process"  # not read from a stream: no destination
    assert span.attributes is not None
    assert "messaging.destination.name" not in span.attributes
    assert "messaging.message.id" not in span.attributes
    assert span.parent is not None and span.parent.is_remote
    assert (span.parent.trace_id, span.parent.span_id) == (TRACE_ID, PARENT_ID)
    assert span.context is not None and span.context.trace_state.get("congo") == "t61rcWkgMzE"

    assert spans["late"].attributes is not None
    assert spans["late"].attributes["error.type"] == "timeout"
    assert spans["refused"].attributes is not None
    assert spans["refused"].attributes["error.type"] == "unauthorized"
    assert spans["refused"].status.description == "13 is not allowed"

    # The span is current while the handler runs: the handler's own spans are its children.
    assert spans["current"].context is not None
    assert current["result"]["span_id"] == spans["current"].context.span_id

    # Run in the scope of another span: that span is the parent, the producer's a link.
    span = spans["inside"]
    assert span.parent is not None and span.parent.span_id == ambient.get_span_context().span_id
    assert [link.context.span_id for link in span.links] == [PARENT_ID]


async def test_a_cancelled_command_s_span_ends(
    corec_register: Any, echo_kernel: Any, provider: Any, exporter: InMemorySpanExporter
) -> None:
    corec_register(tracing.Tracing(provider), name="tracing")
    kernel = echo_kernel()
    async with kernel:
        task = asyncio.ensure_future(
            kernel.execute({"action": "sleep", "params": {"seconds": 30}, "id": "stopped"})
        )
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    span = consumer_spans(exporter)["stopped"]
    assert span.end_time is not None
    assert span.attributes is not None and span.attributes["error.type"] == "cancelled"


async def test_send_makes_a_send_span_and_keeps_a_callers_traceparent(
    corec_register: Any, echo_kernel: Any, corec_redis: Any, corec_streams: dict[str, Any],
    corec_worker: Any, provider: Any, exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """With a global tracer provider, ``send_command`` makes a PRODUCER span whose context
    the worker continues; a ``traceparent`` the caller gave is sent unchanged (and linked)."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)  # the global, here only
    corec_register(tracing.Tracing(provider), name="tracing")
    kernel = echo_kernel()
    sent = await send_command(kernel, "echo", {"n": 1}, command_id="own")
    given = await send_command(
        kernel, "echo", {"n": 2}, command_id="given", meta={"traceparent": TRACEPARENT}
    )
    metas = {
        body["id"]: body["meta"]
        for body in (
            orjson.loads(fields[b"payload"])
            for _eid, fields in await corec_redis.xrange(corec_streams["stream_in"])
        )
    }
    assert metas["given"] == {"traceparent": TRACEPARENT}
    [send, send_given] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert send.context is not None
    assert metas["own"] == {"traceparent": traceparent(send.context)}
    assert send.name == f"send {corec_streams['stream_in']}"
    assert dict(send.attributes or {}) == {
        "messaging.system": "redis",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": corec_streams["stream_in"],
        "messaging.message.id": sent["entry_id"],
        "corec.action": "echo",
        "corec.key": "own",
    }
    assert [link.context.span_id for link in send_given.links] == [PARENT_ID]
    assert send_given.attributes is not None
    assert send_given.attributes["messaging.message.id"] == given["entry_id"]

    await corec_worker(kernel)
    spans = consumer_spans(exporter)
    assert spans["own"].parent is not None
    assert spans["own"].parent.span_id == send.context.span_id
    assert spans["given"].parent is not None and spans["given"].parent.span_id == PARENT_ID


def test_the_exporters_come_from_otel_variables() -> None:
    names = tracing.exporter_names
    assert names({}) == ["otlp_proto_grpc"]  # OTEL_TRACES_EXPORTER's default, otlp, over grpc
    assert names({"OTEL_TRACES_EXPORTER": "none"}) == []
    http = {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert names(http) == ["otlp_proto_http", "console"]
    with pytest.raises(ConfigError, match="'http/json' is not one of grpc, http/protobuf"):
        names({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})
    with pytest.raises(ConfigError, match="pip install the package that provides it"):
        tracing.configure_sdk({"OTEL_TRACES_EXPORTER": "console,no_such_exporter"})
    # Nothing was set: the process still has no tracer provider.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_otel_sdk_disabled_means_no_hook_and_no_span(
    corec_register: Any, echo_kernel: Any, provider: Any, exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert hasattr(fresh_module(), "corec_command")  # the switch is what turns it off
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    off = fresh_module()
    assert [name for name in dir(off) if name.startswith("corec_")] == []
    assert corec_register(off, name="tracing").status == "loaded"
    kernel = echo_kernel()
    assert kernel.dispatcher.wrapped is False  # the dispatch never calls the hook
    async with kernel:
        assert (await kernel.execute({"action": "echo", "params": {"n": 1}}))["status"] == "ok"
    assert exporter.get_finished_spans() == ()


def test_without_opentelemetry_the_processor_fails_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "corec_plugin_kit.tracing")
    monkeypatch.setenv("COREC_PLUGINS", "corec_plugin_kit.tracing")
    manager = ProcessorManager(allow=["tracing"], trace=False)
    manager.load()
    info = manager.infos["tracing"]
    assert info.status == "failed"
    assert "pip install 'corec-plugin-kit[otel]'" in str(info.reason)
    assert manager.wraps_commands() is False


SEND_SCRIPT = """
import asyncio, json, sys
if sys.argv[1] == "blocked":
    sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from corec_plugin_kit.kernel import Kernel
from corec_plugin_kit.plugins import ProcessorManager
from corec_plugin_kit.runtime.ops import send_command

kernel = Kernel.build(None, processors=ProcessorManager(entry_points=False),
                      overrides={"kernel": json.loads(sys.argv[2])})
asyncio.run(send_command(kernel, "echo", {"n": 1}, command_id=sys.argv[1]))
print("corec_plugin_kit.tracing" in sys.modules)
"""


@pytest.mark.parametrize("otel", ["blocked", "installed"])
def test_send_without_a_trace_adds_nothing(
    otel: str, corec_streams: dict[str, Any], tmp_path: Path
) -> None:
    """A producer process that traces nothing (no provider, no current span): the envelope
    gets no meta; without OpenTelemetry the kit's tracing module is not even imported."""
    settings = {**corec_streams, "records": False, "state_dir": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", SEND_SCRIPT, otel, json.dumps(settings)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(otel == "installed")
    client = redis.Redis.from_url(corec_streams["redis_url"])
    try:
        [(_eid, fields)] = client.xrange(corec_streams["stream_in"])
    finally:
        client.close()
    assert orjson.loads(fields[b"payload"]) == {"action": "echo", "params": {"n": 1}, "id": otel}


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans the SDK's console exporter printed (indented JSON objects, one after another)."""
    decoder = json.JSONDecoder()
    spans, at = [], text.find("{")
    while at != -1:
        span, end = decoder.raw_decode(text, at)
        spans.append(span)
        at = text.find("{", end)
    return spans


def test_the_cli_worker_sets_up_the_sdk_from_otel_variables(
    corec_streams: dict[str, Any], tmp_path: Path
) -> None:
    """``corec-kit --plugin corec_plugin_kit.tracing run``: no provider set, so the tracing
    processor sets the SDK up from OTEL_* (here the console exporter), and flushes it on exit."""
    stream = corec_streams["stream_in"]
    client = redis.Redis.from_url(corec_streams["redis_url"])
    try:
        client.xadd(stream, payload("echo", {"n": 1}, id="cli1", meta={"traceparent": TRACEPARENT}))
        client.xadd(stream, payload("echo", {"n": 2}, id="cli2"))
    finally:
        client.close()
    env = subprocess_env(corec_streams)
    env["COREC_LOAD_PROCESSORS"] += ",tracing"
    env |= {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "corec-test"}
    run = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "--plugin", "corec_plugin_kit.tracing",
         "run", "--burst", "-q"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=90, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    spans = {span["attributes"]["corec.key"]: span for span in console_spans(run.stdout)}
    assert set(spans) == {"cli1", "cli2"}
    first = spans["cli1"]
    assert first["name"] == f"process {stream}" and first["kind"] == "SpanKind.CONSUMER"
    assert first["context"]["trace_id"] == f"0x{TRACE_ID:032x}"
    assert first["parent_id"] == f"0x{PARENT_ID:016x}"
    assert first["resource"]["attributes"]["service.name"] == "corec-test"
    assert spans["cli2"]["parent_id"] is None  # no producer context: a trace of its own
