"""Client TLS to downstreams with a private CA: a workflow's ``tls:`` over real servers.

A grpcio ``shop.v1.Inventory`` with reflection serves TLS with a certificate of the test's CA
(requiring a client certificate of that CA in the mutual-TLS cases), and an aiohttp server does
the same over HTTPS. The real engine and transports run workflows whose service ``tls:`` names
the CA file (and the client certificate and key): the execution succeeds. With the wrong CA, or
without the client certificate the server requires, the step fails with UNAVAILABLE naming the
service and its endpoint.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from grpc_testkit import serve_inventory
from shop.v1 import inventory_pb2, inventory_pb2_grpc
from tls_support import PKI, make_pki, needs_openssl

from maestro_gateway.codes import Code
from maestro_gateway.engine import Engine, ExecutionStatus
from maestro_gateway.model.loader import load_string
from maestro_gateway.transports import Transports

pytestmark = needs_openssl

WORKFLOW = """
name: tls
services:
  inventory:
    type: {type}
    endpoint: "{endpoint}"
    timeout: 5s
    retry: {{attempts: 1}}
    tls: {tls}
steps:
  - id: reserve
    service: inventory
    method: {method}
    input: {{order_id: o-1, sku: sku-1, qty: 2}}
"""


class Inventory(inventory_pb2_grpc.InventoryServicer):  # type: ignore[misc]
    """Answers Reserve with the client certificate's common name as the reservation id."""

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.Reservation:
        names = context.auth_context().get("x509_common_name", [b"anonymous"])
        return inventory_pb2.Reservation(id=names[0].decode(), sku=request.sku, qty=request.qty)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A private CA, a server certificate for localhost/127.0.0.1 and client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


async def _grpc_server(pki: PKI, *, mutual: bool) -> tuple[grpc.aio.Server, int]:
    credentials = grpc.ssl_server_credentials(
        [pki.server.read()],
        root_certificates=pki.ca.read_bytes() if mutual else None,
        require_client_auth=mutual,
    )
    return await serve_inventory(Inventory(), credentials)


@pytest.fixture
async def tls_inventory(pki: PKI) -> AsyncIterator[str]:
    """A TLS Inventory server (no client certificate asked for); its ``host:port``."""
    server, port = await _grpc_server(pki, mutual=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def mtls_inventory(pki: PKI) -> AsyncIterator[str]:
    """An Inventory server requiring a client certificate of the CA; its ``host:port``."""
    server, port = await _grpc_server(pki, mutual=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def mtls_http(pki: PKI) -> AsyncIterator[str]:
    """An HTTPS server requiring a client certificate of the CA; its base URL."""

    async def reserve(request: web.Request) -> web.Response:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in cert["subject"]) if cert else {}
        body = await request.json()
        return web.json_response({"id": subject.get("commonName"), "sku": body["sku"]})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server.cert, pki.server.key)
    context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/reserve", reserve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _tls(pki: PKI, *, ca: str = "ca", client: bool = True) -> str:
    fields = [f"ca: {pki.ca if ca == 'ca' else pki.other_ca}", "server_name: localhost"]
    if client:
        fields += [f"cert: {pki.client.cert}", f"key: {pki.client.key}"]
    return "{" + ", ".join(fields) + "}"


async def _run(endpoint: str, tls: str, *, http: bool = False) -> Any:
    text = WORKFLOW.format(
        type="http" if http else "grpc",
        endpoint=endpoint,
        tls=tls,
        method="POST /reserve" if http else "Reserve",
    )
    async with Transports() as transports:
        return await Engine(transports).execute(load_string(text), {})


async def test_grpc_downstream_with_a_private_ca(pki: PKI, tls_inventory: str) -> None:
    """``tls: {ca, server_name}`` trusts the private CA: the call succeeds, no client cert sent."""
    result = await _run(tls_inventory, f"{{ca: {pki.ca}, server_name: localhost}}")
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert (result.output["reserve"]["id"], result.output["reserve"]["qty"]) == ("anonymous", 2)


async def test_grpc_downstream_with_mutual_tls(pki: PKI, mtls_inventory: str) -> None:
    """With ``cert``/``key`` the gateway presents its client certificate (the server sees CN)."""
    result = await _run(mtls_inventory, _tls(pki))
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.output["reserve"]["id"] == "client"


@pytest.mark.parametrize(
    ("ca", "client"), [("other", True), ("ca", False)], ids=["wrong-ca", "no-client-cert"]
)
async def test_grpc_downstream_tls_failure_is_unavailable_naming_the_service(
    pki: PKI, mtls_inventory: str, ca: str, client: bool
) -> None:
    """The wrong CA, or no client certificate for a server requiring one: UNAVAILABLE, named."""
    result = await _run(mtls_inventory, _tls(pki, ca=ca, client=client))
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.step_id == "reserve"
    assert result.error.code is Code.UNAVAILABLE, result.error.message
    assert "inventory" in result.error.message, result.error.message
    assert mtls_inventory in result.error.message, result.error.message


async def test_http_downstream_with_mutual_tls(pki: PKI, mtls_http: str) -> None:
    """An HTTPS step with the private CA and a client certificate succeeds as that client."""
    result = await _run(mtls_http, _tls(pki), http=True)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.output["reserve"] == {"id": "client", "sku": "sku-1"}


@pytest.mark.parametrize(
    ("ca", "client"), [("other", True), ("ca", False)], ids=["wrong-ca", "no-client-cert"]
)
async def test_http_downstream_tls_failure_is_unavailable_naming_the_service(
    pki: PKI, mtls_http: str, ca: str, client: bool
) -> None:
    """Over HTTPS the same failures are UNAVAILABLE naming the service."""
    result = await _run(mtls_http, _tls(pki, ca=ca, client=client), http=True)
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.code is Code.UNAVAILABLE, result.error.message
    assert "inventory" in result.error.message, result.error.message
