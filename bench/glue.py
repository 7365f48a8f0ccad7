"""The reference of ``make bench``: hand-written ``grpc.aio`` glue doing what the workflows do.

It serves ``maestro.v1.Gateway`` (``Run`` and ``Execute`` only), so the load client drives glue
and gateway alike. Each RPC performs the 1 → 2-parallel → 1 shape of ``bench/workflows/`` with
generated stubs over one shared channel and ``asyncio.TaskGroup``, the way a backend team writes
this glue by hand (no retries, no compensation, no schema check):

- ``bench_grpc``: Inventory.Reserve → (Payments.Charge ‖ Shipping.CreateShipment) →
  Inventory.Reserve (the confirmation);
- ``bench_http``: the same with ``POST /orders/{id}/mail`` (httpx over the aiohttp transport, as
  the gateway's HTTP transport) in place of CreateShipment.

``Run`` returns an ``ExecutionResult`` (execution id, workflow, status, output). ``Execute``
streams five messages: ``started``, ``step_succeeded`` for reserve and for each parallel branch,
then ``finished`` with the result (DESIGN §8: "a glue RPC that streams five progress messages").

Prints ``bench-glue listening on 127.0.0.1:PORT pid=PID`` when ready; serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
from google.protobuf import struct_pb2
from httpx_aiohttp import AiohttpTransport
from maestro.v1 import gateway_pb2, gateway_pb2_grpc
from shop.v1 import (
    inventory_pb2,
    inventory_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    shipping_pb2,
    shipping_pb2_grpc,
)

SUCCEEDED = gateway_pb2.EXECUTION_STATUS_SUCCEEDED


class Glue(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    """The two workflows, written by hand against generated stubs."""

    def __init__(self, channel: grpc.aio.Channel, http: httpx.AsyncClient) -> None:
        self._inventory = inventory_pb2_grpc.InventoryStub(channel)
        self._payments = payments_pb2_grpc.PaymentsStub(channel)
        self._shipping = shipping_pb2_grpc.ShippingStub(channel)
        self._http = http

    async def _flow(
        self, workflow: str, fields: Any, progress: asyncio.Queue[tuple[str, Any]] | None
    ) -> dict[str, str]:
        """Run one workflow; report each finished step on ``progress`` when streaming."""
        order_id = fields["order_id"].string_value
        reservation = await self._inventory.Reserve(
            inventory_pb2.ReserveRequest(
                order_id=order_id,
                sku=fields["sku"].string_value,
                qty=int(fields["qty"].number_value),
            ),
            timeout=5.0,
        )
        if progress is not None:
            progress.put_nowait(("reserve", reservation))

        async def charge() -> payments_pb2.Payment:
            payment = await self._payments.Charge(
                payments_pb2.ChargeRequest(
                    order_id=order_id, amount=int(fields["amount"].number_value), currency="EUR"
                ),
                timeout=5.0,
            )
            if progress is not None:
                progress.put_nowait(("charge", payment))
            return payment

        async def ship() -> shipping_pb2.Shipment:
            shipment = await self._shipping.CreateShipment(
                shipping_pb2.CreateShipmentRequest(
                    order_id=order_id,
                    reservation_id=reservation.id,
                    address=fields["address"].string_value,
                ),
                timeout=5.0,
            )
            if progress is not None:
                progress.put_nowait(("ship", shipment))
            return shipment

        async def mail() -> dict[str, Any]:
            response = await self._http.post(
                f"/orders/{order_id}/mail",
                json={"to": fields["email"].string_value, "reservation_id": reservation.id},
                timeout=5.0,
            )
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            if progress is not None:
                progress.put_nowait(("mail", body))
            return body

        async with asyncio.TaskGroup() as tg:
            paid = tg.create_task(charge())
            if workflow == "bench_http":
                mailed = tg.create_task(mail())
            else:
                shipped = tg.create_task(ship())
        confirmation = await self._inventory.Reserve(
            inventory_pb2.ReserveRequest(
                order_id=order_id, sku=reservation.sku, qty=reservation.qty
            ),
            timeout=5.0,
        )
        output = {
            "reservation": reservation.id,
            "payment": paid.result().id,
            "confirmation": confirmation.id,
        }
        if workflow == "bench_http":
            output["mail"] = mailed.result()["message_id"]
        else:
            output["tracking"] = shipped.result().tracking_number
        return output

    @staticmethod
    def _result(execution_id: str, workflow: str, output: dict[str, str]) -> Any:
        value = struct_pb2.Value()
        value.struct_value.update(output)
        return gateway_pb2.ExecutionResult(
            execution_id=execution_id, workflow=workflow, status=SUCCEEDED, output=value
        )

    @staticmethod
    async def _check(request: Any, context: grpc.aio.ServicerContext) -> None:
        if request.workflow not in ("bench_grpc", "bench_http"):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no workflow {request.workflow!r}")

    async def Run(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Run the workflow and return its result."""
        await self._check(request, context)
        execution_id = request.execution_id or str(uuid.uuid4())
        try:
            output = await self._flow(request.workflow, request.input.fields, None)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        return self._result(execution_id, request.workflow, output)

    async def Execute(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Run the workflow, streaming started, three step events and finished."""
        await self._check(request, context)
        execution_id = request.execution_id or str(uuid.uuid4())
        sequence = 0

        def event(**kwargs: Any) -> Any:
            nonlocal sequence
            sequence += 1
            ev = gateway_pb2.ExecutionEvent(execution_id=execution_id, sequence=sequence, **kwargs)
            ev.time.FromNanoseconds(time.time_ns())
            return ev

        yield event(started=gateway_pb2.ExecutionStarted(workflow=request.workflow))
        progress: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        flow = asyncio.ensure_future(self._flow(request.workflow, request.input.fields, progress))
        flow.add_done_callback(lambda _: progress.put_nowait(("", None)))
        try:
            while (step_id := (await progress.get())[0]) != "":
                yield event(step_succeeded=gateway_pb2.StepSucceeded(step_id=step_id, attempt=1))
            output = flow.result()
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        finally:
            flow.cancel()
        result = self._result(execution_id, request.workflow, output)
        yield event(finished=gateway_pb2.ExecutionFinished(result=result))


async def serve(host: str, port: int, services: str, http: str) -> None:
    """Serve the glue until SIGTERM/SIGINT."""
    channel = grpc.aio.insecure_channel(services)
    client = httpx.AsyncClient(base_url=http, transport=AiohttpTransport())
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    gateway_pb2_grpc.add_GatewayServicer_to_server(Glue(channel, client), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench-glue listening on {host}:{bound} pid={os.getpid()}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(0.5)
        await channel.close()
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--services", required=True, help="gRPC target of bench/services.py")
    parser.add_argument("--http", required=True, help="base URL of bench/services.py")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.services, args.http))
    return 0


if __name__ == "__main__":
    sys.exit(main())
