"""Lean downstream services for ``make bench``, all in one process.

A ``grpc.aio`` server implements ``shop.v1.Inventory/Reserve``, ``shop.v1.Payments/Charge`` and
``shop.v1.Shipping/CreateShipment`` (with server reflection, v1 and v1alpha, so the gateway
discovers them), and an aiohttp server answers ``POST /orders/{id}/mail`` with JSON. Handlers are
trivial and record nothing: a benchmark must not grow memory as it runs (the demo services keep
a call log for tests; these do not).

``--delay-ms N`` makes the handlers wait N ms before answering requests whose ``order_id``
starts with ``slow`` (the slow service of the memory benchmark; other requests still answer at
once, so a client can warm up first); ``GET /stats`` reports how many requests are waiting right
now, so a client can tell when all of its calls have arrived; ``POST /delay`` with
``{"ms": N}`` changes the delay of the requests that arrive from then on.

When both servers listen it prints one line and then serves until SIGTERM/SIGINT::

    bench-services grpc=127.0.0.1:PORT http=http://127.0.0.1:PORT pid=PID
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sys
import time
from typing import Any

import grpc
from aiohttp import web
from grpc_reflection.v1alpha import reflection, reflection_pb2
from shop.v1 import (
    inventory_pb2,
    inventory_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    shipping_pb2,
    shipping_pb2_grpc,
)

SERVICE_NAMES = (
    "shop.v1.Inventory",
    "shop.v1.Payments",
    "shop.v1.Shipping",
)


class Gauge:
    """Counts requests in progress and applies the configured delay."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inflight = 0
        self.ids = itertools.count(1)

    async def hold(self, order_id: str) -> int:
        """Wait the configured delay (slow orders only) and return a fresh numeric id."""
        if self.delay > 0 and order_id.startswith("slow"):
            self.inflight += 1
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.inflight -= 1
        return next(self.ids)


class Inventory(inventory_pb2_grpc.InventoryServicer):  # type: ignore[misc]
    """Reserve answers at once with a reservation built from the request."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.Reservation:
        """Return a reservation for the requested line."""
        n = await self._gauge.hold(request.order_id)
        return inventory_pb2.Reservation(
            id=f"res-{n}",
            sku=request.sku,
            qty=request.qty,
            expires_at_unix_ms=int(time.time() * 1000) + 600_000,
        )


class Payments(payments_pb2_grpc.PaymentsServicer):  # type: ignore[misc]
    """Charge always captures the amount."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    async def Charge(
        self, request: payments_pb2.ChargeRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.Payment:
        """Return a captured payment for the requested amount."""
        n = await self._gauge.hold(request.order_id)
        return payments_pb2.Payment(
            id=f"pay-{n}",
            amount=request.amount,
            currency=request.currency,
            status=payments_pb2.PAYMENT_STATUS_CAPTURED,
        )


class Shipping(shipping_pb2_grpc.ShippingServicer):  # type: ignore[misc]
    """CreateShipment books a shipment at once."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    async def CreateShipment(
        self, request: shipping_pb2.CreateShipmentRequest, context: grpc.aio.ServicerContext
    ) -> shipping_pb2.Shipment:
        """Return a shipment for the reservation."""
        n = await self._gauge.hold(request.order_id)
        return shipping_pb2.Shipment(id=f"shp-{n}", tracking_number=f"TRK{n:08d}", carrier="bench")


def add_reflection(server: grpc.aio.Server, services: tuple[str, ...] = SERVICE_NAMES) -> None:
    """Serve reflection of ``services`` under v1alpha (grpcio's) and v1 (same messages on the
    wire)."""
    names = (*services, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "grpc.reflection.v1.ServerReflection",
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        servicer.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            ),
        )
    )


async def start_grpc(gauge: Gauge, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server; return it and its bound port."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    inventory_pb2_grpc.add_InventoryServicer_to_server(Inventory(gauge), server)
    payments_pb2_grpc.add_PaymentsServicer_to_server(Payments(gauge), server)
    shipping_pb2_grpc.add_ShippingServicer_to_server(Shipping(gauge), server)
    add_reflection(server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


def http_app(gauge: Gauge) -> web.Application:
    """The mailer: ``POST /orders/{id}/mail`` and ``GET /stats``."""

    async def mail(request: web.Request) -> web.Response:
        body: Any = await request.json() if request.can_read_body else {}
        n = await gauge.hold(request.match_info["order_id"])
        return web.json_response(
            {
                "message_id": f"msg-{n}",
                "order_id": request.match_info["order_id"],
                "to": body.get("to", "") if isinstance(body, dict) else "",
                "queued": True,
            }
        )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"inflight": gauge.inflight})

    async def delay(request: web.Request) -> web.Response:
        gauge.delay = float((await request.json())["ms"]) / 1000.0
        return web.json_response({"delay_ms": gauge.delay * 1000.0})

    app = web.Application()
    app.router.add_post("/orders/{order_id}/mail", mail)
    app.router.add_get("/stats", stats)
    app.router.add_post("/delay", delay)
    return app


async def serve(host: str, grpc_port: int, http_port: int, delay: float) -> None:
    """Run both servers until SIGTERM/SIGINT."""
    gauge = Gauge(delay)
    server, bound = await start_grpc(gauge, host, grpc_port)
    runner = web.AppRunner(http_app(gauge), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, http_port, backlog=4096)
    await site.start()
    http_bound = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"bench-services grpc={host}:{bound} http=http://{host}:{http_bound} pid={os.getpid()}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop(0.5)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before every answer")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.grpc_port, args.http_port, args.delay_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
