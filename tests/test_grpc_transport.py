"""GrpcTransport against real grpc.aio servers on 127.0.0.1: calls, values, errors, cancels."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from grpc_testkit import RunningServer, Schema, compile_protoset, start_server

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError, ResolutionError
from maestro_gateway.model.types import Service
from maestro_gateway.transports.grpc import GrpcTransport


@pytest.fixture(scope="session")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    """The test protos, compiled once per session."""
    return Schema(compile_protoset(tmp_path_factory.mktemp("protos") / "kitchen.pb"))


@pytest.fixture
async def server(schema: Schema) -> AsyncIterator[RunningServer]:
    """A Kitchen/Mirror server with v1alpha reflection (grpcio's default)."""
    running = await start_server(schema)
    yield running
    await running.server.stop(None)


@pytest.fixture
async def make_transport() -> AsyncIterator[Callable[..., GrpcTransport]]:
    """Build transports for a service definition; every one is closed afterwards."""
    made: list[GrpcTransport] = []

    def make(endpoint: str, **fields: object) -> GrpcTransport:
        transport = GrpcTransport(Service(name="kitchen", type="grpc", endpoint=endpoint, **fields))  # type: ignore[arg-type]
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
def kitchen(server: RunningServer, make_transport: Callable[..., GrpcTransport]) -> GrpcTransport:
    """A transport to the default server."""
    return make_transport(server.endpoint)


async def test_unary_zero_values_present_keyed_by_proto_names(kitchen: GrpcTransport) -> None:
    """An empty response has every field, zero values included, keyed by proto field names."""
    out = await kitchen.call("testing.v1.Kitchen/Echo", {}, timeout=5, metadata=())
    assert out == {
        "i32": 0,
        "i64": 0,
        "u64": 0,
        "d": 0.0,
        "f": 0.0,
        "b": False,
        "s": "",
        "raw": "",
        "color": "COLOR_UNSPECIFIED",
        "inner": None,
        "items": [],
        "counts": {},
        "longs": [],
        "at": None,
        "took": None,
        "big": None,
        "extra": None,
        "note": None,
        "name": None,
        "number": None,
        "by_id": {},
    }


async def test_values_round_trip(kitchen: GrpcTransport) -> None:
    """64-bit ints beyond 2^53 stay ints; enums, bytes, WKTs, maps, repeated and nesting map."""
    big = 2**63 - 1
    request = {
        "i64": big,
        "u64": 2**64 - 1,
        "i32": 2.0,
        "f": 0.1,
        "raw": base64.b64encode(b"\x00\xffhi").decode(),
        "color": "COLOR_GREEN",
        "inner": {"label": "x", "n": 3},
        "items": [{"label": "a"}, {"label": "b", "n": 2}],
        "counts": {"a": 2**60 + 1},
        "longs": [2**53 + 1, -(2**62)],
        "at": "2024-05-01T12:00:00Z",
        "took": "1.500s",
        "big": 2**55 + 3,
        "extra": {"k": [1, "two", None]},
        "note": "",
        "number": 7,
        "byId": {"5": {"label": "five"}},
    }
    out = await kitchen.call("testing.v1.Kitchen.Echo", request, timeout=5, metadata=())
    assert out["i64"] == big
    assert isinstance(out["i64"], int)
    assert out["u64"] == 2**64 - 1
    assert out["i32"] == 2
    assert out["f"] == 0.1
    assert base64.b64decode(out["raw"]) == b"\x00\xffhi"
    assert out["color"] == "COLOR_GREEN"
    assert out["inner"] == {"label": "x", "n": 3}
    assert out["items"] == [{"label": "a", "n": 0}, {"label": "b", "n": 2}]
    assert out["counts"] == {"a": 2**60 + 1}
    assert out["longs"] == [2**53 + 1, -(2**62)]
    assert out["at"] == "2024-05-01T12:00:00Z"
    assert out["took"] == "1.500s"
    assert out["big"] == 2**55 + 3
    assert out["extra"] == {"k": [1.0, "two", None]}
    assert out["note"] == ""
    assert (out["name"], out["number"]) == (None, 7)
    assert out["by_id"] == {"5": {"label": "five", "n": 0}}


async def test_unknown_request_field_named(kitchen: GrpcTransport, server: RunningServer) -> None:
    """An unknown nested field is INVALID_ARGUMENT naming its path, and nothing is sent."""
    with pytest.raises(CallError) as info:
        await kitchen.call("Who", {"inner": {"labl": "x"}}, timeout=5, metadata=())
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.permanent
    assert "inner.labl" in info.value.message
    assert server.record.peers == []


async def test_wrong_type_named(kitchen: GrpcTransport) -> None:
    """A non-integral number for an int32 is INVALID_ARGUMENT naming the field."""
    with pytest.raises(CallError) as info:
        await kitchen.call("Who", {"items": [{"n": 1.5}]}, timeout=5, metadata=())
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "items" in info.value.message
    assert "n" in info.value.message


async def test_server_streaming_returns_list(kitchen: GrpcTransport) -> None:
    """A server-streaming method returns the list of its messages."""
    out = await kitchen.call("Count", {"n": 3}, timeout=5, metadata=())
    assert [m["s"] for m in out] == ["item 0", "item 1", "item 2"]
    assert [m["i64"] for m in out] == [0, 1, 2]


async def test_client_streaming_takes_list(kitchen: GrpcTransport) -> None:
    """A client-streaming method takes a list and returns one message."""
    out = await kitchen.call("Sum", [{"i64": 2**60}, {"i64": 5}], timeout=5, metadata=())
    assert out["i64"] == 2**60 + 5
    assert out["longs"] == [2**60, 5]


async def test_client_streaming_rejects_non_list(kitchen: GrpcTransport) -> None:
    """A client-streaming method given an object fails with INVALID_ARGUMENT."""
    with pytest.raises(CallError) as info:
        await kitchen.call("Sum", {"i64": 1}, timeout=5, metadata=())
    assert info.value.code == Code.INVALID_ARGUMENT


async def test_bidi_streaming(kitchen: GrpcTransport) -> None:
    """A bidirectional method takes a list and returns a list."""
    out = await kitchen.call("Chat", [{"s": "a"}, {"s": "b"}], timeout=5, metadata=())
    assert [m["s"] for m in out] == ["A", "B"]


@pytest.mark.parametrize(
    "code", [Code.NOT_FOUND, Code.UNAVAILABLE, Code.FAILED_PRECONDITION, Code.INTERNAL]
)
async def test_error_codes_mapped(kitchen: GrpcTransport, code: Code) -> None:
    """The server's status code and message become the CallError's."""
    with pytest.raises(CallError) as info:
        await kitchen.call("Fail", {"code": int(code), "message": "nope"}, timeout=5, metadata=())
    assert info.value.code == code
    assert info.value.message == "nope"
    assert info.value.retry_after is None
    assert not info.value.permanent


async def test_retry_info_sets_retry_after(kitchen: GrpcTransport) -> None:
    """A google.rpc.RetryInfo detail becomes retry_after in seconds."""
    with pytest.raises(CallError) as info:
        await kitchen.call(
            "Fail",
            {"code": int(Code.RESOURCE_EXHAUSTED), "message": "slow down", "retry_after_ms": 1500},
            timeout=5,
            metadata=(),
        )
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert info.value.retry_after == pytest.approx(1.5)


async def test_deadline_exceeded(kitchen: GrpcTransport) -> None:
    """A call outliving its timeout fails with DEADLINE_EXCEEDED."""
    await kitchen.describe("Sleep")
    with pytest.raises(CallError) as info:
        await kitchen.call("Sleep", {"seconds": 10}, timeout=0.3, metadata=())
    assert info.value.code == Code.DEADLINE_EXCEEDED


async def test_cancel_reaches_server(kitchen: GrpcTransport, server: RunningServer) -> None:
    """Cancelling the awaiting task cancels the RPC: the server sees the cancel."""
    task = asyncio.create_task(kitchen.call("Sleep", {"seconds": 30}, timeout=None, metadata=()))
    await asyncio.wait_for(server.record.sleep_started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.record.sleep_cancelled.wait(), 10)


async def test_metadata_passed_and_lower_cased(
    kitchen: GrpcTransport, server: RunningServer
) -> None:
    """Metadata reaches the server with lower-case keys; -bin keys carry bytes."""
    await kitchen.call(
        "testing.v1.Kitchen/Echo", {}, timeout=5, metadata=[("X-Team", "shop"), ("tok-bin", "é")]
    )
    seen = server.record.metadata[-1]
    assert seen["x-team"] == "shop"
    assert seen["tok-bin"] == "é".encode()


@pytest.mark.parametrize("pair", [("bad key", "v"), ("x-a", "line\nbreak"), ("grpc-timeout", "1S")])
async def test_bad_metadata_invalid_argument(kitchen: GrpcTransport, pair: tuple[str, str]) -> None:
    """A bad metadata key or value is INVALID_ARGUMENT, never a raw grpc exception."""
    with pytest.raises(CallError) as info:
        await kitchen.call("testing.v1.Kitchen/Echo", {}, timeout=5, metadata=[pair])
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "line" not in info.value.message


async def test_bare_name_ambiguous(kitchen: GrpcTransport) -> None:
    """A bare name defined by two services is FAILED_PRECONDITION naming both, permanent."""
    with pytest.raises(ResolutionError) as info:
        await kitchen.call("Echo", {}, timeout=5, metadata=())
    assert info.value.code == Code.FAILED_PRECONDITION
    assert info.value.permanent
    assert "testing.v1.Kitchen/Echo" in info.value.message
    assert "testing.v1.Mirror/Echo" in info.value.message


async def test_unknown_method_lists_methods(kitchen: GrpcTransport) -> None:
    """An unknown method is UNIMPLEMENTED (permanent) and lists what exists."""
    with pytest.raises(ResolutionError) as info:
        await kitchen.call("Nope", {}, timeout=5, metadata=())
    assert info.value.code == Code.UNIMPLEMENTED
    assert "testing.v1.Mirror/Reflect" in info.value.message
    with pytest.raises(ResolutionError) as info:
        await kitchen.call("testing.v1.Kitchen/Nope", {}, timeout=5, metadata=())
    assert "Echo" in info.value.message
    with pytest.raises(ResolutionError):
        await kitchen.call("testing.v1.Nope/Echo", {}, timeout=5, metadata=())


async def test_describe_returns_method_descriptor(kitchen: GrpcTransport) -> None:
    """describe() resolves a bare unique name to its protobuf MethodDescriptor."""
    method = await kitchen.describe("Reflect")
    assert method.full_name == "testing.v1.Mirror.Reflect"
    assert method.input_type.full_name == "testing.v1.Everything"


async def test_concurrent_first_calls_share_one_resolution(
    kitchen: GrpcTransport, server: RunningServer
) -> None:
    """Concurrent first calls load descriptors once (one reflection stream per version tried)."""
    outs = await asyncio.gather(
        *(kitchen.call("Who", {}, timeout=5, metadata=()) for _ in range(8))
    )
    assert len(outs) == 8
    assert server.record.reflection_paths == ["v1alpha"]


async def test_unreachable_is_unavailable(make_transport: Callable[..., GrpcTransport]) -> None:
    """Descriptors of an unreachable service fail with UNAVAILABLE, which is retryable."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = make_transport(f"127.0.0.1:{port}")
    with pytest.raises(CallError) as info:
        await transport.call("Who", {}, timeout=5, metadata=())
    assert info.value.code == Code.UNAVAILABLE
    assert not info.value.permanent


async def test_pool_round_robin(
    server: RunningServer, make_transport: Callable[..., GrpcTransport]
) -> None:
    """A pool of 3 spreads calls over 3 channels, each with its own connection."""
    transport = make_transport(server.endpoint, pool=3)
    for _ in range(6):
        await transport.call("Who", {}, timeout=5, metadata=())
    assert transport.channels.open_channels == 3
    assert len(set(server.record.peers)) == 3


async def test_closed_transport_unavailable(kitchen: GrpcTransport) -> None:
    """After close(), calls fail with UNAVAILABLE."""
    await kitchen.call("Who", {}, timeout=5, metadata=())
    await kitchen.close()
    with pytest.raises(CallError) as info:
        await kitchen.call("Who", {}, timeout=5, metadata=())
    assert info.value.code == Code.UNAVAILABLE


def test_protos_present() -> None:
    """The test protos ship with the tests."""
    assert (Path(__file__).parent / "protos" / "testing" / "v1" / "kitchen.proto").is_file()
