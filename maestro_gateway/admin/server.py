"""The admin HTTP port (DESIGN §14): ``/metrics``, ``/healthz``, ``/readyz`` and the live view.

Served by aiohttp's web server in the gateway's own event loop, on ``--admin-host`` (default
127.0.0.1) and ``--admin-port``; off unless the port is given. Every other path is 404, every
other method on these paths 405, and nothing is logged per request (a scraper every few seconds
would drown the log). A request whose client disconnects is cancelled at once (aiohttp's
``handler_cancellation``), so an abandoned event stream leaves nothing waiting.

- ``/metrics``: the gateway's registry in the Prometheus text format (OpenMetrics when the
  scraper asks for it, gzip when it accepts it).
- ``/healthz``: 200 while the process serves HTTP at all (a liveness probe).
- ``/readyz``: 200 once recovery is done and the gRPC port serves, while the journal can be
  written and the gateway is not draining; 503 otherwise. The body has one ``check: state``
  line per condition, so a person can see which one fails.
- ``/`` with ``/static/…`` and ``/api/…``: the live view (:mod:`maestro_gateway.admin.view`).

Start it before the gateway (``/healthz`` answers during a long recovery, ``/readyz`` says
it is not ready yet) and close it after the gateway's shutdown.
"""

from __future__ import annotations

import logging
from types import TracebackType

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from maestro_gateway.admin.view import MAX_STREAMS, LiveView
from maestro_gateway.server.app import GatewayServer
from maestro_gateway.server.logfmt import logfmt
from maestro_gateway.server.metrics import GatewayMetrics

log = logging.getLogger("maestro_gateway.admin")

PATHS = ("/metrics", "/healthz", "/readyz")
"""The probes the admin port serves (besides the live view at ``/``)."""
SHUTDOWN_TIMEOUT = 2.0
"""Seconds ``close`` gives requests in progress."""


def readiness(gateway: GatewayServer) -> list[tuple[str, bool, str]]:
    """The conditions of ``/readyz``: (check, passes, state) each."""
    journal = gateway.journal
    draining = gateway.service.draining
    return [
        ("recovery", gateway.started, "done" if gateway.started else "in progress"),
        ("journal", journal.writable, "writable" if journal.writable else "cannot be written"),
        ("draining", not draining, "yes" if draining else "no"),
    ]


class AdminServer:
    """The admin HTTP server of one gateway.

    Args:
        gateway: the gateway whose state ``/readyz`` reports (it need not be started yet).
        metrics: what ``/metrics`` serves (the gateway's :class:`GatewayMetrics`).
        host: the address to bind (default loopback only).
        port: the port to bind; 0 picks a free one (see :attr:`port` after ``start``).
        view_payloads: whether the live view shows inputs and outputs (``--view-payloads``).
        max_streams: the live view's event streams allowed open at once.
    """

    def __init__(
        self,
        gateway: GatewayServer,
        metrics: GatewayMetrics,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        view_payloads: bool = True,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.host = host
        self.port = port
        self.view = LiveView(gateway, view_payloads=view_payloads, max_streams=max_streams)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` as bound (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def application(self) -> web.Application:
        """The aiohttp application: the routes of :data:`PATHS` and the live view, nothing else."""
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self.metrics.registry))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self.view.add_routes(app)
        return app

    async def start(self) -> int:
        """Bind and serve; return the bound port.

        Raises:
            OSError: the address cannot be bound (in use, not local).
        """
        runner = web.AppRunner(
            self.application(),
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handler_cancellation=True,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info(logfmt("admin_listening", url=self.url))
        return self.port

    async def close(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = readiness(self.gateway)
        ready = all(passes for _, passes, _ in checks)
        body = "".join(f"{name}: {state}\n" for name, _, state in checks)
        return web.Response(text=body, status=200 if ready else 503)
