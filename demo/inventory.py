"""Demo inventory service: ``shop.v1.Inventory`` on grpcio (``grpc.aio``).

Run it with ``python -m demo.inventory [--host H] [--port N]`` (default 127.0.0.1:50051). It
serves Inventory, the ``shop.control.v1.Control`` plane, reflection (v1 and v1alpha) and health.

Behaviour: a small in-memory catalogue (:data:`INITIAL_STOCK`). ``Reserve`` takes stock and
returns a reservation ``res-<n>`` valid for 15 minutes; ``Release`` gives it back (``released``
is false when it was already released, so the compensation is idempotent); an unknown SKU or
reservation is NOT_FOUND, a quantity <= 0 INVALID_ARGUMENT, more than is available
FAILED_PRECONDITION. ``WatchStock`` streams one level per SKU asked for (all when none is);
``ReserveMany`` reserves every line or none. ``Control.Reset`` also restores the catalogue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from shop.v1 import inventory_pb2, inventory_pb2_grpc

from demo import grpcio_support
from demo.control import ControlPlane, DemoError, now_ms
from demo.process import announce_ready, parse_args, wait_for_stop_signal

SERVICE = "shop.v1.Inventory"
DEFAULT_PORT = 50051
RESERVATION_TTL_MS = 15 * 60 * 1000
INITIAL_STOCK: dict[str, int] = {"sku-1": 100, "sku-2": 50, "sku-3": 5, "sku-empty": 0}

log = logging.getLogger("demo.inventory")


@dataclass(slots=True)
class _Held:
    sku: str
    qty: int
    released: bool = False


class Stock:
    """The catalogue and its reservations; pure state, raising :class:`DemoError`."""

    def __init__(self) -> None:
        """Start with :data:`INITIAL_STOCK` and no reservations."""
        self._ids = itertools.count(1)
        self.available: dict[str, int] = {}
        self._held: dict[str, _Held] = {}
        self.restore()

    def restore(self) -> None:
        """Put the catalogue back to :data:`INITIAL_STOCK`; forget every reservation."""
        self.available = dict(INITIAL_STOCK)
        self._held.clear()

    def _check(self, request: inventory_pb2.ReserveRequest) -> None:
        if request.qty <= 0:
            raise DemoError("INVALID_ARGUMENT", f"qty must be > 0, got {request.qty}")
        if request.sku not in self.available:
            raise DemoError("NOT_FOUND", f"unknown sku {request.sku!r}")

    def _take(self, request: inventory_pb2.ReserveRequest) -> inventory_pb2.Reservation:
        self.available[request.sku] -= request.qty
        reservation_id = f"res-{next(self._ids)}"
        self._held[reservation_id] = _Held(request.sku, request.qty)
        return inventory_pb2.Reservation(
            id=reservation_id,
            sku=request.sku,
            qty=request.qty,
            expires_at_unix_ms=now_ms() + RESERVATION_TTL_MS,
        )

    def reserve(self, request: inventory_pb2.ReserveRequest) -> inventory_pb2.Reservation:
        """Reserve ``qty`` of ``sku``."""
        return self.reserve_many([request])[0]

    def reserve_many(
        self, requests: list[inventory_pb2.ReserveRequest]
    ) -> list[inventory_pb2.Reservation]:
        """Reserve every line, or none when one of them cannot be served."""
        wanted: dict[str, int] = {}
        for request in requests:
            self._check(request)
            wanted[request.sku] = wanted.get(request.sku, 0) + request.qty
        for sku, qty in wanted.items():
            if qty > self.available[sku]:
                raise DemoError(
                    "FAILED_PRECONDITION",
                    f"insufficient stock for {sku!r}: {qty} wanted, {self.available[sku]} available",
                )
        return [self._take(request) for request in requests]

    def release(self, reservation_id: str) -> bool:
        """Give a reservation's stock back; False when it was already released."""
        held = self._held.get(reservation_id)
        if held is None:
            raise DemoError("NOT_FOUND", f"unknown reservation {reservation_id!r}")
        if held.released:
            return False
        held.released = True
        self.available[held.sku] += held.qty
        return True

    def levels(self, skus: list[str]) -> list[inventory_pb2.StockLevel]:
        """Current levels of ``skus`` (every SKU, sorted, when empty)."""
        for sku in skus:
            if sku not in self.available:
                raise DemoError("NOT_FOUND", f"unknown sku {sku!r}")
        return [
            inventory_pb2.StockLevel(sku=sku, available=self.available[sku])
            for sku in (skus or sorted(self.available))
        ]


class InventoryServicer(inventory_pb2_grpc.InventoryServicer):  # type: ignore[misc]
    """``shop.v1.Inventory`` over a :class:`Stock`, every call through the control plane."""

    def __init__(self, stock: Stock, control: ControlPlane) -> None:
        """Serve ``stock``, recording calls and applying faults with ``control``."""
        self._stock = stock
        self._control = control

    async def _run(
        self,
        method: str,
        request_json: str,
        context: grpc.aio.ServicerContext[Any, Any],
        call: Callable[[], Any],
    ) -> Any:
        async def business() -> Any:
            return call()

        return await grpcio_support.run_call(self._control, method, request_json, context, business)

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inventory_pb2.Reservation:
        """Reserve stock for an order."""
        json_text = grpcio_support.message_json(request)
        return await self._run("Reserve", json_text, context, lambda: self._stock.reserve(request))

    async def Release(
        self, request: inventory_pb2.ReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inventory_pb2.ReleaseResponse:
        """Release a reservation."""
        json_text = grpcio_support.message_json(request)
        return await self._run(
            "Release",
            json_text,
            context,
            lambda: inventory_pb2.ReleaseResponse(
                released=self._stock.release(request.reservation_id)
            ),
        )

    async def WatchStock(
        self, request: inventory_pb2.WatchStockRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[inventory_pb2.StockLevel]:
        """Stream the level of each SKU asked for."""
        json_text = grpcio_support.message_json(request)
        levels = await self._run(
            "WatchStock", json_text, context, lambda: self._stock.levels(list(request.skus))
        )
        for level in levels:
            yield level

    async def ReserveMany(
        self,
        request_iterator: AsyncIterator[inventory_pb2.ReserveRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> inventory_pb2.ReserveManyResponse:
        """Reserve several lines at once, all or none."""
        requests = [request async for request in request_iterator]
        json_text = grpcio_support.messages_json(requests)
        return await self._run(
            "ReserveMany",
            json_text,
            context,
            lambda: inventory_pb2.ReserveManyResponse(
                reservations=self._stock.reserve_many(requests)
            ),
        )


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, announcing the bound port on stdout."""
    stock = Stock()
    control = ControlPlane()

    def add_business(server: grpc.aio.Server) -> None:
        inventory_pb2_grpc.add_InventoryServicer_to_server(
            InventoryServicer(stock, control), server
        )

    server, bound, health_servicer = grpcio_support.build_server(
        host, port, SERVICE, add_business, control, on_reset=stock.restore
    )
    await server.start()
    await grpcio_support.mark_serving(health_servicer, SERVICE)
    announce_ready("inventory", host, bound)
    try:
        await wait_for_stop_signal()
    finally:
        await health_servicer.enter_graceful_shutdown()
        await server.stop(1.0)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m demo.inventory``."""
    args = parse_args("inventory", DEFAULT_PORT, argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
