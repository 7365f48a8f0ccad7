"""Mutual TLS end to end: ``maestro serve --tls-cert --tls-key --tls-client-ca`` (DESIGN §14).

The gateway runs as a subprocess over the demo services, with a server certificate from a
private CA and that CA as the only one its clients' certificates may come from. The real grpcurl
binary and a grpcio client call it: with a client certificate of the CA they are served
(``Execute`` of the shipped checkout workflow, the health check); without one, with one from an
unrelated CA, or in plaintext, the connection is refused before any RPC reaches the gateway.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from e2e_support import Completed, order, run_program
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_e2e_grpcurl import GRPCURL, events, kind
from tls_support import PKI, KeyPair, make_pki, needs_openssl

from demo.gateway import GatewayProcess, start_gateway, write_workflows
from demo.harness import DemoServices, running_services

pytestmark = [pytest.mark.asyncio(loop_scope="module"), needs_openssl]

CALL_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A private CA, the gateway's certificate for localhost/127.0.0.1, and client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Secured:
    """The demo services and the gateway serving mutual TLS in front of them."""

    demo: DemoServices
    process: GatewayProcess

    @property
    def port(self) -> int:
        """The gateway's port."""
        return self.process.port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(pki: PKI) -> AsyncIterator[Secured]:
    """The demo services and ``maestro serve`` requiring client certificates from the CA."""
    tls = [
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca), "--journal", "none",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="maestro-mtls-") as scratch:
        async with running_services() as demo:
            workflows = write_workflows(Path(scratch), demo)
            # grpc core logs why a handshake failed at INFO: the tests read the reason there.
            running = await start_gateway(workflows, extra=tls, env={"GRPC_VERBOSITY": "INFO"})
            try:
                yield Secured(demo, running)
            finally:
                await running.stop()


async def grpcurl(
    gateway: Secured, *args: str, flags: tuple[str, ...], data: Any = None
) -> Completed:
    """Run ``grpcurl FLAGS [-d JSON] localhost:PORT ARGS…``."""
    argv = [GRPCURL, *flags]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    return await run_program([*argv, f"localhost:{gateway.port}", *args])


def _with(pki: PKI, client: KeyPair | None) -> tuple[str, ...]:
    flags: tuple[str, ...] = ("-cacert", str(pki.ca))
    if client is not None:
        flags += ("-cert", str(client.cert), "-key", str(client.key))
    return flags


async def test_grpcurl_with_a_client_certificate_executes_and_checks_health(
    pki: PKI, gateway: Secured
) -> None:
    """With a certificate of the CA, grpcurl runs checkout over the demo services and sees SERVING."""
    await gateway.demo.reset()
    flags = _with(pki, pki.client)
    done = await grpcurl(
        gateway,
        "maestro.v1.Gateway/Execute",
        flags=flags,
        data={"workflow": "checkout", "input": order(order_id="MTLS-1")},
    )
    assert done.code == 0, done.stderr
    received = events(done.stdout)
    assert kind(received[-1]) == "finished"
    result = received[-1]["finished"]["result"]
    assert result["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert result["output"]["tracking"].startswith("DP")
    calls = await gateway.demo["payments"].control.calls()
    assert [(c.method, c.outcome) for c in calls] == [("Charge", "OK")]
    health = await grpcurl(gateway, "grpc.health.v1.Health/Check", flags=flags)
    assert health.code == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("none", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("other-ca", "CERTIFICATE_VERIFY_FAILED"),
        ("plaintext", "WRONG_VERSION_NUMBER"),
    ],
)
async def test_grpcurl_without_a_trusted_client_certificate_is_refused(
    pki: PKI, gateway: Secured, client: str, reason: str
) -> None:
    """No certificate, one from another CA, or plaintext: the handshake fails, no RPC is served."""
    flags = {
        "none": _with(pki, None),
        "other-ca": _with(pki, pki.other_client),
        "plaintext": ("-plaintext",),
    }[client]
    done = await grpcurl(gateway, "grpc.health.v1.Health/Check", flags=flags)
    assert done.code != 0, done.stdout
    assert "SERVING" not in done.stdout
    assert "Failed to dial target host" in done.stderr, done.stderr
    line = await gateway.process.wait_log(reason)
    assert "Handshake failed" in line


def _credentials(pki: PKI, client: KeyPair | None) -> grpc.ChannelCredentials:
    key, cert = client.read() if client is not None else (None, None)
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(), private_key=key, certificate_chain=cert
    )


async def _check(gateway: Secured, credentials: grpc.ChannelCredentials) -> int:
    target = f"localhost:{gateway.port}"
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    status: int = answer.status
    return status


async def test_grpcio_client_with_and_without_a_certificate(pki: PKI, gateway: Secured) -> None:
    """A grpcio client is served with the CA's client certificate; without one it is UNAVAILABLE."""
    assert (
        await _check(gateway, _credentials(pki, pki.client))
        == health_pb2.HealthCheckResponse.SERVING
    )
    for client in (None, pki.other_client):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _check(gateway, _credentials(pki, client))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT
            )
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
