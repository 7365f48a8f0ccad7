"""HttpTransport over HTTPS: a private CA, the SNI/verification name, and mutual TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service, TLSConfig
from maestro_gateway.transports.http import HttpTransport

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(directory: Path, name: str, extensions: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA, a server certificate for maestro.test and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca", cwd=directory,
    )  # fmt: skip
    _issue(directory, "server", "subjectAltName=DNS:maestro.test\n")
    _issue(directory, "client", "extendedKeyUsage=clientAuth\n")
    return directory


@pytest.fixture
async def https_endpoint(pki: Path) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1:0 that requires a client certificate from the CA."""

    async def whoami(request: web.Request) -> web.Response:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in cert["subject"]) if cert else {}
        return web.json_response({"client": subject.get("commonName")})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
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


def _tls(pki: Path, *, server_name: str | None = "maestro.test", client: bool = True) -> TLSConfig:
    return TLSConfig(
        ca=str(pki / "ca.pem"),
        cert=str(pki / "client.pem") if client else None,
        key=str(pki / "client.key") if client else None,
        server_name=server_name,
    )


async def test_mutual_tls_with_private_ca_and_server_name(pki: Path, https_endpoint: str) -> None:
    """With the CA, the server name and a client certificate, the call succeeds as that client."""
    service = Service(name="s", type="http", endpoint=https_endpoint, tls=_tls(pki))
    async with HttpTransport(service) as t:
        assert await t.call("GET /whoami", None, timeout=5.0, metadata=()) == {"client": "client"}


@pytest.mark.parametrize(
    "tls",
    ["no-server-name", "no-client-cert", "system-roots"],
)
async def test_tls_failures_are_unavailable(pki: Path, https_endpoint: str, tls: str) -> None:
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
    assert "connection failed" in info.value.message
