"""Demo payments service: ``shop.v1.Payments`` on grpclib with betterproto (a second gRPC stack).

Run it with ``python -m demo.payments [--host H] [--port N]`` (default 127.0.0.1:50052). It
serves Payments, the ``shop.control.v1.Control`` plane, grpclib's reflection (v1 and v1alpha)
and grpclib's health service.

Behaviour: ``Charge`` returns a payment ``pay-<n>`` with status CAPTURED; an amount <= 0 is
INVALID_ARGUMENT, an amount over :data:`DECLINE_ABOVE` cents FAILED_PRECONDITION ("card
declined"). ``Refund`` of a captured payment returns ``ref-<n>`` with status REFUNDED (again for
an already refunded one, so the compensation is idempotent); an unknown payment is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

# Imported for their side effect: the descriptors reflection serves.
from shop.control.v1 import control_pb2  # noqa: F401
from shop.v1 import payments_pb2  # noqa: F401
from shop_betterproto.shop import v1 as shop  # type: ignore[import-untyped]

from demo.control import ControlPlane, DemoError
from demo.grpclib_support import (
    ControlServicer,
    StreamAware,
    bind_socket,
    build_server,
    message_json,
    run_call,
)
from demo.process import announce_ready, parse_args, wait_for_stop_signal

SERVICE = "shop.v1.Payments"
DEFAULT_PORT = 50052
DECLINE_ABOVE = 100_000

log = logging.getLogger("demo.payments")


class Ledger:
    """Payments taken and refunded; pure state, raising :class:`DemoError`."""

    def __init__(self) -> None:
        """Start with no payments."""
        self._payment_ids = itertools.count(1)
        self._refund_ids = itertools.count(1)
        self._payments: dict[str, shop.Payment] = {}
        self._refunds: dict[str, str] = {}

    def restore(self) -> None:
        """Forget every payment (ids keep counting, so they never repeat)."""
        self._payments.clear()
        self._refunds.clear()

    def charge(self, request: shop.ChargeRequest) -> shop.Payment:
        """Capture ``amount`` cents."""
        if request.amount <= 0:
            raise DemoError("INVALID_ARGUMENT", f"amount must be > 0, got {request.amount}")
        if request.amount > DECLINE_ABOVE:
            raise DemoError(
                "FAILED_PRECONDITION", f"card declined: {request.amount} exceeds the limit"
            )
        payment = shop.Payment(
            id=f"pay-{next(self._payment_ids)}",
            amount=request.amount,
            currency=request.currency or "EUR",
            status=shop.PaymentStatus.CAPTURED,
        )
        self._payments[payment.id] = payment
        return payment

    def refund(self, request: shop.RefundRequest) -> shop.RefundResponse:
        """Refund a payment; refunding it again returns the same refund."""
        payment = self._payments.get(request.payment_id)
        if payment is None:
            raise DemoError("NOT_FOUND", f"unknown payment {request.payment_id!r}")
        if payment.id not in self._refunds:
            self._refunds[payment.id] = f"ref-{next(self._refund_ids)}"
            payment.status = shop.PaymentStatus.REFUNDED
        return shop.RefundResponse(
            refund_id=self._refunds[payment.id], status=shop.PaymentStatus.REFUNDED
        )


class PaymentsServicer(StreamAware, shop.PaymentsBase):  # type: ignore[misc]
    """``shop.v1.Payments`` over a :class:`Ledger`, every call through the control plane."""

    def __init__(self, ledger: Ledger, control: ControlPlane) -> None:
        """Serve ``ledger``, recording calls and applying faults with ``control``."""
        self._ledger = ledger
        self._control = control

    async def charge(self, charge_request: shop.ChargeRequest) -> shop.Payment:
        """Charge an amount for an order."""

        async def business() -> shop.Payment:
            return self._ledger.charge(charge_request)

        return await run_call(self._control, "Charge", message_json(charge_request), business)

    async def refund(self, refund_request: shop.RefundRequest) -> shop.RefundResponse:
        """Refund a payment."""

        async def business() -> shop.RefundResponse:
            return self._ledger.refund(refund_request)

        return await run_call(self._control, "Refund", message_json(refund_request), business)


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, announcing the bound port on stdout."""
    ledger = Ledger()
    control = ControlPlane()
    server, _health = build_server(
        [PaymentsServicer(ledger, control), ControlServicer(control, on_reset=ledger.restore)]
    )
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    await server.start(sock=sock)
    announce_ready("payments", host, bound)
    try:
        await wait_for_stop_signal()
    finally:
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 1.0)
        except TimeoutError:
            log.warning("calls still running at shutdown were abandoned")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m demo.payments``."""
    args = parse_args("payments", DEFAULT_PORT, argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
