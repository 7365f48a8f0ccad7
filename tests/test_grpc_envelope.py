"""Maestro.go's envelope in the gRPC transport, against in-process servers written for Maestro.go.

What is sent (fields, ids, metadata), how ``data`` comes back, the choice of protocol, and that
the gateway's own ``maestro.v1`` files and a downstream's never meet: the downstream here has
names that clash with the Gateway's, and the gateway's reflection never describes the envelope.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envelope_kit import EnvelopeServer, Legacy, Received, start_envelope, struct_data
from google.protobuf import any_pb2, descriptor_pool, json_format, struct_pb2, timestamp_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from maestro.v1 import gateway_pb2

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service
from maestro_gateway.server import create_gateway
from maestro_gateway.transports import CallInfo
from maestro_gateway.transports.grpc import GrpcTransport

STRUCT = "type.googleapis.com/google.protobuf.Struct"


@pytest.fixture(scope="session")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Legacy:
    """The Maestro.go-style schema (envelope plus names clashing with the Gateway's)."""
    return Legacy("envelope.proto", tmp_path_factory.mktemp("legacy") / "envelope.pb")


@pytest.fixture(scope="session")
def string_payload(tmp_path_factory: pytest.TempPathFactory) -> Legacy:
    """An envelope whose payload is a string: not Maestro.go's wire format."""
    return Legacy("string_payload.proto", tmp_path_factory.mktemp("legacy") / "string.pb")


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Any]]:
    """Start envelope servers; every one is stopped afterwards."""
    started: list[EnvelopeServer] = []

    async def start(legacy: Legacy, answer: Callable[[Received], Any], **options: Any) -> Any:
        running = await start_envelope(legacy, answer, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.server.stop(None)


@pytest.fixture
async def transports() -> AsyncIterator[Callable[..., GrpcTransport]]:
    """Build transports; every one is closed afterwards."""
    made: list[GrpcTransport] = []

    def make(endpoint: str, **fields: Any) -> GrpcTransport:
        made.append(GrpcTransport(Service(name="legacy", type="grpc", endpoint=endpoint, **fields)))
        return made[-1]

    yield make
    for transport in made:
        await transport.close()


def echo(received: Received) -> dict[str, Any]:
    """Answer success with ``{"got": <method>}``."""
    return {"success": True, "data": struct_data({"got": received.request.method})}


INFO = CallInfo("exec-7", "reserve")


async def test_a_call_is_an_execute_with_the_envelope_fields_and_metadata(
    legacy: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """method, payload (a Struct), headers and the three ids, also as metadata (ours win)."""
    server = await servers(legacy, echo)
    transport = transports(server.endpoint)
    request = {
        "sku": "sku-1",
        "qty": 2,
        "tags": ["a", None, True],
        "blob": b"\x00\x01",
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "nested": {"x": 1.5},
    }
    metadata = [("x-team", "shop"), ("correlation-id", "forged"), ("x-trace-bin", "raw")]
    out = await transport.call("ReserveItems", request, timeout=5, metadata=metadata, info=INFO)
    assert out == {"got": "ReserveItems"}
    (got,) = server.received
    assert got.rpc == "Execute"
    sent = got.request
    assert sent.method == "ReserveItems"
    assert sent.payload.type_url == STRUCT
    assert dict(sent.headers) == {"x-team": "shop"}
    assert (sent.correlation_id, sent.workflow_id, sent.step_id) == (
        "exec-7:reserve",
        "exec-7",
        "reserve",
    )
    assert got.metadata["workflow-id"] == "exec-7"
    assert got.metadata["step-id"] == "reserve"
    assert got.metadata["correlation-id"] == "exec-7:reserve"
    assert got.metadata["x-team"] == "shop"
    payload = struct_pb2.Struct()
    assert sent.payload.Unpack(payload)
    assert json_format.MessageToDict(payload) == {
        "sku": "sku-1",
        "qty": 2.0,
        "tags": ["a", None, True],
        "blob": "AAE=",
        "at": "2024-01-02T03:04:05Z",
        "nested": {"x": 1.5},
    }


async def test_a_compensation_is_a_compensate_and_no_info_sends_no_ids(
    legacy: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """CallInfo(compensation=True) calls Compensate; a call outside an execution has empty ids."""
    server = await servers(legacy, echo)
    transport = transports(server.endpoint)
    undo = CallInfo("exec-7", "reserve", compensation=True)
    assert await transport.call("ReleaseItems", {}, timeout=5, metadata=(), info=undo) == {
        "got": "ReleaseItems"
    }
    await transport.call("Ping", None, timeout=5, metadata=())
    first, second = server.received
    assert (first.rpc, first.request.step_id) == ("Compensate", "reserve")
    assert (second.rpc, second.request.correlation_id, second.request.workflow_id) == (
        "Execute",
        "",
        "",
    )
    assert "correlation-id" not in second.metadata
    assert second.request.payload.type_url == STRUCT


async def test_a_non_object_input_is_invalid_argument_before_sending(
    legacy: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """The payload is a Struct: a list input is INVALID_ARGUMENT, permanent, nothing sent."""
    server = await servers(legacy, echo)
    with pytest.raises(CallError) as info:
        await transports(server.endpoint).call("Ship", [1, 2], timeout=5, metadata=(), info=INFO)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.permanent
    assert "must be an object" in info.value.message
    assert server.received == []


def _timestamp() -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(timestamp_pb2.Timestamp(seconds=1_700_000_000))
    return packed


def _receipt(legacy: Legacy) -> any_pb2.Any:
    receipt = legacy.cls("Receipt")(id="r-1", amount=2**60, tags=["x"])
    return any_pb2.Any(
        type_url="type.googleapis.com/maestro.v1.Receipt", value=receipt.SerializeToString()
    )


@pytest.mark.parametrize(
    ("data", "reflection", "expected"),
    [
        (None, True, None),
        (
            lambda _: struct_data({"n": 3, "x": 1.5, "l": [2, 2.5]}),
            True,
            {"n": 3, "x": 1.5, "l": [2, 2.5]},
        ),
        (lambda _: _timestamp(), False, "2023-11-14T22:13:20Z"),
        (lambda legacy: _receipt(legacy), True, {"id": "r-1", "amount": 2**60, "tags": ["x"]}),
        (
            lambda legacy: _receipt(legacy),
            False,
            lambda legacy: {
                "@type": "type.googleapis.com/maestro.v1.Receipt",
                "value": base64.b64encode(_receipt(legacy).value).decode(),
            },
        ),
        (
            lambda _: any_pb2.Any(type_url="example.com/acme.Secret", value=b"\xff\x00"),
            True,
            {"@type": "example.com/acme.Secret", "value": "/wA="},
        ),
    ],
    ids=["empty", "struct", "timestamp", "own-type", "own-type-unknown", "unknown"],
)
async def test_response_data_is_unpacked(
    legacy: Legacy,
    servers: Callable[..., Any],
    transports: Callable[..., GrpcTransport],
    data: Callable[[Legacy], any_pb2.Any] | None,
    reflection: bool,
    expected: Any,
) -> None:
    """Empty data is null; a Struct an object (whole numbers as ints); a type the gateway knows
    (well-known, or from the service's own reflection) its converted value; any other
    {"@type", "value": base64}."""

    def answer(_: Received) -> dict[str, Any]:
        return {"success": True} if data is None else {"success": True, "data": data(legacy)}

    server = await servers(legacy, answer, reflection=reflection)
    out = await transports(server.endpoint).call("Get", {}, timeout=5, metadata=(), info=INFO)
    assert out == (expected(legacy) if callable(expected) else expected)


async def test_data_that_does_not_decode_as_its_type_is_internal(
    legacy: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """An Any claiming a known type with bytes that are not one is INTERNAL."""

    def answer(_: Received) -> dict[str, Any]:
        bad = any_pb2.Any(type_url="type.googleapis.com/google.protobuf.Timestamp", value=b"\xff")
        return {"success": True, "data": bad}

    server = await servers(legacy, answer)
    with pytest.raises(CallError) as info:
        await transports(server.endpoint).call("Get", {}, timeout=5, metadata=(), info=INFO)
    assert info.value.code is Code.INTERNAL
    assert "not a valid google.protobuf.Timestamp" in info.value.message


async def test_success_false_is_failed_precondition_with_the_error_text(
    legacy: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """success: false is FAILED_PRECONDITION, permanent, with `error` (or a default) as message."""
    errors = iter(["card declined", ""])
    server = await servers(legacy, lambda _: {"success": False, "error": next(errors)})
    transport = transports(server.endpoint)
    for expected in ("card declined", "'Charge' answered success: false without an error message"):
        with pytest.raises(CallError) as info:
            await transport.call("Charge", {}, timeout=5, metadata=(), info=INFO)
        assert info.value.code is Code.FAILED_PRECONDITION
        assert info.value.permanent
        assert info.value.message == expected


async def test_grpc_errors_of_the_envelope_keep_their_codes(
    legacy: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """A status the service aborts with reaches the engine unchanged (retryable when it is)."""
    server = await servers(
        legacy, lambda _: {"abort": (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")}
    )
    with pytest.raises(CallError) as info:
        await transports(server.endpoint).call("Charge", {}, timeout=5, metadata=(), info=INFO)
    assert (info.value.code, info.value.message) == (Code.RESOURCE_EXHAUSTED, "slow down")
    assert not info.value.permanent


@pytest.mark.parametrize("reflection", [True, False])
async def test_the_protocol_is_chosen_once_and_said(
    legacy: Legacy,
    servers: Callable[..., Any],
    transports: Callable[..., GrpcTransport],
    reflection: bool,
) -> None:
    """auto picks the envelope from reflection, or from the probe without it; explicit wins."""
    server = await servers(legacy, echo, reflection=reflection)
    auto = await transports(server.endpoint).schema(wait=5)
    assert auto.protocol == "maestro-go"
    if reflection:
        assert auto.reason == (
            "reflection lists maestro.v1.MaestroService; the methods of maestro.v1.Orchestrator"
            " are still called directly"
        )
    else:
        assert auto.reason == "no reflection; the service answers maestro.v1.MaestroService/Execute"
        assert auto.descriptors is None
    assert server.received == []  # the probe runs no handler
    forced = await transports(server.endpoint, protocol="maestro-go").schema(wait=5)
    assert (forced.protocol, forced.forced) == ("maestro-go", True)


async def test_the_downstreams_maestro_v1_never_meets_the_gateways(
    legacy: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """A downstream's own maestro.v1.ExecuteRequest and Workflow stay in its private pool."""
    server = await servers(legacy, echo)
    transport = transports(server.endpoint)
    schema = await transport.schema(wait=5)
    assert schema.descriptors is not None
    theirs = schema.descriptors.pool.FindMessageTypeByName("maestro.v1.ExecuteRequest")
    assert [f.name for f in theirs.fields] == ["workflow_name"]
    ours = descriptor_pool.Default().FindMessageTypeByName("maestro.v1.ExecuteRequest")
    assert ours is gateway_pb2.ExecuteRequest.DESCRIPTOR
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("maestro.v1.Receipt")
    # A method of its own, by full name, is called directly (its Orchestrator has no handler).
    with pytest.raises(CallError) as info:
        await transport.call("maestro.v1.Orchestrator/ExecuteWorkflow", {}, timeout=5, metadata=())
    assert info.value.code is Code.UNIMPLEMENTED


async def test_an_envelope_of_another_shape_is_refused(
    string_payload: Legacy, servers: Callable[..., Any], transports: Callable[..., GrpcTransport]
) -> None:
    """A MaestroService whose payload is a string is not Maestro.go's: FAILED_PRECONDITION."""
    server = await servers(string_payload, echo)
    with pytest.raises(CallError) as info:
        await transports(server.endpoint).call("Create", {}, timeout=5, metadata=(), info=INFO)
    assert info.value.code is Code.FAILED_PRECONDITION
    assert info.value.permanent
    assert info.value.message == (
        "cannot call 'Create' through the envelope: maestro.v1.MaestroService/Execute: field 2 of "
        "maestro.v1.ServiceRequest is not Maestro.go's 'payload' (google.protobuf.Any)"
    )
    assert server.received == []


async def test_the_gateway_describes_only_what_it_serves(tmp_path: Path) -> None:
    """The gateway's reflection lists and describes maestro.v1.Gateway, never the envelope file
    compiled into it (same package), while error details stay describable for grpcurl."""
    import maestro_gateway.transports.grpc.envelope  # noqa: F401  (the envelope is loaded)

    server, _ = create_gateway(tmp_path)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            asks = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="maestro.v1.Gateway"),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="maestro.v1.MaestroService"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="maestro.v1.ServiceRequest"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_by_filename="maestro/v1/maestro_go.proto"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="google.rpc.ErrorInfo"
                ),
            ]
            answers = [a async for a in stub.ServerReflectionInfo(iter(asks), timeout=5)]
    finally:
        await server.shutdown(0)
    listed = {s.name for s in answers[0].list_services_response.service}
    assert "maestro.v1.Gateway" in listed
    assert "maestro.v1.MaestroService" not in listed
    assert answers[1].HasField("file_descriptor_response")
    for refused in answers[2:5]:
        assert refused.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert answers[5].HasField("file_descriptor_response")
