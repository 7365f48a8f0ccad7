"""Transports: which service definitions share a transport, and closing them all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import (
    CircuitBreakerPolicy,
    ProtosetSource,
    RetryPolicy,
    Service,
    TLSConfig,
)
from maestro_gateway.transports import GrpcTransport, HttpTransport, Transports
from maestro_gateway.transports.base import CallInfo, Metadata, Transport

GRPC = Service(name="inventory", type="grpc", endpoint="127.0.0.1:50051")
HTTP = Service(name="mailer", type="http", endpoint="http://127.0.0.1:8080")


class Recorded:
    """A transport that records whether it was closed (and can fail to close)."""

    def __init__(self, service: Service, fail_close: bool = False) -> None:
        self.service = service
        self.closed = False
        self.fail_close = fail_close

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the Transport protocol's signature
        metadata: Metadata,
        info: CallInfo | None = None,
    ) -> Any:
        raise AssertionError("not called in these tests")

    async def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise RuntimeError(f"cannot close {self.service.name}")


@pytest.fixture
async def transports() -> AsyncIterator[Transports]:
    """The real factory, closed after the test."""
    async with Transports() as factory:
        yield factory


async def test_builds_the_transport_of_each_type(transports: Transports) -> None:
    """A grpc service gets a GrpcTransport, an http service an HttpTransport."""
    assert isinstance(transports.transport_for(GRPC), GrpcTransport)
    assert isinstance(transports.transport_for(HTTP), HttpTransport)


@pytest.mark.parametrize("base", [GRPC, HTTP], ids=["grpc", "http"])
async def test_same_endpoint_and_options_share_one_transport(
    transports: Transports, base: Service
) -> None:
    """Definitions differing only in per-call options (name, timeout, retry, breaker, metadata) share."""
    other = replace(
        base,
        name="other-workflow-name",
        timeout=1.5,
        retry=RetryPolicy(attempts=4),
        circuit_breaker=CircuitBreakerPolicy(failures=2),
        metadata={},
    )
    assert transports.transport_for(other) is transports.transport_for(base)
    assert len(transports) == 1


@pytest.mark.parametrize(
    "changed",
    [
        replace(GRPC, endpoint="127.0.0.1:50052"),
        replace(GRPC, tls=TLSConfig()),
        replace(GRPC, tls=TLSConfig(server_name="inventory.internal")),
        replace(GRPC, pool=4),
        replace(GRPC, descriptors=ProtosetSource("/tmp/inventory.pb")),
        replace(GRPC, type="http", endpoint="http://127.0.0.1:50051"),
        replace(GRPC, protocol="maestro-go"),
    ],
    ids=["endpoint", "tls", "tls-server-name", "pool", "descriptors", "type", "protocol"],
)
async def test_connection_options_separate_transports(
    transports: Transports, changed: Service
) -> None:
    """A different endpoint, TLS, pool size, descriptor source, type or gRPC protocol (chosen
    once per transport) gets its own transport."""
    assert transports.transport_for(changed) is not transports.transport_for(GRPC)
    assert len(transports) == 2


async def test_unknown_type_is_refused(transports: Transports) -> None:
    """A service type with no transport raises ValueError."""
    with pytest.raises(ValueError, match="ftp"):
        transports.transport_for(replace(HTTP, type="ftp"))  # type: ignore[arg-type]


async def test_close_closes_every_transport_and_refuses_new_ones() -> None:
    """close() closes all transports made, is idempotent, and later lookups fail UNAVAILABLE."""
    made: list[Recorded] = []

    def record(service: Service) -> Transport:
        made.append(Recorded(service))
        return made[-1]

    factory = Transports(grpc=record, http=record)
    factory.transport_for(GRPC)
    factory.transport_for(HTTP)
    factory.transport_for(replace(GRPC, pool=2))
    await factory.close()
    await factory.close()
    assert [t.closed for t in made] == [True, True, True]
    with pytest.raises(CallError) as info:
        factory.transport_for(GRPC)
    assert info.value.code is Code.UNAVAILABLE
    assert len(made) == 3


async def test_close_goes_on_past_a_failing_transport() -> None:
    """One transport failing to close does not keep the others open; the failure is reported."""
    made: list[Recorded] = []

    def record(service: Service) -> Transport:
        made.append(Recorded(service, fail_close=service.type == "grpc"))
        return made[-1]

    factory = Transports(grpc=record, http=record)
    factory.transport_for(GRPC)
    factory.transport_for(HTTP)
    with pytest.raises(ExceptionGroup) as info:
        await factory.close()
    assert [t.closed for t in made] == [True, True]
    assert "inventory" in str(info.value.exceptions[0])


async def test_context_manager_closes_real_transports() -> None:
    """Leaving ``async with`` closes the transports: the HTTP one then refuses calls."""
    async with Transports() as factory:
        http = factory.transport_for(HTTP)
    with pytest.raises(CallError) as info:
        await http.call("GET /x", None, timeout=1.0, metadata=())
    assert info.value.code is Code.UNAVAILABLE


async def test_two_workflows_on_one_endpoint_share_connections(transports: Transports) -> None:
    """Calls made through two definitions of the same HTTP endpoint reuse one pooled connection."""
    ports: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.append(peer[1] if peer else 0)
        return web.json_response({"n": len(ports)})

    app = web.Application()
    app.router.add_get("/n", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
        first = Service(name="mailer", type="http", endpoint=endpoint)
        second = Service(name="notifier", type="http", endpoint=endpoint, timeout=3.0)
        one = await transports.transport_for(first).call("GET /n", None, timeout=5, metadata=())
        two = await transports.transport_for(second).call("GET /n", None, timeout=5, metadata=())
    finally:
        await runner.cleanup()
    assert (one, two) == ({"n": 1}, {"n": 2})
    assert ports[0] == ports[1]


def test_importing_the_factory_loads_neither_grpc_nor_httpx() -> None:
    """The factory and the transports package import grpc/httpx only when a transport is built."""
    code = (
        "import sys\n"
        "from maestro_gateway.transports import Transports\n"
        "from maestro_gateway.model.types import Service\n"
        "Transports()\n"
        "print(sorted(m for m in ('grpc', 'httpx', 'aiohttp') if m in sys.modules))\n"
        "Transports().transport_for(Service(name='m', type='http', endpoint='http://127.0.0.1:1'))\n"
        "print(sorted(m for m in ('grpc', 'httpx', 'aiohttp') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == ["[]", "['aiohttp', 'httpx']"]
