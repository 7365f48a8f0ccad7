"""``maestro serve`` exporting traces over OTLP to a real receiver, as a subprocess (DESIGN §14).

The receiver is started by the test on 127.0.0.1 port 0: an aiohttp server taking ``POST
/v1/traces`` (OTLP/HTTP, protobuf) or a grpc.aio ``TraceService`` (OTLP/gRPC); it decodes each
``ExportTraceServiceRequest``. The gateway is configured by ``OTEL_*`` variables only, calls a
real Kitchen gRPC server with reflection, and writes JSON logs.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
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
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

READY = re.compile(r"maestro-gateway listening on 127\.0\.0\.1:(\d+) \((\d+) workflows\)")
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)

WORKFLOW = """
name: echo
timeout: 20s
services:
  kitchen: {type: grpc, endpoint: "127.0.0.1:%d", timeout: 5s}
steps:
  - id: reserve
    service: kitchen
    method: testing.v1.Kitchen/Echo
    input: {s: "hello"}
"""


@dataclass
class Receiver:
    """What an OTLP receiver was sent: every span, with its resource's attributes."""

    endpoint: str = ""
    spans: list[tuple[dict[str, Any], trace_pb2.Span]] = field(default_factory=list)

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope.spans)


def attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    """The test protos, compiled once for the module."""
    return Schema(compile_protoset(tmp_path_factory.mktemp("protos") / "kitchen.pb"))


@pytest.fixture
async def kitchen(schema: Schema) -> AsyncIterator[RunningServer]:
    """The downstream: a Kitchen gRPC server with reflection on 127.0.0.1."""
    running = await start_server(schema)
    yield running
    await running.server.stop(None)


async def http_receiver(receiver: Receiver) -> web.AppRunner:
    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf"
        receiver.take(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.receiver.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(params=["http/protobuf", "grpc"])
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Receiver]]:
    """An OTLP receiver on 127.0.0.1 of each protocol the gateway exports with."""
    found = Receiver()
    if request.param == "http/protobuf":
        runner = await http_receiver(found)
        yield request.param, found
        await runner.cleanup()
        return
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(found), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    found.endpoint = f"http://127.0.0.1:{port}"
    yield request.param, found
    await server.stop(None)


def environment(**otel: str) -> dict[str, str]:
    """This process's environment without any OTEL_ variable, plus ``otel``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MAESTRO_TEST_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **otel}


@dataclass
class Served:
    returncode: int | None
    stderr: str
    results: list[pb.ExecutionResult]


async def serve_and_run(
    tmp_path: Path, kitchen: RunningServer, env: Mapping[str, str], runs: int
) -> Served:
    """Start ``maestro serve`` with ``env``, ``Run`` echo ``runs`` times, SIGTERM it."""
    directory = tmp_path / "workflows"
    directory.mkdir()
    (directory / "echo.yaml").write_text(WORKFLOW % kitchen.port)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "maestro_gateway", "serve", "--workflows", str(directory)),
        *("--port", "0", "--journal", "none", "--log-format", "json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=tmp_path,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = asyncio.ensure_future(process.stderr.read())
    results = []
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        ready = READY.fullmatch(line)
        assert ready, (line, (await asyncio.wait_for(stderr, 30)).decode())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ready.group(1)}") as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            for _ in range(runs):
                req = pb.ExecuteRequest(workflow="echo", input=struct_pb2.Struct())
                results.append(await stub.Run(req, metadata=CALLER, timeout=30))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    return Served(process.returncode, (await stderr).decode(), results)


def hex_id(raw: bytes) -> str:
    return raw.hex()


async def test_serve_exports_the_spans_of_an_execution_over_otlp(
    tmp_path: Path, kitchen: RunningServer, receiver: tuple[str, Receiver]
) -> None:
    """Configured by OTEL_* only: the receiver gets server → step → attempt in the caller's
    trace, named by OTEL_SERVICE_NAME; the downstream got the attempt span as traceparent;
    the JSON log line of the execution carries the trace id."""
    protocol, found = receiver
    env = environment(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=found.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_SERVICE_NAME="gateway-under-test",
    )
    served = await serve_and_run(tmp_path, kitchen, env, 1)
    assert served.returncode == 0, served.stderr
    (result,) = served.results
    assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
    # Exported when `maestro serve` stopped, if not before: the flush at shutdown.
    spans = {span.name: (resource, span) for resource, span in found.spans}
    assert set(spans) == {"maestro.v1.Gateway/Run", "reserve", "testing.v1.Kitchen/Echo"}
    resource, root = spans["maestro.v1.Gateway/Run"]
    assert resource["service.name"] == "gateway-under-test"
    assert hex_id(root.trace_id) == CALLER_TRACE
    assert hex_id(root.parent_span_id) == CALLER_SPAN
    assert root.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert attributes(root.attributes)["maestro.execution_id"] == result.execution_id
    _, step = spans["reserve"]
    _, attempt = spans["testing.v1.Kitchen/Echo"]
    assert step.parent_span_id == root.span_id
    assert attempt.parent_span_id == step.span_id
    assert attempt.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert attributes(attempt.attributes) == {
        "maestro.attempt": 1,
        "rpc.system": "grpc",
        "rpc.method": "Echo",
        "rpc.service": "testing.v1.Kitchen",
        "rpc.grpc.status_code": 0,
    }
    assert {hex_id(s.trace_id) for _, s in found.spans} == {CALLER_TRACE}
    (md,) = kitchen.record.metadata
    assert md["traceparent"].split("-")[1:3] == [CALLER_TRACE, hex_id(attempt.span_id)]

    records = [json.loads(line) for line in served.stderr.splitlines()]
    (execution,) = [r for r in records if r["message"] == "execution"]
    assert execution["trace_id"] == CALLER_TRACE
    assert execution["span_id"] == hex_id(root.span_id)
    listening = [r for r in records if r["message"] == "journal"]
    assert listening
    assert "trace_id" not in listening[0]


async def test_an_unreachable_collector_fails_no_execution(
    tmp_path: Path, kitchen: RunningServer, unused_tcp_port: int
) -> None:
    """OTLP pointed at a closed port: every execution succeeds and `maestro serve` still stops
    with status 0 (its last flush gives up after the exporter's timeout)."""
    env = environment(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{unused_tcp_port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
        OTEL_BSP_SCHEDULE_DELAY="10",
    )
    served = await serve_and_run(tmp_path, kitchen, env, 3)
    assert served.returncode == 0, served.stderr
    assert [r.status for r in served.results] == [pb.EXECUTION_STATUS_SUCCEEDED] * 3
    assert len(kitchen.record.metadata) == 3


async def test_a_bad_otel_variable_stops_serve_naming_it(tmp_path: Path) -> None:
    """An exporter the gateway does not know: status 2 and the variable named, nothing served."""
    directory = tmp_path / "workflows"
    directory.mkdir()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "maestro_gateway", "serve", "--workflows", str(directory)),
        *("--port", "0", "--journal", "none"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(OTEL_TRACES_EXPORTER="zipkin"),
        cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"listening" not in out
    assert "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'" in err.decode()
