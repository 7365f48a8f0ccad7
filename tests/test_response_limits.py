"""``max_response_bytes`` per service: a real gRPC server and a real HTTP server answering more
than the service accepts get RESOURCE_EXHAUSTED naming the service; just under is accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from grpc_testkit import RunningServer, Schema, compile_protoset, start_server

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError, DefinitionError
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import DEFAULT_MAX_RESPONSE_BYTES, Service
from maestro_gateway.transports.factory import transport_key
from maestro_gateway.transports.grpc import GrpcTransport
from maestro_gateway.transports.http import HttpTransport

LIMIT = 10_000


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    """The test protos, compiled once."""
    return Schema(compile_protoset(tmp_path_factory.mktemp("protos") / "kitchen.pb"))


@pytest.fixture
async def grpc_server(schema: Schema) -> AsyncIterator[RunningServer]:
    """A Kitchen server whose Echo returns the request."""
    running = await start_server(schema)
    yield running
    await running.server.stop(None)


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    """An HTTP server answering ``/n/{size}`` with a body of ``size`` bytes (no length sent)."""

    async def sized(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * int(request.match_info["size"]))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/n/{size}", sized)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def test_default_and_definition() -> None:
    """The default is 4 MiB; a service sets its own, which must be a positive integer."""
    assert DEFAULT_MAX_RESPONSE_BYTES == 4 * 1024 * 1024
    text = """\
name: r
services:
  big: {type: grpc, endpoint: "x:1", max_response_bytes: 100}
  small: {type: http, endpoint: "http://x"}
steps:
  - {id: a, service: big, method: M, input: {}}
  - {id: b, service: small, method: GET /b, input: {}}
"""
    workflow = load_string(text)
    assert workflow.services["big"].max_response_bytes == 100
    assert workflow.services["small"].max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
    with pytest.raises(DefinitionError, match="max_response_bytes"):
        load_string(text.replace("max_response_bytes: 100", "max_response_bytes: 0"))
    assert transport_key(workflow.services["big"]) != transport_key(
        Service(name="big", type="grpc", endpoint="x:1")
    )


async def test_grpc_response_over_the_limit_names_the_service(
    grpc_server: RunningServer,
) -> None:
    """A gRPC response larger than max_response_bytes is RESOURCE_EXHAUSTED, permanent."""
    service = Service(
        name="kitchen", type="grpc", endpoint=grpc_server.endpoint, max_response_bytes=LIMIT
    )
    transport = GrpcTransport(service)
    try:
        small = await transport.call(
            "testing.v1.Kitchen/Echo", {"s": "x" * (LIMIT - 100)}, timeout=10, metadata=()
        )
        assert len(small["s"]) == LIMIT - 100
        with pytest.raises(CallError) as info:
            await transport.call(
                "testing.v1.Kitchen/Echo", {"s": "x" * (LIMIT + 100)}, timeout=10, metadata=()
            )
    finally:
        await transport.close()
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    assert info.value.permanent
    assert f"larger than {LIMIT} bytes (max_response_bytes of service 'kitchen')" in (
        info.value.message
    )


async def test_http_response_over_the_limit_names_the_service(http_url: str) -> None:
    """An HTTP body larger than the service's max_response_bytes is RESOURCE_EXHAUSTED."""
    service = Service(name="mailer", type="http", endpoint=http_url, max_response_bytes=LIMIT)
    async with HttpTransport(service) as transport:
        body = await transport.call(f"GET /n/{LIMIT}", None, timeout=10, metadata=())
        assert body == "x" * LIMIT
        with pytest.raises(CallError) as info:
            await transport.call(f"GET /n/{LIMIT + 1}", None, timeout=10, metadata=())
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    assert info.value.permanent
    assert f"larger than {LIMIT} bytes (max_response_bytes of service 'mailer')" in (
        info.value.message
    )
