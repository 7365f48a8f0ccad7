"""HttpTransport over HTTPS: a private CA, the SNI/verification name, and mutual TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from tls_support import PKI, make_pki, needs_openssl

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service, TLSConfig
from maestro_gateway.transports.http import HttpTransport

pytestmark = needs_openssl


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A throw-away CA, a server certificate for maestro.test and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"), server_names=("maestro.test",))


@pytest.fixture
async def https_endpoint(pki: PKI) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1:0 that requires a client certificate from the CA."""

    async def whoami(request: web.Request) -> web.Response:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in cert["subject"]) if cert else {}
        return web.json_response({"client": subject.get("commonName")})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server.cert, pki.server.key)
    context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _tls(pki: PKI, *, server_name: str | None = "maestro.test", client: bool = True) -> TLSConfig:
    return TLSConfig(
        ca=str(pki.ca),
        cert=str(pki.client.cert) if client else None,
        key=str(pki.client.key) if client else None,
        server_name=server_name,
    )


async def test_mutual_tls_with_private_ca_and_server_name(pki: PKI, https_endpoint: str) -> None:
    """With the CA, the server name and a client certificate, the call succeeds as that client."""
    service = Service(name="s", type="http", endpoint=https_endpoint, tls=_tls(pki))
    async with HttpTransport(service) as t:
        assert await t.call("GET /whoami", None, timeout=5.0, metadata=()) == {"client": "client"}


@pytest.mark.parametrize(
    "tls",
    ["no-server-name", "no-client-cert", "system-roots"],
)
async def test_tls_failures_are_unavailable(pki: PKI, https_endpoint: str, tls: str) -> None:
    """A certificate that does not verify, or a missing client certificate, fails with UNAVAILABLE."""
    config = {
        "no-server-name": _tls(pki, server_name=None),
        "no-client-cert": _tls(pki, client=False),
        "system-roots": None,
    }[tls]
    service = Service(name="s", type="http", endpoint=https_endpoint, tls=config)
    async with HttpTransport(service) as t:
        with pytest.raises(CallError) as info:
            await t.call("GET /whoami", None, timeout=5.0, metadata=())
    assert info.value.code is Code.UNAVAILABLE, info.value.message
    assert "connection to service 's' failed" in info.value.message
