"""The durable peer of ``make bench``: the same glue as ``bench/glue.py``, as a DBOS workflow.

DBOS (PyPI ``dbos``, its system database on SQLite in a temporary directory) makes each call a
step, checkpointed before the next one starts, and the workflow resumable after a crash — the
guarantee the gateway's journal gives. It serves ``maestro.v1.Gateway/Run`` for ``bench_grpc``
only (Inventory.Reserve → (Payments.Charge ‖ Shipping.CreateShipment, through
``asyncio.gather``) → Inventory.Reserve), so the load client drives it as it drives the glue and
the gateway (DESIGN §8 compares the gateway's ``Run`` with DBOS's throughput at concurrency 64
and p50 at 1).

Prints ``bench-dbos listening on 127.0.0.1:PORT pid=PID`` when ready; serves until
SIGTERM/SIGINT. Not part of the gateway's dependencies: ``make bench`` installs the ``bench``
extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import grpc
from dbos import DBOS, DBOSConfig
from google.protobuf import json_format, struct_pb2
from maestro.v1 import gateway_pb2, gateway_pb2_grpc
from shop.v1 import (
    inventory_pb2,
    inventory_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    shipping_pb2,
    shipping_pb2_grpc,
)

TIMEOUT = 5.0
_stubs: dict[str, Any] = {}
"""The downstream stubs, made on the serving loop (DBOS runs async workflows on the caller's)."""


@DBOS.step()
async def reserve(order_id: str, sku: str, qty: int) -> dict[str, Any]:
    """Inventory.Reserve."""
    request = inventory_pb2.ReserveRequest(order_id=order_id, sku=sku, qty=qty)
    answer = await _stubs["inventory"].Reserve(request, timeout=TIMEOUT)
    return {"id": answer.id, "sku": answer.sku, "qty": answer.qty}


@DBOS.step()
async def charge(order_id: str, amount: int) -> dict[str, Any]:
    """Payments.Charge."""
    request = payments_pb2.ChargeRequest(order_id=order_id, amount=amount, currency="EUR")
    answer = await _stubs["payments"].Charge(request, timeout=TIMEOUT)
    return {"id": answer.id, "amount": answer.amount}


@DBOS.step()
async def ship(order_id: str, reservation_id: str, address: str) -> dict[str, Any]:
    """Shipping.CreateShipment."""
    request = shipping_pb2.CreateShipmentRequest(
        order_id=order_id, reservation_id=reservation_id, address=address
    )
    answer = await _stubs["shipping"].CreateShipment(request, timeout=TIMEOUT)
    return {"id": answer.id, "tracking_number": answer.tracking_number}


@DBOS.workflow()
async def checkout(order: dict[str, Any]) -> dict[str, str]:
    """The benchmark shape: 1 → 2-parallel → 1, each call a durable step."""
    reservation = await reserve(order["order_id"], order["sku"], int(order["qty"]))
    payment, shipment = await asyncio.gather(
        charge(order["order_id"], int(order["amount"])),
        ship(order["order_id"], reservation["id"], order["address"]),
    )
    confirmation = await reserve(order["order_id"], reservation["sku"], reservation["qty"])
    return {
        "reservation": reservation["id"],
        "payment": payment["id"],
        "tracking": shipment["tracking_number"],
        "confirmation": confirmation["id"],
    }


class DbosGlue(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    """``Run`` of ``bench_grpc`` through the DBOS workflow."""

    async def Run(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.workflow != "bench_grpc":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no workflow {request.workflow!r}")
        order = json_format.MessageToDict(request.input)
        try:
            output = await checkout(order)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        value = struct_pb2.Value()
        value.struct_value.update(output)
        return gateway_pb2.ExecutionResult(
            execution_id=request.execution_id or str(uuid.uuid4()),
            workflow=request.workflow,
            status=gateway_pb2.EXECUTION_STATUS_SUCCEEDED,
            output=value,
        )


async def serve(host: str, port: int, services: str) -> None:
    """Serve until SIGTERM/SIGINT."""
    channel = grpc.aio.insecure_channel(services)
    _stubs["inventory"] = inventory_pb2_grpc.InventoryStub(channel)
    _stubs["payments"] = payments_pb2_grpc.PaymentsStub(channel)
    _stubs["shipping"] = shipping_pb2_grpc.ShippingStub(channel)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    gateway_pb2_grpc.add_GatewayServicer_to_server(DbosGlue(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench-dbos listening on {host}:{bound} pid={os.getpid()}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(0.5)
        await channel.close()


def main(argv: list[str] | None = None) -> int:
    """Configure and launch DBOS on a fresh SQLite database, then serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--services", required=True, help="gRPC target of bench/services.py")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config: DBOSConfig = {
            "name": "bench-dbos",
            "system_database_url": f"sqlite:///{Path(tmp) / 'dbos.sqlite'}",
        }
        DBOS(config=config)
        DBOS.launch()
        try:
            asyncio.run(serve(args.host, args.port, args.services))
        finally:
            DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
