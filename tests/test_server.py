"""The Gateway service in-process: real server, real engine and loader, transport-level fakes.

The downstream services are a fake ``TransportFactory`` whose methods are plain async functions,
so each test controls exactly when a call returns, fails or blocks, and sees the request,
deadline and metadata every call received.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as r
from grpc_status import rpc_status
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service
from maestro_gateway.server.app import GatewayServer, TLSFiles, create_gateway

CHECKOUT = """\
name: checkout
version: "1.2"
description: Reserve, then charge.
input:
  type: object
  required: [sku, qty]
  properties:
    sku: {type: string}
    qty: {type: integer}
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: reserve
    service: shop
    method: Reserve
    input: {sku: "{{ input.sku }}", qty: "{{ input.qty }}"}
    compensate:
      method: Release
      input: {id: "{{ reserve.id }}"}
  - id: charge
    service: shop
    method: Charge
    input: {amount: 5}
"""

PING = """\
name: ping
steps:
  - id: ping
    service: shop
    method: Ping
    input: {}
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
"""

Handler = Callable[[Any], Awaitable[Any]]


@dataclass
class Seen:
    """One downstream call as the fake received it."""

    method: str
    request: Any
    timeout: float | None
    metadata: tuple[tuple[str, str], ...]


@dataclass
class FakeTransports:
    """A TransportFactory whose methods are async functions keyed by method name."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def transport_for(self, service: Service) -> FakeTransports:
        return self

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109  (the Transport protocol)
        metadata: Any,
        info: Any = None,
    ) -> Any:
        self.seen.append(Seen(method, request, timeout, tuple(metadata)))
        return await self.handlers[method](request)

    async def close(self) -> None:
        return None


async def reserve(request: Any) -> Any:
    return {"id": "r-1", "sku": request["sku"], "big": 2**60}


async def ok(request: Any) -> Any:
    return {"ok": True}


async def declined(request: Any) -> Any:
    raise CallError(Code.FAILED_PRECONDITION, "card declined")


@dataclass
class Harness:
    server: GatewayServer
    fakes: FakeTransports
    stub: gateway_pb2_grpc.GatewayStub
    channel: grpc.aio.Channel


GatewayFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateways on 127.0.0.1:0 serving the test workflows; stop them all afterwards."""
    started: list[Harness] = []

    async def make(max_concurrent: int = 100) -> Harness:
        directory = tmp_path / f"wf{len(started)}"
        directory.mkdir()
        (directory / "checkout.yaml").write_text(CHECKOUT)
        (directory / "ping.yml").write_text(PING)
        fakes = FakeTransports({"Reserve": reserve, "Release": ok, "Charge": ok, "Ping": ok})
        server, problems = create_gateway(
            directory, transports=fakes, max_concurrent=max_concurrent
        )
        assert problems == []
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        harness = Harness(server, fakes, gateway_pb2_grpc.GatewayStub(channel), channel)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.channel.close()
        await harness.server.shutdown(0)


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Harness:
    """One gateway with the default limits."""
    return await make_gateway()


def request(workflow: str = "checkout", **input: Any) -> pb.ExecuteRequest:
    data = struct_pb2.Struct()
    data.update(input or {"sku": "A-1", "qty": 2})
    return pb.ExecuteRequest(workflow=workflow, input=data)


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def collect(call: Any) -> tuple[list[pb.ExecutionEvent], grpc.aio.AioRpcError | None]:
    events: list[pb.ExecutionEvent] = []
    try:
        async for event in call:
            events.append(event)  # noqa: PERF401  (keep the events received before an error)
    except grpc.aio.AioRpcError as err:
        return events, err
    return events, None


async def wait_for(predicate: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110  (polls server state that has no event)
            await asyncio.sleep(0.01)


async def test_execute_streams_events_in_order_and_ends_ok(gw: Harness) -> None:
    """A successful Execute streams started, step events and finished, numbered 1..n, then OK."""
    events, err = await collect(gw.stub.Execute(request(), timeout=30))
    assert err is None
    assert [e.WhichOneof("event") for e in events] == [
        "started",
        "step_started",
        "step_succeeded",
        "step_started",
        "step_succeeded",
        "finished",
    ]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    execution_id = events[0].execution_id
    assert execution_id
    assert all(e.execution_id == execution_id for e in events)
    assert events[0].started.workflow == "checkout"
    assert events[1].step_started.step_id == "reserve"
    assert events[1].step_started.attempt == 1
    succeeded = events[2].step_succeeded
    assert succeeded.step_id == "reserve"
    assert json_format.MessageToDict(succeeded.output) == {
        "id": "r-1",
        "sku": "A-1",
        "big": "1152921504606846976",
    }
    result = events[-1].finished.result
    assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
    assert result.execution_id == execution_id
    assert result.workflow == "checkout"
    assert [s.step_id for s in result.steps] == ["reserve", "charge"]
    assert all(s.status == pb.STEP_STATUS_SUCCEEDED for s in result.steps)
    assert not result.HasField("error")
    assert result.start_time.seconds > 0
    assert gw.fakes.seen[0].request == {"sku": "A-1", "qty": 2}


async def test_execute_failure_sends_finished_then_the_failure_code(gw: Harness) -> None:
    """A failed, compensated execution sends finished last, then ends with its code and ErrorInfo."""
    gw.fakes.handlers["Charge"] = declined
    events, err = await collect(gw.stub.Execute(request(), timeout=30))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-4:] == [
        "step_failed",
        "compensation_started",
        "compensation_succeeded",
        "finished",
    ]
    failed = events[kinds.index("step_failed")].step_failed
    assert (failed.step_id, failed.attempt, failed.error.code) == (
        "charge",
        1,
        "FAILED_PRECONDITION",
    )
    assert events[kinds.index("compensation_started")].compensation_started.step_id == "reserve"
    result = events[-1].finished.result
    assert result.status == pb.EXECUTION_STATUS_COMPENSATED
    assert (result.error.step_id, result.error.code) == ("charge", "FAILED_PRECONDITION")
    assert {s.step_id: s.status for s in result.steps} == {
        "reserve": pb.STEP_STATUS_COMPENSATED,
        "charge": pb.STEP_STATUS_FAILED,
    }
    assert err is not None
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "card declined" in (err.details() or "")
    info = error_info(err)
    assert info.domain == "maestro.v1"
    assert info.reason == "FAILED_PRECONDITION"
    assert dict(info.metadata) == {
        "execution_id": result.execution_id,
        "workflow": "checkout",
        "step_id": "charge",
        "status": "COMPENSATED",
    }
    assert [s.method for s in gw.fakes.seen] == ["Reserve", "Charge", "Release"]


async def test_run_returns_the_result(gw: Harness) -> None:
    """Run returns the whole result when the execution succeeds, with a caller-chosen id."""
    req = request()
    req.execution_id = "order-42"
    result = await gw.stub.Run(req, timeout=30)
    assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
    assert result.execution_id == "order-42"
    assert json_format.MessageToDict(result.output)["reserve"]["big"] == "1152921504606846976"
    assert result.duration.ToTimedelta().total_seconds() >= 0


async def test_run_failure_is_the_rpc_error_with_details(gw: Harness) -> None:
    """Run of a failing workflow fails with the step's code, message and an ErrorInfo."""
    gw.fakes.handlers["Charge"] = declined
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.Run(request(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info.metadata["step_id"] == "charge"
    assert info.metadata["status"] == "COMPENSATED"


async def test_unknown_workflow_is_not_found_without_events(gw: Harness) -> None:
    """Execute of an unknown workflow sends no event and ends NOT_FOUND."""
    events, err = await collect(gw.stub.Execute(request("nope"), timeout=30))
    assert events == []
    assert err is not None
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err).reason == "WORKFLOW_NOT_FOUND"
    assert gw.fakes.seen == []


async def test_invalid_input_names_the_field_without_events(gw: Harness) -> None:
    """Input failing the schema ends INVALID_ARGUMENT naming the field, before any event."""
    events, err = await collect(gw.stub.Execute(request(sku="A-1"), timeout=30))
    assert events == []
    assert err is not None
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "qty" in (err.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.Run(request(sku="A-1", qty=1.5), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "qty" in (caught.value.details() or "")
    assert gw.fakes.seen == []


async def test_bad_execution_id_is_invalid_argument(gw: Harness) -> None:
    """A caller-chosen execution id with a newline or over 128 characters is refused."""
    for bad in ("a\nb", "x" * 129):
        req = request()
        req.execution_id = bad
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Run(req, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_trace_headers_and_deadline_reach_the_downstream(gw: Harness) -> None:
    """Trace and request headers are forwarded, others are not; the caller's deadline bounds calls."""
    metadata = (
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("x-request-id", "req-7"),
        ("x-b3-traceid", "abc"),
        ("authorization", "Bearer secret"),
    )
    await gw.stub.Run(request(), timeout=20, metadata=metadata)
    for seen in gw.fakes.seen:
        assert dict(seen.metadata) == {
            "traceparent": metadata[0][1],
            "x-request-id": "req-7",
            "x-b3-traceid": "abc",
        }
        assert seen.timeout is not None
        # gRPC's wire encoding of the deadline can round it up by a fraction of a second.
        assert 0 < seen.timeout <= 21


async def test_concurrency_limit_answers_resource_exhausted(make_gateway: GatewayFactory) -> None:
    """Beyond --max-concurrent executions in flight, new ones get RESOURCE_EXHAUSTED."""
    gw = await make_gateway(max_concurrent=1)
    entered, release = asyncio.Event(), asyncio.Event()

    async def blocking(request: Any) -> Any:
        entered.set()
        await release.wait()
        return {}

    gw.fakes.handlers["Ping"] = blocking
    first = asyncio.ensure_future(gw.stub.Run(request("ping"), timeout=30))
    await asyncio.wait_for(entered.wait(), 10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.Run(request("ping"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "TOO_MANY_EXECUTIONS"
    release.set()
    assert (await first).status == pb.EXECUTION_STATUS_SUCCEEDED
    assert (await gw.stub.Run(request("ping"), timeout=30)).status == pb.EXECUTION_STATUS_SUCCEEDED


async def test_client_cancel_cancels_and_compensates(gw: Harness) -> None:
    """When the caller cancels, the in-flight call is cancelled and earlier steps compensated."""
    entered, cancelled, released = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def hang(request: Any) -> Any:
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async def release(request: Any) -> Any:
        released.set()
        return {}

    gw.fakes.handlers["Charge"] = hang
    gw.fakes.handlers["Release"] = release
    call = gw.stub.Execute(request(), timeout=30)
    reader = asyncio.ensure_future(collect(call))
    await asyncio.wait_for(entered.wait(), 10)
    call.cancel()
    await asyncio.wait_for(cancelled.wait(), 10)
    await asyncio.wait_for(released.wait(), 10)
    await wait_for(lambda: gw.server.service.in_flight == 0, "execution finished")
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_shutdown_drains_then_cancels_and_compensates(gw: Harness) -> None:
    """Shutdown: health NOT_SERVING, new work UNAVAILABLE, leftovers cancelled and compensated."""
    entered = asyncio.Event()

    async def hang(request: Any) -> Any:
        entered.set()
        await asyncio.sleep(60)
        return {}

    gw.fakes.handlers["Charge"] = hang
    reader = asyncio.ensure_future(collect(gw.stub.Execute(request(), timeout=30)))
    await asyncio.wait_for(entered.wait(), 10)
    stopping = asyncio.ensure_future(gw.server.shutdown(0.5))
    await wait_for(lambda: gw.server.service.draining, "draining")
    health = health_pb2_grpc.HealthStub(gw.channel)
    check = await health.Check(health_pb2.HealthCheckRequest(service="maestro.v1.Gateway"))
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.Run(request("ping"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    events, err = await asyncio.wait_for(reader, 20)
    await asyncio.wait_for(stopping, 20)
    result = events[-1].finished.result
    assert result.status == pb.EXECUTION_STATUS_COMPENSATED
    assert (result.error.code, result.error.step_id) == ("CANCELLED", "charge")
    assert err is not None
    assert err.code() == grpc.StatusCode.CANCELLED
    assert [s.method for s in gw.fakes.seen] == ["Reserve", "Charge", "Release"]


async def test_validate_workflow_reports_diagnostics(gw: Harness) -> None:
    """ValidateWorkflow answers valid for a good definition and positioned diagnostics otherwise."""
    good = await gw.stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=CHECKOUT))
    assert good.valid
    assert list(good.diagnostics) == []
    broken = CHECKOUT.replace("method: Charge", "method: Charge\n    bogus: 1")
    bad = await gw.stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=broken))
    assert not bad.valid
    assert any("bogus" in d.message and d.line > 0 and d.column > 0 for d in bad.diagnostics)


async def test_list_and_get_workflows(gw: Harness) -> None:
    """ListWorkflows lists names sorted without source; GetWorkflow adds source and graph."""
    listed = await gw.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert [w.name for w in listed.workflows] == ["checkout", "ping"]
    assert listed.workflows[0].version == "1.2"
    assert listed.workflows[0].description == "Reserve, then charge."
    assert all(w.source == "" and w.graph == "" for w in listed.workflows)
    got = await gw.stub.GetWorkflow(pb.GetWorkflowRequest(name="checkout"))
    assert got.source == CHECKOUT
    assert "reserve" in got.graph
    assert "charge" in got.graph
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.GetWorkflow(pb.GetWorkflowRequest(name="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_serves_overall_and_gateway(gw: Harness) -> None:
    """The health service reports SERVING for "" and maestro.v1.Gateway, NOT_FOUND otherwise."""
    health = health_pb2_grpc.HealthStub(gw.channel)
    for name in ("", "maestro.v1.Gateway"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="other.Svc"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reload_is_all_or_nothing(gw: Harness) -> None:
    """A reload with a broken file keeps the old set; a clean one swaps it."""
    directory = gw.server.registry.directory
    assert directory is not None
    (directory / "broken.yaml").write_text("name: broken\nsteps: 3\n")
    (directory / "ping.yml").unlink()
    problems = await gw.server.reload()
    assert problems
    assert all(p.file.endswith("broken.yaml") for p in problems)
    listed = await gw.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert [w.name for w in listed.workflows] == ["checkout", "ping"]
    (directory / "broken.yaml").unlink()
    assert await gw.server.reload() == []
    listed = await gw.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert [w.name for w in listed.workflows] == ["checkout"]


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_resolves_method_symbols(gw: Harness, version: str) -> None:
    """Reflection v1 and v1alpha answer a method symbol and google.rpc.ErrorInfo with their files."""
    call = gw.channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=r.ServerReflectionRequest.SerializeToString,
        response_deserializer=r.ServerReflectionResponse.FromString,
    )()
    files: dict[str, list[str]] = {}
    for symbol in ("maestro.v1.Gateway.Execute", "google.rpc.ErrorInfo"):
        await call.write(r.ServerReflectionRequest(file_containing_symbol=symbol))
        reply = await call.read()
        assert reply.WhichOneof("message_response") == "file_descriptor_response"
        files[symbol] = [
            descriptor_pb2.FileDescriptorProto.FromString(raw).name
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
    await call.write(r.ServerReflectionRequest(file_containing_symbol="maestro.v1.Gateway.Nope"))
    assert (await call.read()).WhichOneof("message_response") == "error_response"
    await call.done_writing()
    assert files["maestro.v1.Gateway.Execute"][0] == "maestro/v1/gateway.proto"
    assert "google/protobuf/struct.proto" in files["maestro.v1.Gateway.Execute"]
    assert files["google.rpc.ErrorInfo"][0] == "google/rpc/error_details.proto"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost / 127.0.0.1, made with openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_serves_only_tls_clients(tmp_path: Path, self_signed: tuple[Path, Path]) -> None:
    """With --tls-cert/--tls-key the gateway answers TLS clients trusting the certificate."""
    cert, key = self_signed
    directory = tmp_path / "wf"
    directory.mkdir()
    (directory / "ping.yaml").write_text(PING)
    server, _ = create_gateway(
        directory, transports=FakeTransports(), tls=TLSFiles(str(cert), str(key))
    )
    await server.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{server.port}", credentials) as channel:
            listed = await gateway_pb2_grpc.GatewayStub(channel).ListWorkflows(
                pb.ListWorkflowsRequest(), timeout=10
            )
            assert [w.name for w in listed.workflows] == ["ping"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gateway_pb2_grpc.GatewayStub(channel).ListWorkflows(
                    pb.ListWorkflowsRequest(), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.shutdown(0)


async def test_validate_workflow_resolves_sub_workflows_among_the_served(gw: Harness) -> None:
    """A sub-workflow must be one this gateway serves (did-you-mean), and not the text itself."""
    parent = """name: order
services:
  shop: {type: http, endpoint: "http://127.0.0.1:1"}
steps:
  - id: pay
    workflow: CHILD
"""
    served = await gw.stub.ValidateWorkflow(
        pb.ValidateWorkflowRequest(source=parent.replace("CHILD", "checkout"))
    )
    assert served.valid
    unknown = await gw.stub.ValidateWorkflow(
        pb.ValidateWorkflowRequest(source=parent.replace("CHILD", "chekout"))
    )
    assert not unknown.valid
    [problem] = unknown.diagnostics
    assert (problem.line, problem.column) == (6, 15)
    assert "unknown workflow 'chekout'" in problem.message
    assert "did you mean 'checkout'" in problem.message
    itself = await gw.stub.ValidateWorkflow(
        pb.ValidateWorkflowRequest(source=parent.replace("CHILD", "order"))
    )
    assert "runs itself" in itself.diagnostics[0].message
