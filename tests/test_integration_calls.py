"""What crosses the wire to the real demo services: streams, values, metadata, and the gateway RPC.

Streaming methods go through a workflow on the grpcio inventory; metadata templates and caller
headers are checked as each stack recorded them; the gateway server (in-process, real engine and
transports) shows caller headers forwarded and the RPC ending with the original failure's code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from integration.support import ORDER, execute, render, saga
from maestro.v1 import gateway_pb2, gateway_pb2_grpc

from demo.harness import DemoServices
from maestro_gateway.engine import Engine, ExecutionStatus
from maestro_gateway.model.loader import load_string
from maestro_gateway.server import GatewayServer, create_gateway
from maestro_gateway.transports import Transports

pytestmark = pytest.mark.asyncio(loop_scope="module")

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BUSINESS = {
    "inventory": ("Reserve", "reserve"),
    "payments": ("Charge", "charge"),
    "shipping": ("CreateShipment", "ship"),
    "mailer": ("SendMail", "notify"),
}
"""Per service: the business method ``saga.yaml`` calls and its step."""


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(demo: DemoServices) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await demo.reset()


@pytest_asyncio.fixture(loop_scope="module")
async def engine() -> AsyncIterator[Engine]:
    """A real engine over real transports (closed after the test)."""
    async with Transports() as transports:
        yield Engine(transports)


STREAMS = """
name: streams
services:
  inventory: {type: grpc, endpoint: "$inventory", timeout: 3s}
steps:
  - id: reserve_many
    service: inventory
    method: ReserveMany
    input: "{{ input.lines }}"
    output: reserved
  - id: watch
    service: inventory
    method: shop.v1.Inventory/WatchStock
    input: {skus: [sku-1, sku-3, sku-empty]}
    output: levels
output:
  ids: "{{ reserved.reservations.map(r, r.id) }}"
  levels: "{{ levels }}"
"""


async def test_client_and_server_streaming_methods_in_a_workflow(
    demo: DemoServices, engine: Engine
) -> None:
    """A client-streaming step sends a list as messages; a server-streaming step yields a list."""
    workflow = load_string(render(STREAMS, demo))
    lines = [
        {"order_id": "o-1", "sku": "sku-1", "qty": 2.0},  # integral double, as Struct gives it
        {"orderId": "o-1", "sku": "sku-3", "qty": 1},
    ]
    result, _ = await execute(engine, workflow, {"lines": lines})
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    ids = result.output["ids"]
    assert len(ids) == 2
    assert all(isinstance(i, str) and i.startswith("res-") for i in ids)
    # Levels after the reservation; int64 as ints, zero values present.
    assert result.output["levels"] == [
        {"sku": "sku-1", "available": 98},
        {"sku": "sku-3", "available": 4},
        {"sku": "sku-empty", "available": 0},
    ]
    assert all(type(level["available"]) is int for level in result.output["levels"])
    reserved = result.steps["reserve_many"].output["reservations"]
    assert [(r["sku"], r["qty"]) for r in reserved] == [("sku-1", 2), ("sku-3", 1)]
    calls = await demo.inventory.control.calls()
    assert [(c.method, c.outcome) for c in calls] == [("ReserveMany", "OK"), ("WatchStock", "OK")]
    assert calls[0].request == [
        {"order_id": "o-1", "sku": "sku-1", "qty": 2},
        {"order_id": "o-1", "sku": "sku-3", "qty": 1},
    ]
    assert calls[1].request == {"skus": ["sku-1", "sku-3", "sku-empty"]}


async def test_metadata_templates_and_caller_headers_reach_every_stack(
    demo: DemoServices, engine: Engine
) -> None:
    """Service and step metadata templates and caller trace headers arrive at all four services."""
    caller = (("traceparent", TRACEPARENT), ("x-request-id", "req-42"))
    result, _ = await execute(engine, saga(demo), ORDER, metadata=caller)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    for name, (method, step) in BUSINESS.items():
        (call,) = await demo[name].control.calls()
        assert call.method == method
        assert call.metadata == {
            "traceparent": TRACEPARENT,
            "x-request-id": "req-42",
            "x-demo-service": name,
            "x-demo-step": f"{step} o-1",
        }


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(
    demo: DemoServices, tmp_path: Path
) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    """The gateway server serving ``saga.yaml`` with the real engine, and a stub talking to it."""
    (tmp_path / "saga.yaml").write_text(
        render("saga.yaml", demo, timeout="20s", compensation_timeout="10s")
    )
    server: GatewayServer
    server, problems = create_gateway(tmp_path)
    assert problems == []
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield gateway_pb2_grpc.GatewayStub(channel)
    finally:
        await channel.close()
        await server.shutdown(0)


def execute_request(**input: Any) -> gateway_pb2.ExecuteRequest:
    """An ExecuteRequest for ``saga`` (numbers travel as doubles in the Struct)."""
    data = struct_pb2.Struct()
    data.update(input)
    return gateway_pb2.ExecuteRequest(workflow="saga", input=data)


async def collect(
    call: Any,
) -> tuple[list[gateway_pb2.ExecutionEvent], grpc.aio.AioRpcError | None]:
    """The events of an Execute call, and the error that ended it (None when it ended OK)."""
    events: list[gateway_pb2.ExecutionEvent] = []
    try:
        async for event in call:
            events.append(event)  # noqa: PERF401  (keep the events received before an error)
    except grpc.aio.AioRpcError as error:
        return events, error
    return events, None


async def test_gateway_forwards_caller_headers_to_every_stack(
    demo: DemoServices, gateway: gateway_pb2_grpc.GatewayStub
) -> None:
    """Trace headers on the Run RPC reach every downstream; other caller headers do not."""
    metadata = (
        ("traceparent", TRACEPARENT),
        ("x-request-id", "req-7"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-demo-secret", "not forwarded"),
    )
    result = await gateway.Run(execute_request(**ORDER), metadata=metadata, timeout=30)
    assert result.status == gateway_pb2.EXECUTION_STATUS_SUCCEEDED
    for name, (method, step) in BUSINESS.items():
        (call,) = await demo[name].control.calls()
        assert call.method == method
        assert call.metadata == {
            "traceparent": TRACEPARENT,
            "x-request-id": "req-7",
            "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
            "x-demo-service": name,
            "x-demo-step": f"{step} o-1",
        }


async def test_gateway_failed_compensation_ends_with_the_original_code(
    demo: DemoServices, gateway: gateway_pb2_grpc.GatewayStub
) -> None:
    """Execute ends with `finished` COMPENSATION_FAILED, then the RPC fails with the step's code."""
    await demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    await demo.inventory.control.add_fault(method="Release", code="FAILED_PRECONDITION")
    events, error = await collect(gateway.Execute(execute_request(**ORDER), timeout=30))
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "INVALID_ARGUMENT"
    assert info.metadata["step_id"] == "ship"
    assert info.metadata["status"] == "COMPENSATION_FAILED"
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "finished"
    failed = [e.compensation_failed for e in events if e.HasField("compensation_failed")]
    assert [(f.step_id, f.error.code) for f in failed] == [("reserve", "FAILED_PRECONDITION")]
    result = events[-1].finished.result
    assert result.status == gateway_pb2.EXECUTION_STATUS_COMPENSATION_FAILED
    assert (result.error.step_id, result.error.code) == ("ship", "INVALID_ARGUMENT")
    by_id = {s.step_id: s for s in result.steps}
    assert by_id["reserve"].status == gateway_pb2.STEP_STATUS_COMPENSATION_FAILED
    assert by_id["reserve"].compensation_error.code == "FAILED_PRECONDITION"
    assert by_id["charge"].status == gateway_pb2.STEP_STATUS_COMPENSATED
    assert by_id["notify"].status == gateway_pb2.STEP_STATUS_COMPENSATED
    refund = [c for c in await demo.payments.control.calls() if c.method == "Refund"]
    assert [c.outcome for c in refund] == ["OK"]
