"""Server assembly: the Gateway service, reflection, health, TLS and the shutdown sequence.

:class:`GatewayServer` owns one ``grpc.aio`` server. Its lifecycle is ``start()`` then
``shutdown(grace)``; ``reload()`` swaps the served workflows. Shutdown order (DESIGN §5):
health goes NOT_SERVING at once, new executions are refused with UNAVAILABLE, running ones get
``grace`` seconds, what is left is cancelled (the engine compensates it), then the server stops
and the transports close.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2  # noqa: F401  (registers ErrorInfo for reflection)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from maestro.v1 import gateway_pb2, gateway_pb2_grpc

from maestro_gateway.errors import Diagnostic
from maestro_gateway.server.logfmt import logfmt
from maestro_gateway.server.reflection import enable_reflection
from maestro_gateway.server.registry import WorkflowRegistry, validate_source
from maestro_gateway.server.service import Executor, GatewayService

log = logging.getLogger("maestro_gateway.server")

SERVICE_NAME: str = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
STOP_GRACE = 2.0
"""Seconds the server gives RPCs still open once executions are done (health Watch streams)."""
CANCEL_MARGIN = 5.0
"""Seconds added to the longest compensation budget when waiting for cancelled executions."""

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Without this a second gateway on the same port starts silently and steals connections.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Accept the keepalive pings well-behaved clients send rather than answering "too many pings".
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Server TLS: PEM certificate chain and key; a client CA turns on mutual TLS."""

    cert: str
    key: str
    client_ca: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Read the files and return the server credentials (OSError when one is unreadable)."""
        key = Path(self.key).read_bytes()
        cert = Path(self.cert).read_bytes()
        ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


class GatewayServer:
    """The gateway process's gRPC server.

    Args:
        service: the Gateway servicer (it owns the registry and the executor).
        host: the address to bind; the default listens on loopback only.
        port: the port to bind; 0 picks a free one (see :attr:`port` after ``start``).
        tls: server TLS, or None for plaintext.
        on_close: awaited last during shutdown (closes the transports).
    """

    def __init__(
        self,
        service: GatewayService,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSFiles | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._tls = tls
        self._on_close = on_close
        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        self._stopped = False

    @property
    def registry(self) -> WorkflowRegistry:
        """The served workflows."""
        return self.service.registry

    @property
    def address(self) -> str:
        """``host:port`` as bound (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> int:
        """Bind, register every service and start serving; return the bound port.

        Raises:
            OSError: the TLS files cannot be read.
            RuntimeError: the address cannot be bound.
        """
        server = self._server
        self._prepare()
        gateway_pb2_grpc.add_GatewayServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection([SERVICE_NAME, HEALTH_SERVICE_NAME], server)
        target = self.address
        if self._tls is None:
            port: int = server.add_insecure_port(target)
        else:
            port = server.add_secure_port(target, self._tls.credentials())
        if port == 0:
            raise RuntimeError(f"cannot listen on {target}")
        self.port = port
        await server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def reload(self) -> list[Diagnostic]:
        """Reload the workflow directory all or nothing; log and return the problems found."""
        problems = self.registry.reload()
        for problem in problems:
            log.error(logfmt("workflow_invalid", diagnostic=str(problem)))
        if problems:
            log.error(logfmt("reload_rejected", problems=len(problems), kept=len(self.registry)))
        else:
            self._prepare()
            log.info(logfmt("reloaded", workflows=len(self.registry)))
        return problems

    def _prepare(self) -> None:
        for workflow in self.registry.all():
            self.service.executor.prepare(workflow)

    async def shutdown(self, grace: float) -> None:
        """Drain and stop: NOT_SERVING, refuse new work, wait ``grace`` s, cancel the rest."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        log.info(logfmt("draining", executions=self.service.in_flight, grace_s=grace))
        budget = self.registry.max_compensation_timeout() + CANCEL_MARGIN
        await self.service.drain(grace, budget)
        await self._server.stop(STOP_GRACE)
        if self._on_close is not None:
            await self._on_close()
        log.info(logfmt("stopped"))


def _check_input(workflow: Any, value: Any) -> None:
    from maestro_gateway.model.schema import check_input

    check_input(workflow, value)


def create_gateway(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_concurrent: int = 1000,
    tls: TLSFiles | None = None,
    executor: Executor | None = None,
) -> tuple[GatewayServer, Sequence[Diagnostic]]:
    """Build a gateway serving the workflows of ``directory`` with the real engine.

    Args:
        directory: the workflow directory (``*.yaml``/``*.yml``, not recursive).
        host: the address to bind.
        port: the port to bind (0: any free port).
        max_concurrent: executions allowed in flight at once.
        tls: server TLS files, or None.
        executor: the engine to use (default: ``Engine(Transports())``, closed on shutdown).

    Returns:
        The server (not started yet) and the problems of the files that were not loaded.
    """
    registry = WorkflowRegistry(directory)
    problems = registry.load()
    on_close: Callable[[], Awaitable[None]] | None = None
    if executor is None:
        from maestro_gateway.engine import Engine
        from maestro_gateway.transports.factory import Transports

        transports = Transports()
        executor = Engine(transports)
        on_close = transports.close
    service = GatewayService(
        registry,
        executor,
        check_input=_check_input,
        validate_source=validate_source,
        max_concurrent=max_concurrent,
    )
    server = GatewayServer(service, host=host, port=port, tls=tls, on_close=on_close)
    return server, problems
