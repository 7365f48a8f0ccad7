"""Plain value ⇄ message conversion of the gRPC transport, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.protobuf import descriptor_pb2, json_format, struct_pb2, wrappers_pb2

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service
from maestro_gateway.transports.grpc import GrpcTransport, build_request, to_plain


def test_recursive_message_type() -> None:
    """A message type that contains itself converts without endless recursion."""
    message = descriptor_pb2.DescriptorProto(
        name="Outer", nested_type=[descriptor_pb2.DescriptorProto(name="Inner")]
    )
    out = to_plain(message)
    assert out["name"] == "Outer"
    assert out["nested_type"][0]["name"] == "Inner"
    assert out["nested_type"][0]["nested_type"] == []
    assert out["options"] is None


def test_matches_message_to_dict_except_int64() -> None:
    """Apart from int64 kept as ints and unset messages as None, the output is proto3 JSON."""
    message = descriptor_pb2.FieldDescriptorProto(
        name="f", number=3, label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    )
    expected = json_format.MessageToDict(message, preserving_proto_field_name=True)
    out = {k: v for k, v in to_plain(message).items() if v is not None}
    assert out == expected


def test_wrappers_and_struct() -> None:
    """Wrappers become their value (Int64Value as an int); Struct becomes a dict."""
    assert to_plain(wrappers_pb2.Int64Value(value=2**62)) == 2**62
    assert to_plain(wrappers_pb2.BytesValue(value=b"\x01")) == "AQ=="
    struct = struct_pb2.Struct()
    struct.update({"a": [1, "b", None, {"c": True}]})
    assert to_plain(struct) == {"a": [1.0, "b", None, {"c": True}]}


def test_request_accepts_camel_case_and_integral_floats() -> None:
    """lowerCamel names and integral floats (2.0 for an int32, 2^60 as a float) are accepted."""
    message = build_request(
        descriptor_pb2.FieldDescriptorProto,
        {"typeName": ".x.Y", "number": 2.0, "oneofIndex": 1.0},
        what="m",
    )
    assert (message.type_name, message.number, message.oneof_index) == (".x.Y", 2, 1)
    big = build_request(wrappers_pb2.Int64Value, None, what="m")
    assert big.value == 0


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"nmber": 1}, "'nmber'"),
        ({"options": {"packd": True}}, "'options.packd'"),
        ({"number": 1.5}, "'number'"),
        ({"options": {"packed": "yes"}}, "'options.packed'"),
        ([1, 2], "must be an object"),
    ],
)
def test_request_errors_name_the_field(value: object, needle: str) -> None:
    """A request that does not fit is INVALID_ARGUMENT, permanent, naming the field path."""
    with pytest.raises(CallError) as info:
        build_request(descriptor_pb2.FieldDescriptorProto, value, what="pkg.Svc/M")
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.permanent
    assert needle in info.value.message
    assert "pkg.Svc/M" in info.value.message


@pytest.fixture
async def silent_endpoint() -> AsyncIterator[str]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_deadline_while_loading_descriptors(silent_endpoint: str) -> None:
    """A call whose deadline passes while descriptors load fails with DEADLINE_EXCEEDED."""
    transport = GrpcTransport(Service(name="s", type="grpc", endpoint=silent_endpoint))
    try:
        with pytest.raises(CallError) as info:
            await transport.call("Echo", {}, timeout=0.3, metadata=())
        assert info.value.code == Code.DEADLINE_EXCEEDED
        assert not info.value.permanent
    finally:
        await transport.close()
