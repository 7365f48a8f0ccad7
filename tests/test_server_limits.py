"""Request limits of a real gateway on 127.0.0.1:0: undecodable requests, input size and depth,
header count and size, and the ValidateWorkflow budget and concurrency bound."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from test_server import CHECKOUT, PING, FakeTransports, error_info, ok, reserve

from maestro_gateway.server.app import GatewayServer, create_gateway
from maestro_gateway.server.limits import (
    DEFAULT_MAX_INPUT_DEPTH,
    RequestLimits,
    value_depth,
)

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
OPEN = {"type": "object"}
FREE = """\
name: free
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: ping
    service: shop
    method: Ping
    input: {}
"""

Gateway = tuple[GatewayServer, gateway_pb2_grpc.GatewayStub, grpc.aio.Channel]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Start gateways with the given limits; stop them all afterwards."""
    started: list[Gateway] = []

    async def make(limits: RequestLimits | None = None) -> Gateway:
        directory = tmp_path / f"wf{len(started)}"
        directory.mkdir()
        (directory / "checkout.yaml").write_text(CHECKOUT)
        (directory / "ping.yml").write_text(PING)
        (directory / "free.yaml").write_text(FREE)
        fakes = FakeTransports({"Reserve": reserve, "Release": ok, "Charge": ok, "Ping": ok})
        server, problems = create_gateway(directory, transports=fakes, limits=limits)
        assert problems == []
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        gateway = (server, gateway_pb2_grpc.GatewayStub(channel), channel)
        started.append(gateway)
        return gateway

    yield make
    for server, _, channel in started:
        await channel.close()
        await server.shutdown(0)


def nested(depth: int) -> Any:
    """A value of ``depth`` nested lists (``[]`` is depth 1)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def execute_request(value: Any, workflow: str = "free") -> pb.ExecuteRequest:
    data = struct_pb2.Struct()
    data.update({"v": value})
    return pb.ExecuteRequest(workflow=workflow, input=data)


def raw_execute_bytes(depth: int) -> bytes:
    """The wire bytes of an ExecuteRequest whose input nests ``depth`` lists deep.

    Built by hand because protobuf refuses to encode (and decode) messages this deep.
    """

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _varint(len(payload)) + payload

    value = field(6, b"")  # Value.list_value = ListValue{}
    for _ in range(depth - 1):
        value = field(6, field(1, value))  # Value{list_value: ListValue{values: [value]}}
    entry = field(1, b"v") + field(2, value)  # Struct.FieldsEntry
    return field(1, b"free") + field(2, field(1, entry))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_value_depth_counts_containers() -> None:
    """Scalars are depth 0, each object or list one more, and counting stops past the limit."""
    assert value_depth(1, 5) == 0
    assert value_depth({"a": [1, {"b": []}]}, 10) == 4
    assert value_depth(nested(1000), 10) == 11


@pytest.mark.parametrize("method", ["Run", "Execute", "Start"])
async def test_undecodable_request_is_invalid_argument_without_traceback(
    make_gateway: Callable[..., Awaitable[Gateway]],
    method: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An input nested 200 lists deep cannot be decoded: INVALID_ARGUMENT, one warning line."""
    _, _, channel = await make_gateway()
    path = f"/maestro.v1.Gateway/{method}"
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    call: Any = (
        channel.unary_stream(path, request_serializer=identity, response_deserializer=identity)
        if method == "Execute"
        else channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)
    )

    async def send() -> None:
        result = call(raw_execute_bytes(200), timeout=10)
        if method == "Execute":
            async for _ in result:
                pass
        else:
            await result

    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as info:
        await send()
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded" in (err.details() or "")
    assert error_info(err).reason == "INVALID_REQUEST"
    assert not any(r.exc_info for r in caplog.records)
    assert any("request_refused" in r.getMessage() for r in caplog.records)


async def test_grpcurl_deep_input_gets_invalid_argument(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """The real grpcurl sending a 200-deep input sees InvalidArgument, never Unknown."""
    if not Path(GRPCURL).exists():  # noqa: ASYNC240  (one stat before the test starts)
        pytest.skip("grpcurl is not installed next to the interpreter")
    server, _, _ = await make_gateway()
    data = '{"workflow": "free", "input": {"v": ' + "[" * 200 + "]" * 200 + "}}"
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-max-time",
        "10",
        "-d",
        data,
        f"127.0.0.1:{server.port}",
        "maestro.v1.Gateway/Run",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    text = (out + err).decode()
    assert "InvalidArgument" in text, text
    assert "could not be decoded" in text
    assert "Unknown" not in text


async def test_input_depth_limit_and_just_under(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """An input one level too deep is INVALID_ARGUMENT naming max_input_depth; the limit runs."""
    _, stub, _ = await make_gateway(RequestLimits(max_input_depth=6))
    # The input object itself is one level, its field "v" the rest.
    ok_result = await stub.Run(execute_request(nested(5)), timeout=10)
    assert ok_result.workflow == "free"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Run(execute_request(nested(6)), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "deeper than 6 levels (max_input_depth)" in (info.value.details() or "")
    assert error_info(info.value).metadata["limit"] == "6"


async def test_default_depth_limit_refuses_decodable_deep_input(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """With the defaults, a decodable input deeper than 32 levels is refused by the limit."""
    _, stub, _ = await make_gateway()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Start(execute_request(nested(DEFAULT_MAX_INPUT_DEPTH + 1)), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_input_depth" in (info.value.details() or "")


async def test_input_size_limit_and_just_under(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """An input over max_input_bytes is INVALID_ARGUMENT naming the limit; one at it runs."""
    limit = 1000
    _, stub, _ = await make_gateway(RequestLimits(max_input_bytes=limit))
    fits = execute_request("x")
    fits.input.fields["v"].string_value = "x" * (limit - (fits.input.ByteSize() - 1))
    while fits.input.ByteSize() > limit:  # the length prefixes grew with the string
        fits.input.fields["v"].string_value = fits.input.fields["v"].string_value[1:]
    assert fits.input.ByteSize() == limit
    assert (await stub.Run(fits, timeout=10)).workflow == "free"
    over = execute_request("x" * limit)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Execute(over, timeout=10):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert f"over the limit of {limit} bytes (max_input_bytes)" in details


async def test_header_count_limit(make_gateway: Callable[..., Awaitable[Gateway]]) -> None:
    """More request headers than max_headers is INVALID_ARGUMENT; a few fewer are accepted."""
    _, stub, _ = await make_gateway(RequestLimits(max_headers=10))
    few = tuple((f"x-h{i}", "v") for i in range(5))
    await stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=few, timeout=10)
    many = tuple((f"x-h{i}", "v") for i in range(20))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=many, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit of 10 (max_headers)" in (info.value.details() or "")


async def test_header_size_limit(make_gateway: Callable[..., Awaitable[Gateway]]) -> None:
    """Headers larger than max_header_bytes are refused by grpc core; smaller ones pass."""
    _, stub, _ = await make_gateway(RequestLimits(max_header_bytes=4096))
    await stub.ListWorkflows(
        pb.ListWorkflowsRequest(), metadata=(("x-big", "v" * 1000),), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListWorkflows(
            pb.ListWorkflowsRequest(), metadata=(("x-big", "v" * 8000),), timeout=10
        )
    assert info.value.code() in (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
    )


BILLION_LAUGHS = "\n".join(
    [
        "name: laughs",
        'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)),
        'services: {s: {type: grpc, endpoint: "x:1"}}',
        "steps: [{id: a, service: s, method: M, input: *a9}]",
        "",
    ]
)


async def test_validate_workflow_refuses_billion_laughs_quickly(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """A 1 KB billion-laughs text gets a positioned diagnostic naming max_yaml_nodes at once."""
    _, stub, _ = await make_gateway()
    assert len(BILLION_LAUGHS) < 1024
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = await asyncio.gather(
        *(
            stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=BILLION_LAUGHS), timeout=10)
            for _ in range(3)
        )
    )
    assert loop.time() - started < 2.0
    for answer in answers:
        assert not answer.valid
        (diagnostic,) = answer.diagnostics
        assert "max_yaml_nodes" in diagnostic.message
        assert diagnostic.line > 1
        assert diagnostic.column > 1


async def test_validate_workflow_source_size_limit(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """A definition over 1 MiB is one diagnostic at 1:1 naming max_yaml_bytes."""
    _, stub, _ = await make_gateway()
    source = CHECKOUT + "#" * (1024 * 1024)
    answer = await stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=source), timeout=10)
    (diagnostic,) = answer.diagnostics
    assert (diagnostic.line, diagnostic.column) == (1, 1)
    assert "over the limit of 1048576 bytes (max_yaml_bytes)" in diagnostic.message


async def test_validate_workflow_time_budget(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """A validation longer than validate_timeout ends DEADLINE_EXCEEDED naming the budget."""
    _, stub, _ = await make_gateway(RequestLimits(validate_timeout=0.001))
    # A few thousand steps take far longer than a millisecond to check.
    steps = "".join(
        f"  - {{id: s{i}, service: shop, method: Ping, input: {{}}}}\n" for i in range(600)
    )
    source = 'name: big\nservices:\n  shop: {type: grpc, endpoint: "127.0.0.1:9"}\nsteps:\n'
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=source + steps), timeout=10)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "longer than 0.001s (validate_timeout)" in (info.value.details() or "")


async def test_validate_workflow_concurrency_bound(
    make_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    """Beyond max_validations in progress a validation is RESOURCE_EXHAUSTED; later ones run."""
    server, stub, _ = await make_gateway(RequestLimits(max_validations=1))
    steps = "".join(
        f"  - {{id: s{i}, service: shop, method: Ping, input: {{}}}}\n" for i in range(600)
    )
    slow = 'name: big\nservices:\n  shop: {type: grpc, endpoint: "127.0.0.1:9"}\nsteps:\n' + steps
    first = asyncio.ensure_future(
        stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=slow), timeout=10)
    )
    async with asyncio.timeout(10):
        while server.service._validations == 0:  # noqa: ASYNC110  (no event to wait on)
            await asyncio.sleep(0.001)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=PING), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit 1, max_validations" in (info.value.details() or "")
    assert (await first).valid
    assert (await stub.ValidateWorkflow(pb.ValidateWorkflowRequest(source=PING))).valid


def test_serve_help_documents_the_limit_flags() -> None:
    """``maestro serve --help`` lists every limit flag with its default."""
    maestro = str(Path(sys.executable).parent / "maestro")
    helptext = subprocess.run(
        [maestro, "serve", "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for flag in (
        "--max-yaml-bytes",
        "--max-yaml-nodes",
        "--max-yaml-depth",
        "--max-input-bytes",
        "--max-input-depth",
        "--max-headers",
        "--max-header-bytes",
        "--validate-timeout",
        "--max-validations",
        "--max-streams-per-connection",
    ):
        assert flag in helptext
