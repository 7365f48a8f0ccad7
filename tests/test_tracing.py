"""Traces (DESIGN §14) through an in-process gateway, against real downstream services.

A real gateway (``create_gateway``, real transports) is called over gRPC on 127.0.0.1 with a
caller ``traceparent``; it calls a real grpc.aio Kitchen/Mirror server with reflection and a
local aiohttp service. Spans are collected by the SDK's ``InMemorySpanExporter`` and compared
with what the downstream services received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import struct_pb2
from grpc_testkit import RunningServer, Schema, compile_protoset, start_server
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from maestro_gateway.journal import Journal, SqliteJournal
from maestro_gateway.server import logfmt
from maestro_gateway.server.app import GatewayServer, create_gateway
from maestro_gateway.server.otel import Tracing, log_trace_ids
from maestro_gateway.server.tracing import TracingConfigError, exporters

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
TRACESTATE = "vendor=opaque"

WORKFLOW = """
name: traced
timeout: 20s
input:
  type: object
  properties:
    items: {type: array, items: {type: string}}
    fail: {type: boolean}
services:
  kitchen: {type: grpc, endpoint: "127.0.0.1:%(grpc)d", timeout: 5s}
  web: {type: http, endpoint: "http://127.0.0.1:%(http)d/api", timeout: 5s}
steps:
  - id: lines
    foreach: "{{ input.items }}"
    as: item
    concurrency: 1
    steps:
      - id: reserve
        service: kitchen
        method: testing.v1.Kitchen/Echo
        input: {s: "{{ item }}"}
        output: echoed
        compensate:
          method: testing.v1.Mirror/Echo
          input: {s: "undo {{ item }}"}
  - id: notify
    service: web
    method: "POST /notes?token=hidden"
    input: {n: 1}
    output: note
  - id: flaky
    when: "{{ input.fail }}"
    service: kitchen
    method: testing.v1.Kitchen/Fail
    input: {code: 14, message: "down"}
    retry: {attempts: 3, initial: 10ms, jitter: false}
"""

TRIGGERED = """
name: triggered
triggers:
  - signal: go
    input: {s: "{{ signal.params.s }}"}
input:
  type: object
  properties:
    s: {type: string}
services:
  kitchen: {type: grpc, endpoint: "127.0.0.1:%(grpc)d", timeout: 5s}
steps:
  - id: echo
    service: kitchen
    method: testing.v1.Kitchen/Echo
    input: {s: "{{ input.s }}"}
"""

EMITTER = """
name: emitter
services:
  kitchen: {type: grpc, endpoint: "127.0.0.1:%(grpc)d"}
steps:
  - id: announce
    emit:
      signal: go
      params: {s: "from emitter"}
      signal_id: sig-2
"""

SLEEPY = """
name: sleepy
timeout: 60s
services:
  kitchen: {type: grpc, endpoint: "127.0.0.1:%(grpc)d", timeout: 50s}
steps:
  - id: nap
    service: kitchen
    method: testing.v1.Kitchen/Sleep
    input: {seconds: 30}
"""


@dataclass
class Web:
    """The local HTTP service: the headers of every request it answered."""

    port: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="session")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    """The test protos, compiled once per session."""
    return Schema(compile_protoset(tmp_path_factory.mktemp("protos") / "kitchen.pb"))


@pytest.fixture
async def kitchen(schema: Schema) -> AsyncIterator[RunningServer]:
    """A Kitchen/Mirror gRPC server with reflection on 127.0.0.1."""
    running = await start_server(schema)
    yield running
    await running.server.stop(None)


@pytest.fixture
async def web_service() -> AsyncIterator[Web]:
    """An HTTP service on 127.0.0.1 answering ``POST /api/notes`` with 201."""
    seen = Web()

    async def notes(request: web.Request) -> web.Response:
        seen.headers.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response({"ok": True}, status=201)

    app = web.Application()
    app.router.add_post("/api/notes", notes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    seen.port = runner.addresses[0][1]
    yield seen
    await runner.cleanup()


@dataclass
class Gateway:
    server: GatewayServer
    stub: gateway_pb2_grpc.GatewayStub


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    tmp_path: Path, kitchen: RunningServer, web_service: Web
) -> AsyncIterator[GatewayFactory]:
    """Start gateways serving ``traced`` with real transports; stop them all afterwards."""
    started: list[tuple[GatewayServer, grpc.aio.Channel]] = []

    async def make(tracing: Tracing | None, journal: Journal | None = None) -> Gateway:
        directory = tmp_path / f"wf{len(started)}"
        directory.mkdir()
        ports = {"grpc": kitchen.port, "http": web_service.port}
        (directory / "traced.yaml").write_text(WORKFLOW % ports)
        (directory / "sleepy.yaml").write_text(SLEEPY % ports)
        (directory / "triggered.yaml").write_text(TRIGGERED % ports)
        (directory / "emitter.yaml").write_text(EMITTER % ports)
        server, problems = create_gateway(directory, tracing=tracing, journal=journal)
        assert problems == []
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        started.append((server, channel))
        return Gateway(server, gateway_pb2_grpc.GatewayStub(channel))

    yield make
    for server, channel in started:
        await channel.close()
        await server.shutdown(0)


def in_memory() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def request(items: Sequence[str], *, fail: bool = False) -> pb.ExecuteRequest:
    data = struct_pb2.Struct()
    data.update({"items": list(items), "fail": fail})
    return pb.ExecuteRequest(workflow="traced", input=data)


CALLER = (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE))


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = by_name(spans, name)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    pid = hex_ids(parent)[1]
    return sorted((s for s in spans if parent_id(s) == pid), key=lambda s: s.start_time or 0)


def traceparent_parts(value: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled (0x02 marks a random trace id of the gateway's own)
    return trace_id, span_id


async def test_a_run_is_a_server_span_with_step_and_attempt_spans_below(
    make_gateway: GatewayFactory, kitchen: RunningServer, web_service: Web
) -> None:
    """Server → step → attempt, all in the caller's trace; each downstream got its attempt's
    span as traceparent (and the caller's tracestate); the HTTP URL has no query string."""
    tracing, exporter = in_memory()
    gw = await make_gateway(tracing)
    result = await gw.stub.Run(request(["a", "b"]), metadata=CALLER, timeout=30)
    assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
    spans = exporter.get_finished_spans()
    assert {hex_ids(s)[0] for s in spans} == {CALLER_TRACE}

    root = one(spans, "maestro.v1.Gateway/Run")
    assert root.kind is SpanKind.SERVER
    assert parent_id(root) == CALLER_SPAN
    assert root.parent is not None
    assert root.parent.is_remote
    assert root.attributes is not None
    assert root.attributes["rpc.system"] == "grpc"
    assert root.attributes["rpc.service"] == "maestro.v1.Gateway"
    assert root.attributes["rpc.method"] == "Run"
    assert root.attributes["maestro.workflow"] == "traced"
    assert root.attributes["maestro.execution_id"] == result.execution_id
    assert root.attributes["maestro.status"] == "SUCCEEDED"
    assert root.status.status_code is StatusCode.UNSET

    assert [s.name for s in children(spans, root)] == ["lines", "notify"]
    lines = one(spans, "lines")
    assert [s.name for s in children(spans, lines)] == ["lines[0].reserve", "lines[1].reserve"]
    sent: list[tuple[str, str]] = []
    for index in range(2):
        step = one(spans, f"lines[{index}].reserve")
        assert step.kind is SpanKind.INTERNAL
        (attempt,) = children(spans, step)
        assert attempt.name == "testing.v1.Kitchen/Echo"
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.attributes == {
            "maestro.attempt": 1,
            "rpc.system": "grpc",
            "rpc.method": "Echo",
            "rpc.service": "testing.v1.Kitchen",
            "rpc.grpc.status_code": 0,
        }
        sent.append(hex_ids(attempt))
    received = [traceparent_parts(md["traceparent"]) for md in kitchen.record.metadata]
    assert received == sent
    assert [md["tracestate"] for md in kitchen.record.metadata] == [TRACESTATE, TRACESTATE]

    notify = one(spans, "notify")
    (post,) = children(spans, notify)
    assert post.name == "POST"
    assert post.kind is SpanKind.CLIENT
    assert post.attributes is not None
    assert post.attributes["http.request.method"] == "POST"
    assert post.attributes["url.full"] == f"http://127.0.0.1:{web_service.port}/api/notes"
    assert post.attributes["http.response.status_code"] == 201
    assert "rpc.grpc.status_code" not in post.attributes
    (headers,) = web_service.headers
    assert traceparent_parts(headers["traceparent"]) == hex_ids(post)
    assert headers["tracestate"] == TRACESTATE
    assert not by_name(spans, "flaky")  # skipped: no span


async def test_retries_are_attempt_spans_and_the_rollback_compensation_spans(
    make_gateway: GatewayFactory, kitchen: RunningServer
) -> None:
    """A step retried twice has three failing attempt spans; each compensation is a span with
    its own attempt, newest first, under the server span, which ends in error."""
    tracing, exporter = in_memory()
    gw = await make_gateway(tracing)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await gw.stub.Run(request(["a", "b"], fail=True), metadata=CALLER, timeout=30)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    spans = exporter.get_finished_spans()
    root = one(spans, "maestro.v1.Gateway/Run")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None
    assert root.attributes["maestro.status"] == "COMPENSATED"

    flaky = one(spans, "flaky")
    assert flaky.status.status_code is StatusCode.ERROR
    assert flaky.attributes is not None
    assert flaky.attributes["error.type"] == "UNAVAILABLE"
    attempts = children(spans, flaky)
    assert [s.name for s in attempts] == ["testing.v1.Kitchen/Fail"] * 3
    for number, attempt in enumerate(attempts, 1):
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.status.description == "UNAVAILABLE"  # the code, never the message
        assert attempt.attributes is not None
        assert attempt.attributes["maestro.attempt"] == number
        assert attempt.attributes["rpc.grpc.status_code"] == 14

    undo = [s for s in children(spans, root) if s.name.startswith("compensate ")]
    assert [s.name for s in undo] == ["compensate lines[1].reserve", "compensate lines[0].reserve"]
    for span in undo:
        assert span.status.status_code is StatusCode.UNSET
        (attempt,) = children(spans, span)
        assert attempt.name == "testing.v1.Mirror/Echo"
        assert attempt.attributes is not None
        assert attempt.attributes["maestro.compensation"] is True
        assert attempt.attributes["rpc.grpc.status_code"] == 0
    # The Fail calls record nothing; the two Echo and the two undoing Mirror/Echo calls did.
    undo_attempts = [hex_ids(children(spans, s)[0]) for s in undo]
    received = [traceparent_parts(md["traceparent"]) for md in kitchen.record.metadata]
    assert received[2:] == undo_attempts


async def test_start_span_covers_the_detached_execution(make_gateway: GatewayFactory) -> None:
    """``Start`` returns at once; its server span ends with the execution, steps below it."""
    tracing, exporter = in_memory()
    gw = await make_gateway(tracing)
    started = await gw.stub.Start(request(["a"]), metadata=CALLER, timeout=30)
    watch = gw.stub.WatchExecution(
        pb.WatchExecutionRequest(execution_id=started.execution_id), timeout=30
    )
    async for _ in watch:
        pass
    for _ in range(500):  # the span ends right after the finished event is durable
        if by_name(exporter.get_finished_spans(), "maestro.v1.Gateway/Start"):
            break
        await asyncio.sleep(0.01)
    spans = exporter.get_finished_spans()
    root = one(spans, "maestro.v1.Gateway/Start")
    assert parent_id(root) == CALLER_SPAN
    assert [s.name for s in children(spans, root)] == ["lines", "notify"]
    assert root.end_time is not None
    assert all(s.end_time is not None and s.end_time <= root.end_time for s in spans)


async def test_with_tracing_off_the_caller_headers_go_downstream_verbatim(
    make_gateway: GatewayFactory, kitchen: RunningServer, web_service: Web
) -> None:
    """No tracing: every downstream gets exactly the caller's traceparent and tracestate."""
    gw = await make_gateway(None)
    result = await gw.stub.Run(request(["a"]), metadata=CALLER, timeout=30)
    assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
    (grpc_md,) = kitchen.record.metadata
    (headers,) = web_service.headers
    for got in (grpc_md, headers):
        assert (got["traceparent"], got["tracestate"]) == (TRACEPARENT, TRACESTATE)


async def test_an_execution_without_a_caller_trace_starts_one(
    make_gateway: GatewayFactory, kitchen: RunningServer
) -> None:
    """No traceparent from the caller: the server span is a root, the downstream is in its trace."""
    tracing, exporter = in_memory()
    gw = await make_gateway(tracing)
    await gw.stub.Run(request(["a"]), timeout=30)
    spans = exporter.get_finished_spans()
    root = one(spans, "maestro.v1.Gateway/Run")
    assert root.parent is None
    (md,) = kitchen.record.metadata
    attempt = children(spans, one(spans, "lines[0].reserve"))[0]
    assert traceparent_parts(md["traceparent"]) == hex_ids(attempt)


async def finished_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The span ``name`` once it has ended (the execution's span ends just after its result)."""
    for _ in range(1000):
        found = by_name(exporter.get_finished_spans(), name)
        if found:
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no span {name!r}")


async def test_a_resumed_execution_continues_the_callers_trace(
    make_gateway: GatewayFactory, kitchen: RunningServer, tmp_path: Path
) -> None:
    """A gateway that stops mid-call ends its spans as handed over; the next start resumes the
    execution under a ``resume`` span, child of the caller's traceparent kept in the journal,
    and the step that was running gets its span there."""
    first_tracing, first = in_memory()
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.open()
    gw = await make_gateway(first_tracing, journal)
    started = await gw.stub.Start(
        pb.ExecuteRequest(workflow="sleepy", input=struct_pb2.Struct()), metadata=CALLER
    )
    await asyncio.wait_for(kitchen.record.sleep_started.wait(), 30)
    await gw.server.shutdown(0)  # hands the execution over to the next start
    spans = first.get_finished_spans()
    root = one(spans, "maestro.v1.Gateway/Start")
    assert root.attributes is not None
    assert root.attributes["maestro.status"] == "HANDED_OVER"
    nap = one(spans, "nap")
    assert nap.attributes is not None
    assert nap.attributes["maestro.interrupted"] is True
    (attempt,) = children(spans, nap)
    assert attempt.status.description == "CANCELLED"

    second_tracing, second = in_memory()
    again = SqliteJournal(tmp_path / "j.db")
    await again.open()
    await make_gateway(second_tracing, again)
    resumed = await finished_span(second, "resume sleepy")
    spans = second.get_finished_spans()
    assert resumed.kind is SpanKind.INTERNAL
    assert parent_id(resumed) == CALLER_SPAN
    assert hex_ids(resumed)[0] == CALLER_TRACE
    assert resumed.attributes is not None
    assert resumed.attributes["maestro.execution_id"] == started.execution_id
    assert resumed.attributes["maestro.recovered"] is True
    assert resumed.attributes["maestro.status"] == "FAILED"
    (nap,) = children(spans, resumed)
    assert nap.name == "nap"
    assert nap.status.status_code is StatusCode.ERROR  # the interrupted attempt: UNAVAILABLE
    assert nap.attributes is not None
    assert nap.attributes["error.type"] == "UNAVAILABLE"


async def test_an_execution_a_signal_started_begins_its_own_trace(
    make_gateway: GatewayFactory, kitchen: RunningServer
) -> None:
    """A trigger's execution: a root ``trigger`` span naming the signal, its steps below it."""
    tracing, exporter = in_memory()
    gw = await make_gateway(tracing)
    params = struct_pb2.Struct()
    params.update({"s": "hi"})
    sent = await gw.stub.SendSignal(
        pb.SendSignalRequest(name="go", params=params, signal_id="sig-1"),
        metadata=CALLER,
        timeout=30,
    )
    assert sent.signal.signal_id == "sig-1"
    root = await finished_span(exporter, "trigger triggered")
    assert root.kind is SpanKind.INTERNAL
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["maestro.triggered_by"] == "sig-1"
    spans = exporter.get_finished_spans()
    (step,) = children(spans, root)
    assert step.name == "echo"
    (attempt,) = children(spans, step)
    (md,) = kitchen.record.metadata
    assert traceparent_parts(md["traceparent"]) == hex_ids(attempt)


async def test_an_emit_steps_trigger_is_not_a_child_of_the_emitting_execution(
    make_gateway: GatewayFactory,
) -> None:
    """The emit step's span is in the caller's trace; the execution it triggers starts another."""
    tracing, exporter = in_memory()
    gw = await make_gateway(tracing)
    result = await gw.stub.Run(
        pb.ExecuteRequest(workflow="emitter", input=struct_pb2.Struct()),
        metadata=CALLER,
        timeout=30,
    )
    assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
    root = await finished_span(exporter, "trigger triggered")
    spans = exporter.get_finished_spans()
    emitting = one(spans, "maestro.v1.Gateway/Run")
    assert [s.name for s in children(spans, emitting)] == ["announce"]
    assert root.parent is None
    assert hex_ids(root)[0] != CALLER_TRACE
    assert root.attributes is not None
    assert root.attributes["maestro.triggered_by"] == "sig-2"


class _Stuck(SpanExporter):
    """An exporter that hangs until released, as one whose collector never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.called.set()
        self.release.wait(30)
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


async def test_an_exporter_that_hangs_never_holds_an_execution_up(
    make_gateway: GatewayFactory,
) -> None:
    """While the exporter is stuck on a batch, executions still run to the end, one after the
    other: ending a span only queues it."""
    stuck = _Stuck()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(stuck, schedule_delay_millis=1))
    gw = await make_gateway(Tracing(provider))
    try:
        first = await gw.stub.Run(request(["a"]), metadata=CALLER, timeout=30)
        assert first.status == pb.EXECUTION_STATUS_SUCCEEDED
        assert await asyncio.to_thread(stuck.called.wait, 30)
        for _ in range(5):
            result = await gw.stub.Run(request(["a", "b"]), metadata=CALLER, timeout=30)
            assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
        assert stuck.spans == 0  # still stuck on the first batch
    finally:
        stuck.release.set()
    await gw.server.shutdown(0)  # flushes: everything queued is exported
    # server, lines, a reserve and its attempt per item, notify and its attempt
    assert stuck.spans == 6 + 5 * 8


async def test_a_closed_otlp_port_does_not_fail_executions(
    make_gateway: GatewayFactory, unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real OTLP/HTTP exporter pointed at a closed port: executions succeed."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{unused_tcp_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1")
    tracing = Tracing.from_env(["otlp"], {})
    gw = await make_gateway(tracing)
    for _ in range(3):
        result = await gw.stub.Run(request(["a"]), metadata=CALLER, timeout=30)
        assert result.status == pb.EXECUTION_STATUS_SUCCEEDED


def test_which_variables_turn_tracing_on() -> None:
    """On by an exporter other than none, or by an OTLP endpoint alone; off by the SDK switch."""
    assert exporters({}) == []
    assert exporters({"OTEL_SERVICE_NAME": "gw"}) == []
    assert exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ["otlp"]
    assert exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == ["otlp"]
    assert exporters({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}) == []
    assert exporters({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert exporters({"OTEL_TRACES_EXPORTER": " OTLP, console,otlp"}) == ["otlp", "console"]
    assert exporters({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}) == []
    grpc_env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert exporters(grpc_env) == ["otlp"]


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol 'http/json'",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: unsupported protocol 'thrift'",
        ),
    ],
)
def test_an_unusable_variable_is_named(environ: dict[str, str], named: str) -> None:
    """A value the gateway cannot use is refused, naming the variable and the value."""
    with pytest.raises(TracingConfigError, match=named):
        exporters(environ)


def test_json_log_lines_carry_the_current_trace_id_text_lines_do_not() -> None:
    """With tracing on, a JSON line written while a span is current has its ids; outside a
    span, or with tracing off, none; the text format never changes."""
    tracing, _ = in_memory()
    record = logging.LogRecord("maestro_gateway.server", logging.INFO, "", 0, "x", None, None)
    record.msg = logfmt.logfmt("execution", id="e-1")
    json_format = logfmt.JsonFormatter()
    text_format = logging.Formatter("%(message)s")
    from maestro_gateway.journal.base import ExecutionRecord

    execution = tracing.execution(
        ExecutionRecord(
            execution_id="e-1",
            workflow="traced",
            source="",
            path="traced.yaml",
            input={},
            labels={},
            metadata=CALLER,
            started_at=0.0,
        ),
        rpc="Run",
    )
    log_trace_ids(True)
    try:
        with execution.current():
            line: dict[str, Any] = json.loads(json_format.format(record))
            text = text_format.format(record)
        outside = json.loads(json_format.format(record))
    finally:
        log_trace_ids(False)
    execution.finish(None, "CANCELLED")
    assert line["trace_id"] == CALLER_TRACE
    assert len(line["span_id"]) == 16
    assert line["span_id"] != CALLER_SPAN
    assert text == "execution id=e-1"
    assert "trace_id" not in outside
    with execution.current():
        assert "trace_id" not in json.loads(json_format.format(record))


def test_an_attempt_replaces_every_trace_header_and_keeps_the_others() -> None:
    """Whatever set them (the caller, a workflow's metadata, in any case), the attempt's own
    traceparent replaces them; baggage and other headers go on as they were."""
    tracing, exporter = in_memory()
    from maestro_gateway.journal.base import ExecutionRecord
    from maestro_gateway.model.types import Service

    execution = tracing.execution(
        ExecutionRecord("e-2", "traced", "", "traced.yaml", {}, metadata=CALLER), rpc="Execute"
    )
    service = Service(name="kitchen", type="grpc", endpoint="127.0.0.1:1")
    attempt = execution.attempt(None, service, "Echo", 1, False)
    sent = attempt.headers(
        [
            *CALLER,
            ("baggage", "k=v"),
            ("Traceparent", "00-11111111111111111111111111111111-2222222222222222-01"),
            ("x-team", "shop"),
        ]
    )
    attempt.end()
    execution.finish(None, "CANCELLED")
    (span,) = by_name(exporter.get_finished_spans(), "Echo")
    assert sent[:2] == [("baggage", "k=v"), ("x-team", "shop")]
    assert dict(sent[2:]) == {
        "traceparent": f"00-{CALLER_TRACE}-{hex_ids(span)[1]}-01",
        "tracestate": TRACESTATE,
    }


def test_a_gateway_that_does_not_trace_never_imports_opentelemetry() -> None:
    """Tracing off costs no import: serve's modules and the off decision load no OpenTelemetry."""
    code = (
        "import sys\n"
        "import maestro_gateway.cli.serve, maestro_gateway.server.app, maestro_gateway.engine\n"
        "import maestro_gateway.transports.grpc, maestro_gateway.transports.http\n"
        "from maestro_gateway.server.tracing import from_env\n"
        "assert from_env({}) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
