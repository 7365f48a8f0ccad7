"""Server assembly: the Gateway service, reflection, health, TLS and the shutdown sequence.

:class:`GatewayServer` owns one ``grpc.aio`` server. Its lifecycle is ``start()`` then
``shutdown(grace)``; ``reload()`` swaps the served workflows.

Start-up order (DESIGN §10): health NOT_SERVING, every unfinished execution of the journal
resumed (on a journal replicas share, those no live lease holds; then the leases are kept:
:mod:`.runs`), the port bound, then SERVING. While serving, health follows the journal (NOT_SERVING
while it cannot be written) and finished executions past ``retention`` are deleted (at start and
every minute). Shutdown order (DESIGN §5, §10): health goes NOT_SERVING at once, new executions
are refused with UNAVAILABLE, running ones get ``grace`` seconds, what is left is handed over to
the next start (durable journal) or cancelled and compensated (``--journal none``), then the
server stops, the transports close and the journal is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2  # noqa: F401  (registers ErrorInfo for reflection)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from maestro.v1 import gateway_pb2

from maestro_gateway.errors import Diagnostic
from maestro_gateway.journal.base import Journal
from maestro_gateway.server.limits import RequestLimits, add_gateway_servicer
from maestro_gateway.server.logfmt import logfmt
from maestro_gateway.server.reflection import enable_reflection
from maestro_gateway.server.registry import WorkflowRegistry, validate_source
from maestro_gateway.server.runs import DEFAULT_LEASE, Runs
from maestro_gateway.server.service import GatewayService
from maestro_gateway.transports.base import TransportFactory

if TYPE_CHECKING:
    from maestro_gateway.server.metrics import GatewayMetrics
    from maestro_gateway.server.otel import Tracing

log = logging.getLogger("maestro_gateway.server")

SERVICE_NAME: str = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
STOP_GRACE = 2.0
"""Seconds the server gives RPCs still open once executions are done (health Watch streams)."""
CANCEL_MARGIN = 5.0
"""Seconds added to the longest compensation budget when waiting for cancelled executions."""
DEFAULT_RETENTION = 168 * 3600.0
"""Seconds finished executions are kept (``--retention``, DESIGN §10)."""
RETENTION_INTERVAL = 60.0
"""Seconds between two deletions of expired executions."""
HEALTH_INTERVAL = 0.5
"""Seconds between two looks at whether the journal can be written."""
KEEPALIVE_TIME_MS = 60_000
"""The server pings every connection after this long without a frame from the client, idle
ones included, to find peers that vanished (a dead network path leaves no FIN)."""
KEEPALIVE_TIMEOUT_MS = 20_000
"""A ping unanswered this long closes the connection; its calls end (executions are cancelled
and compensated, as for a caller cancel). A dead peer is found within about 80 s. grpc core
waits for a ping's ack ``grpc.http2.ping_timeout_ms`` (default 60 s) whatever
``grpc.keepalive_timeout_ms`` says (grpcio 1.85, measured), so both are set to it."""
MIN_CLIENT_PING_INTERVAL_MS = 10_000
"""Client pings closer together than this, with no data in between, are each a strike (the
gateway's own downstream channels ping every 30 s, grpc clients' default is never)."""
MAX_PING_STRIKES = 2
"""Strikes after which the server closes the connection with GOAWAY ``ENHANCE_YOUR_CALM``
``too_many_pings`` (grpc's default, made explicit); the client reconnects and, in grpc core
and grpc-go, doubles its ping interval."""

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Without this a second gateway on the same port starts silently and steals connections.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Accept the keepalive pings well-behaved clients send rather than answering "too many pings".
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # grpc.http2.max_pings_without_data keeps grpc's default: answered pings let the server go
    # on pinging an idle connection (measured), so a peer that vanishes later is still found.
    # No grpc.max_connection_age_ms: it would end long Execute and Watch streams (after its
    # grace); no grpc.max_connection_idle_ms: an idle connection costs little once keepalive
    # finds the dead ones, and clients would reconnect for nothing.
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
        on_close: awaited during shutdown, before the journal closes (closes the transports).
        retention: seconds finished executions are kept in the journal.
        metrics: the metrics to feed (the admin port's ``/metrics``), or None for none.
        tracing: the executions' spans (``maestro_gateway.server.otel``), or None; shut down
            (what is queued exported) last in :meth:`shutdown`.
    """

    def __init__(
        self,
        service: GatewayService,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSFiles | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        retention: float = DEFAULT_RETENTION,
        metrics: GatewayMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.service = service
        self.tracing = tracing
        self.host = host
        self.port = port
        self.retention = retention
        self._tls = tls
        self._on_close = on_close
        options = (*SERVER_OPTIONS, *service.limits.server_options())
        self.metrics = metrics
        interceptors = None
        if metrics is not None:
            metrics.attach(service)
            interceptors = metrics.interceptors()
        self._server = grpc.aio.server(options=options, interceptors=interceptors)
        self.health = health.aio.HealthServicer()
        self._stopped = False
        self._chores: list[asyncio.Task[None]] = []
        self.recovered = 0
        """How many unfinished executions the start resumed."""
        self.started = False
        """True once recovery is done and the port serves (``/readyz``)."""

    @property
    def journal(self) -> Journal:
        """The journal the gateway records executions in."""
        return self.service.journal

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
        # The overall status starts SERVING in grpcio: not before recovery.
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._delete_expired()
        self._prepare()
        self.recovered = await self.service.runs.recover()
        self.service.runs.keep_leases()  # replicas: renew, claim expired leases, take cancels
        await self.service.signals.redispatch()
        add_gateway_servicer(self.service, server, self.service.limits)
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
        await self._set_health(serving=True)
        self.started = True
        loop = asyncio.get_running_loop()
        self._chores = [
            loop.create_task(self._follow_journal()),
            loop.create_task(self._retain()),
        ]
        return port

    async def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def _follow_journal(self) -> None:
        """Health NOT_SERVING while the journal cannot be written, SERVING when it can again."""
        journal = self.journal
        writable = True
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            if journal.writable is not writable:
                writable = journal.writable
                if writable:
                    log.info(logfmt("journal_writable", journal=journal.description))
                else:
                    log.error(logfmt("journal_unwritable", journal=journal.description))
                await self._set_health(serving=writable)

    async def _retain(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_INTERVAL)
            await self._delete_expired()

    async def _delete_expired(self) -> None:
        try:
            deleted = await self.journal.delete_finished(time.time() - self.retention)
        except Exception as exc:  # the journal logs the details; try again next time
            log.warning(logfmt("retention_failed", error=type(exc).__name__))
            return
        if deleted:
            log.info(logfmt("executions_deleted", count=deleted, retention_s=self.retention))

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
            self.service.engine.prepare(workflow)

    async def shutdown(self, grace: float) -> None:
        """Drain and stop: NOT_SERVING, refuse new work, wait ``grace`` s, cancel the rest."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        log.info(logfmt("draining", executions=self.service.in_flight, grace_s=grace))
        budget = self.registry.max_compensation_timeout() + CANCEL_MARGIN
        await self.service.drain(grace, budget)
        for chore in self._chores:
            chore.cancel()
        for chore in self._chores:
            with contextlib.suppress(asyncio.CancelledError):
                await chore
        await self._server.stop(STOP_GRACE)
        if self._on_close is not None:
            await self._on_close()
        await self.journal.close()
        if self.tracing is not None:
            # Exporting what is queued waits on the exporter (bounded by its timeout): off the loop.
            await asyncio.to_thread(self.tracing.shutdown)
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
    transports: TransportFactory | None = None,
    journal: Journal | None = None,
    retention: float = DEFAULT_RETENTION,
    lease: float = DEFAULT_LEASE,
    engine_options: dict[str, Any] | None = None,
    limits: RequestLimits | None = None,
    metrics: GatewayMetrics | None = None,
    tracing: Tracing | None = None,
) -> tuple[GatewayServer, Sequence[Diagnostic]]:
    """Build a gateway serving the workflows of ``directory`` with the real engine.

    Args:
        directory: the workflow directory (``*.yaml``/``*.yml``, not recursive).
        host: the address to bind.
        port: the port to bind (0: any free port).
        max_concurrent: executions allowed in flight at once.
        tls: server TLS files, or None.
        transports: the transports to call services with (default: the real ones, closed on
            shutdown).
        journal: an opened journal, closed on shutdown (default: a new in-memory one).
        retention: seconds finished executions are kept.
        lease: seconds an execution's lease lasts on a journal replicas share (DESIGN §11).
        engine_options: more keyword arguments of ``Engine`` (a clock, a random generator).
        limits: bounds on requests (default ``RequestLimits()``); YAML bounds are process-wide
            (``maestro_gateway.model.yamlnodes.set_default_limits``).
        metrics: the metrics to feed (``maestro_gateway.server.metrics``), or None.
        tracing: makes the executions' spans (``maestro_gateway.server.otel``), or None; shut
            down with the server.

    Returns:
        The server (not started yet) and the problems of the files that were not loaded.
    """
    from maestro_gateway.engine import Engine

    registry = WorkflowRegistry(directory)
    problems = registry.load()
    on_close: Callable[[], Awaitable[None]] | None = None
    if transports is None:
        from maestro_gateway.transports.factory import Transports

        real = Transports()
        transports = real
        on_close = real.close
    if journal is None:
        from maestro_gateway.journal.memory import MemoryJournal

        journal = MemoryJournal()
    engine = Engine(transports, journal=journal, **(engine_options or {}))
    service = GatewayService(
        registry,
        Runs(engine, journal, lease=lease),
        check_input=_check_input,
        validate_source=lambda source: validate_source(source, registry.names()),
        max_concurrent=max_concurrent,
        limits=limits,
    )
    engine.signals = service.signals  # wait and emit steps (DESIGN §13)
    service.runs.tracing = tracing
    server = GatewayServer(
        service,
        host=host,
        port=port,
        tls=tls,
        on_close=on_close,
        retention=retention,
        metrics=metrics,
        tracing=tracing,
    )
    return server, problems
