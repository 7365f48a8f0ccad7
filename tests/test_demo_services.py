"""The demo services, run as real subprocesses: business behaviour, reflection, faults, recording."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from maestro.v1 import maestro_go_pb2, maestro_go_pb2_grpc
from shop.control.v1 import control_pb2, control_pb2_grpc
from shop.v1 import (
    inventory_pb2,
    inventory_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    shipping_pb2,
    shipping_pb2_grpc,
)

from demo.harness import SERVICES, DemoServices, start_service

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRPCURL = Path(sys.executable).parent / "grpcurl"
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(demo: DemoServices) -> None:
    """Every test starts with no rules, no recorded calls and the initial demo data."""
    await demo.reset()


@pytest_asyncio.fixture(loop_scope="module")
async def channels(demo: DemoServices) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """One grpc.aio channel per gRPC demo service."""
    opened = {
        name: grpc.aio.insecure_channel(demo[name].address)
        for name in ("inventory", "payments", "shipping", "loyalty")
    }
    yield opened
    for channel in opened.values():
        await channel.close()


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


def inventory(channels: dict[str, grpc.aio.Channel]) -> Any:
    return inventory_pb2_grpc.InventoryStub(channels["inventory"])


def payments(channels: dict[str, grpc.aio.Channel]) -> Any:
    return payments_pb2_grpc.PaymentsStub(channels["payments"])


def shipping(channels: dict[str, grpc.aio.Channel]) -> Any:
    return shipping_pb2_grpc.ShippingStub(channels["shipping"])


def loyalty(channels: dict[str, grpc.aio.Channel]) -> Any:
    return maestro_go_pb2_grpc.MaestroServiceStub(channels["loyalty"])


def envelope(method: str, **payload: Any) -> maestro_go_pb2.ServiceRequest:
    """A ServiceRequest naming ``method`` with ``payload`` as a Struct."""
    request = maestro_go_pb2.ServiceRequest(method=method, correlation_id="w-1:s-1")
    data = struct_pb2.Struct()
    data.update(payload)
    request.payload.Pack(data)
    return request


def answer(response: maestro_go_pb2.ServiceResponse) -> Any:
    """The Struct in a successful envelope response, as a dict."""
    assert response.success, response.error
    data = struct_pb2.Struct()
    assert response.data.Unpack(data)
    return json_format.MessageToDict(data)


async def levels(channels: dict[str, grpc.aio.Channel], *skus: str) -> dict[str, int]:
    call = inventory(channels).WatchStock(
        inventory_pb2.WatchStockRequest(skus=skus), timeout=TIMEOUT
    )
    return {level.sku: level.available async for level in call}


async def first_call(channels: dict[str, grpc.aio.Channel], service: str) -> Any:
    """Make the cheapest valid business call of ``service`` (request built fresh each time)."""
    if service == "inventory":
        request = inventory_pb2.ReserveRequest(order_id="o-1", sku="sku-1", qty=1)
        return await inventory(channels).Reserve(request, timeout=TIMEOUT)
    if service == "payments":
        request = payments_pb2.ChargeRequest(order_id="o-1", amount=1500, currency="EUR")
        return await payments(channels).Charge(request, timeout=TIMEOUT)
    if service == "loyalty":
        request = envelope("EnrollMember", email="ada@example.com", name="Ada")
        return await loyalty(channels).Execute(request, timeout=TIMEOUT)
    request = shipping_pb2.CreateShipmentRequest(order_id="o-1", address="1 Main St")
    return await shipping(channels).CreateShipment(request, timeout=TIMEOUT)


FIRST_METHOD = {
    "inventory": "Reserve",
    "payments": "Charge",
    "shipping": "CreateShipment",
    "loyalty": "EnrollMember",
}
GRPC_SERVICES = list(FIRST_METHOD)


async def grpcurl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_inventory_reserve_and_release_move_stock(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    """Reserve takes stock and returns res-<n>; Release gives it back once."""
    stub = inventory(channels)
    before = (await levels(channels, "sku-2"))["sku-2"]
    reservation = await stub.Reserve(
        inventory_pb2.ReserveRequest(order_id="o-1", sku="sku-2", qty=3), timeout=TIMEOUT
    )
    assert reservation.id.startswith("res-")
    assert (reservation.sku, reservation.qty) == ("sku-2", 3)
    assert reservation.expires_at_unix_ms > time.time() * 1000
    assert await levels(channels, "sku-2") == {"sku-2": before - 3}
    release = inventory_pb2.ReleaseRequest(reservation_id=reservation.id)
    assert (await stub.Release(release, timeout=TIMEOUT)).released is True
    assert (await stub.Release(release, timeout=TIMEOUT)).released is False
    assert await levels(channels, "sku-2") == {"sku-2": before}


@pytest.mark.parametrize(
    ("sku", "qty", "code"),
    [
        ("nope", 1, grpc.StatusCode.NOT_FOUND),
        ("sku-1", 0, grpc.StatusCode.INVALID_ARGUMENT),
        ("sku-1", -2, grpc.StatusCode.INVALID_ARGUMENT),
        ("sku-3", 6, grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_inventory_rejects_bad_reservations(
    channels: dict[str, grpc.aio.Channel], sku: str, qty: int, code: grpc.StatusCode
) -> None:
    """Unknown SKU is NOT_FOUND, qty <= 0 INVALID_ARGUMENT, too much FAILED_PRECONDITION."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await inventory(channels).Reserve(
            inventory_pb2.ReserveRequest(sku=sku, qty=qty), timeout=TIMEOUT
        )
    assert failure.value.code() == code


async def test_inventory_reserve_many_is_all_or_nothing(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    """ReserveMany (client streaming) reserves every line, or none when one line fails."""
    stub = inventory(channels)
    lines = [
        inventory_pb2.ReserveRequest(sku="sku-1", qty=2),
        inventory_pb2.ReserveRequest(sku="sku-3", qty=1),
    ]
    answer = await stub.ReserveMany(iter(lines), timeout=TIMEOUT)
    assert [(r.sku, r.qty) for r in answer.reservations] == [("sku-1", 2), ("sku-3", 1)]
    assert len({r.id for r in answer.reservations}) == 2
    before = await levels(channels)
    too_many = [
        inventory_pb2.ReserveRequest(sku="sku-1", qty=1),
        inventory_pb2.ReserveRequest(sku="sku-3", qty=99),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ReserveMany(iter(too_many), timeout=TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await levels(channels) == before


async def test_payments_charge_and_refund(channels: dict[str, grpc.aio.Channel]) -> None:
    """Charge captures as pay-<n>; Refund marks it REFUNDED, idempotently."""
    stub = payments(channels)
    payment = await stub.Charge(
        payments_pb2.ChargeRequest(order_id="o-1", amount=2500, currency="USD"), timeout=TIMEOUT
    )
    assert payment.id.startswith("pay-")
    assert (payment.amount, payment.currency) == (2500, "USD")
    assert payment.status == payments_pb2.PAYMENT_STATUS_CAPTURED
    refund = payments_pb2.RefundRequest(payment_id=payment.id, reason="test")
    first = await stub.Refund(refund, timeout=TIMEOUT)
    again = await stub.Refund(refund, timeout=TIMEOUT)
    assert first.status == payments_pb2.PAYMENT_STATUS_REFUNDED
    assert first.refund_id == again.refund_id


@pytest.mark.parametrize(
    ("amount", "code", "text"),
    [
        (0, grpc.StatusCode.INVALID_ARGUMENT, "amount"),
        (-5, grpc.StatusCode.INVALID_ARGUMENT, "amount"),
        (100_001, grpc.StatusCode.FAILED_PRECONDITION, "card declined"),
    ],
)
async def test_payments_rejects_bad_amounts(
    channels: dict[str, grpc.aio.Channel], amount: int, code: grpc.StatusCode, text: str
) -> None:
    """Amount <= 0 is INVALID_ARGUMENT; over 100000 the card is declined (FAILED_PRECONDITION)."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await payments(channels).Charge(payments_pb2.ChargeRequest(amount=amount), timeout=TIMEOUT)
    assert failure.value.code() == code
    assert text in (failure.value.details() or "")


async def test_payments_refund_of_unknown_payment_is_not_found(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    """Refunding a payment that was never taken is NOT_FOUND."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await payments(channels).Refund(
            payments_pb2.RefundRequest(payment_id="pay-x"), timeout=TIMEOUT
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_shipping_create_and_cancel(channels: dict[str, grpc.aio.Channel]) -> None:
    """CreateShipment books shp-<n> with a tracking number; CancelShipment cancels it once."""
    stub = shipping(channels)
    shipment = await stub.CreateShipment(
        shipping_pb2.CreateShipmentRequest(
            order_id="o-1", reservation_id="res-1", address="1 Main St"
        ),
        timeout=TIMEOUT,
    )
    assert shipment.id.startswith("shp-")
    assert shipment.tracking_number
    assert shipment.carrier
    cancel = shipping_pb2.CancelShipmentRequest(shipment_id=shipment.id)
    assert (await stub.CancelShipment(cancel, timeout=TIMEOUT)).cancelled is True
    assert (await stub.CancelShipment(cancel, timeout=TIMEOUT)).cancelled is False


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (
            shipping_pb2.CreateShipmentRequest(order_id="o-1", address="  "),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (shipping_pb2.CancelShipmentRequest(shipment_id="shp-x"), grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_shipping_rejects_bad_requests(
    channels: dict[str, grpc.aio.Channel], request_: Any, code: grpc.StatusCode
) -> None:
    """An empty address is INVALID_ARGUMENT; cancelling an unknown shipment NOT_FOUND."""
    stub = shipping(channels)
    method = (
        stub.CreateShipment
        if isinstance(request_, shipping_pb2.CreateShipmentRequest)
        else stub.CancelShipment
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await method(request_, timeout=TIMEOUT)
    assert failure.value.code() == code


async def test_loyalty_dispatches_on_the_method_and_undoes_through_compensate(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel]
) -> None:
    """Execute runs the named method; Compensate the undo; both are recorded with their RPC."""
    stub = loyalty(channels)
    member = answer(
        await stub.Execute(envelope("EnrollMember", email="a@b", name="A"), timeout=TIMEOUT)
    )
    assert member == {
        "member_id": member["member_id"],
        "email": "a@b",
        "name": "A",
        "tier": "basic",
        "points": 0.0,
    }
    again = answer(await stub.Execute(envelope("EnrollMember", email="a@b"), timeout=TIMEOUT))
    assert again["member_id"] == member["member_id"]
    award = answer(
        await stub.Execute(
            envelope("AwardPoints", member_id=member["member_id"], order_id="o-1", points=300),
            timeout=TIMEOUT,
        )
    )
    assert (award["points"], award["balance"]) == (300.0, 300.0)
    revoke = envelope("RevokePoints", award_id=award["award_id"])
    assert answer(await stub.Compensate(revoke, timeout=TIMEOUT))["revoked"] is True
    assert answer(await stub.Compensate(revoke, timeout=TIMEOUT))["revoked"] is False
    cancel = envelope("CancelMembership", member_id=member["member_id"])
    assert answer(await stub.Compensate(cancel, timeout=TIMEOUT))["cancelled"] is True
    calls = await demo.loyalty.control.calls()
    assert [(c.rpc, c.method, c.outcome) for c in calls] == [
        ("Execute", "EnrollMember", "OK"),
        ("Execute", "EnrollMember", "OK"),
        ("Execute", "AwardPoints", "OK"),
        ("Compensate", "RevokePoints", "OK"),
        ("Compensate", "RevokePoints", "OK"),
        ("Compensate", "CancelMembership", "OK"),
    ]


async def test_loyalty_refuses_with_success_false_and_rejects_unknown_methods(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel]
) -> None:
    """Business failures are success: false (recorded REFUSED); an unknown method UNIMPLEMENTED."""
    stub = loyalty(channels)
    for request, error in (
        (envelope("EnrollMember"), "an email is required to enroll"),
        (envelope("AwardPoints", member_id="mem-x", points=5), "unknown member 'mem-x'"),
        (
            envelope("AwardPoints", member_id="m", points=20_000),
            "points must be between 1 and 10000, got 20000",
        ),
        (
            envelope("UpgradeTier", tier="platinum"),
            "no tier 'platinum'; tiers: basic, silver, gold",
        ),
    ):
        response = await stub.Execute(request, timeout=TIMEOUT)
        assert (response.success, response.error) == (False, error)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Execute(envelope("Nope"), timeout=TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert failure.value.details().startswith("loyalty has no method 'Nope'; it has: AwardPoints")
    outcomes = [c.outcome for c in await demo.loyalty.control.calls()]
    assert outcomes == ["REFUSED"] * 4 + ["UNIMPLEMENTED"]


async def test_loyalty_answers_other_types_of_data(channels: dict[str, grpc.aio.Channel]) -> None:
    """GetBalance answers an Int64Value; IssueCard an Any of a type no descriptor describes."""
    stub = loyalty(channels)
    member = answer(await stub.Execute(envelope("EnrollMember", email="c@d"), timeout=TIMEOUT))
    balance = await stub.Execute(
        envelope("GetBalance", member_id=member["member_id"]), timeout=TIMEOUT
    )
    assert balance.data.type_url == "type.googleapis.com/google.protobuf.Int64Value"
    card = await stub.Execute(envelope("IssueCard", member_id=member["member_id"]), timeout=TIMEOUT)
    assert card.data.type_url == "type.googleapis.com/shop.loyalty.v1.Card"


async def test_loyalty_records_the_envelope_metadata(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel]
) -> None:
    """Besides the trace headers, loyalty records workflow-id, step-id and correlation-id."""
    metadata = (
        ("workflow-id", "w-1"),
        ("step-id", "s-1"),
        ("correlation-id", "w-1:s-1"),
        ("authorization", "Bearer secret"),
    )
    await loyalty(channels).Execute(
        envelope("EnrollMember", email="e@f"), metadata=metadata, timeout=TIMEOUT
    )
    (call,) = await demo.loyalty.control.calls()
    assert call.metadata == {"workflow-id": "w-1", "step-id": "s-1", "correlation-id": "w-1:s-1"}


async def test_loyalty_without_reflection_still_answers_the_envelope() -> None:
    """--no-reflection: reflection is UNIMPLEMENTED, Execute and the control plane answer."""
    process = await start_service("loyalty", extra=("--no-reflection",))
    try:
        async with grpc.aio.insecure_channel(process.address) as channel:
            response = await maestro_go_pb2_grpc.MaestroServiceStub(channel).Execute(
                envelope("EnrollMember", email="g@h"), timeout=TIMEOUT
            )
            assert answer(response)["email"] == "g@h"
            reflection = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            )
            # No request message: sending one races the server's immediate UNIMPLEMENTED, and
            # grpcio then reports its own failed send ("Internal error from Core").
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                async for _ in reflection(iter([]), timeout=TIMEOUT):
                    pass
            assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
            calls = await control_pb2_grpc.ControlStub(channel).ListCalls(
                control_pb2.Empty(), timeout=TIMEOUT
            )
            assert [(c.rpc, c.method) for c in calls.calls] == [("Execute", "EnrollMember")]
    finally:
        assert await process.stop() == 0


@pytest.mark.parametrize(
    ("service", "business", "rpc"),
    [
        ("inventory", "shop.v1.Inventory", "Reserve"),
        ("payments", "shop.v1.Payments", "Charge"),
        ("shipping", "shop.v1.Shipping", "CreateShipment"),
        ("loyalty", "maestro.v1.MaestroService", "Execute"),
    ],
)
async def test_reflection_lists_and_describes(
    demo: DemoServices, service: str, business: str, rpc: str
) -> None:
    """grpcurl lists the business and control services and describes a method over reflection."""
    listed = (await grpcurl("-plaintext", demo[service].address, "list")).split()
    assert business in listed
    assert "shop.control.v1.Control" in listed
    method = f"{business}.{rpc}"
    described = await grpcurl("-plaintext", demo[service].address, "describe", method)
    assert f"{method} is a method" in described


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_fault_fails_n_times_then_succeeds(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel], service: str
) -> None:
    """A rule with times=2 fails two calls with its code, message and RetryInfo, then passes."""
    await demo[service].control.add_fault(
        method=FIRST_METHOD[service],
        code="unavailable",
        message="try later",
        times=2,
        retry_after_ms=1500,
    )
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await first_call(channels, service)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert failure.value.details() == "try later"
        status = rpc_status.from_call(failure.value)
        assert status is not None
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert info.retry_delay.ToMilliseconds() == 1500
    await first_call(channels, service)
    calls = await demo[service].control.calls()
    assert [c.outcome for c in calls] == ["UNAVAILABLE", "UNAVAILABLE", "OK"]


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_fault_rules_match_by_method_in_order(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel], service: str
) -> None:
    """A rule for another method is ignored; the first matching rule with uses left applies."""
    control = demo[service].control
    await control.add_fault(method="NoSuchMethod", code="INTERNAL")
    await control.add_fault(code="ABORTED", times=1)
    await control.add_fault(method=FIRST_METHOD[service], code="RESOURCE_EXHAUSTED", times=1)
    codes = []
    for _ in range(3):
        try:
            await first_call(channels, service)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
    assert codes == [
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OK,
    ]


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_fault_delay_applies_before_answering(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel], service: str
) -> None:
    """A delay-only rule holds the answer for at least delay_ms, then the call succeeds."""
    await demo[service].control.add_fault(delay_ms=300, times=1)
    started = time.monotonic()
    await first_call(channels, service)
    assert time.monotonic() - started >= 0.3
    (call,) = await demo[service].control.calls()
    assert call.outcome == "OK"
    assert call.ended_unix_ms - call.started_unix_ms >= 290


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_cancel_during_delay_is_recorded_as_cancelled(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel], service: str
) -> None:
    """A caller that gives up during an injected delay is recorded as CANCELLED downstream."""
    await demo[service].control.add_fault(delay_ms=10_000, times=1)
    task = asyncio.create_task(first_call(channels, service))
    await demo[service].control.wait_for(lambda calls: len(calls) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    calls = await demo[service].control.wait_for(lambda calls: calls[0].outcome != "")
    assert calls[0].outcome == "CANCELLED"
    assert calls[0].method == FIRST_METHOD[service]


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_calls_record_request_and_trace_metadata(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel], service: str
) -> None:
    """A call is recorded with its request as proto3 JSON and only the trace/demo metadata."""
    metadata = (
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "k=v"),
        ("x-request-id", "req-42"),
        ("x-b3-traceid", "abc"),
        ("x-demo-case", service),
        ("authorization", "Bearer secret"),
        ("x-other", "ignored"),
    )
    if service == "inventory":
        await inventory(channels).Reserve(
            inventory_pb2.ReserveRequest(order_id="o-7", sku="sku-1", qty=2),
            metadata=metadata,
            timeout=TIMEOUT,
        )
        expected = {"order_id": "o-7", "sku": "sku-1", "qty": 2}
    elif service == "payments":
        await payments(channels).Charge(
            payments_pb2.ChargeRequest(order_id="o-7", amount=1234),
            metadata=metadata,
            timeout=TIMEOUT,
        )
        expected = {"order_id": "o-7", "amount": "1234"}
    elif service == "loyalty":
        await loyalty(channels).Execute(
            envelope("EnrollMember", email="e@x"), metadata=metadata, timeout=TIMEOUT
        )
        expected = {
            "method": "EnrollMember",
            "payload": {
                "@type": "type.googleapis.com/google.protobuf.Struct",
                "value": {"email": "e@x"},
            },
            "correlation_id": "w-1:s-1",
        }
    else:
        await shipping(channels).CreateShipment(
            shipping_pb2.CreateShipmentRequest(order_id="o-7", address="Elm St"),
            metadata=metadata,
            timeout=TIMEOUT,
        )
        expected = {"order_id": "o-7", "address": "Elm St"}
    (call,) = await demo[service].control.calls()
    assert call.method == FIRST_METHOD[service]
    assert call.request == expected
    assert call.metadata == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "k=v",
        "x-request-id": "req-42",
        "x-b3-traceid": "abc",
        "x-demo-case": service,
    }
    assert call.outcome == "OK"
    assert 0 < call.started_unix_ms <= call.ended_unix_ms


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_control_rejects_bad_faults_and_reset_forgets(
    demo: DemoServices, channels: dict[str, grpc.aio.Channel], service: str
) -> None:
    """AddFault with an unknown code or a negative count is INVALID_ARGUMENT; Reset drops rules and calls."""
    stub = control_pb2_grpc.ControlStub(channels[service])
    for fault in (
        control_pb2.Fault(code="BOGUS"),
        control_pb2.Fault(code="OK"),
        control_pb2.Fault(times=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.AddFault(fault, timeout=TIMEOUT)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await demo[service].control.add_fault(code="INTERNAL")
    with pytest.raises(grpc.aio.AioRpcError):
        await first_call(channels, service)
    await demo[service].control.reset()
    assert await demo[service].control.calls() == []
    await first_call(channels, service)


async def test_mailer_send_and_recall(demo: DemoServices, http: aiohttp.ClientSession) -> None:
    """POST mail returns mail-<n>; DELETE recalls it; a wrong order or id is 404; /health is up."""
    url = demo.mailer.url
    async with http.post(
        f"{url}/orders/o-9/mail", json={"to": "a@example.com", "template": "paid"}
    ) as resp:
        assert resp.status == 200
        sent = await resp.json()
    assert sent["message_id"].startswith("mail-")
    assert (sent["order_id"], sent["to"], sent["template"]) == ("o-9", "a@example.com", "paid")
    async with http.delete(f"{url}/orders/o-8/mail/{sent['message_id']}") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "NOT_FOUND"
    async with http.delete(f"{url}/orders/o-9/mail/{sent['message_id']}") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "RECALLED"
    async with http.post(f"{url}/orders/o-9/mail", json={"template": "x"}) as resp:
        assert resp.status == 400
    async with http.get(f"{url}/health") as resp:
        assert (await resp.json()) == {"status": "SERVING"}
    calls = await demo.mailer.control.calls()
    assert [(c.method, c.outcome) for c in calls] == [
        ("SendMail", "OK"),
        ("RecallMail", "NOT_FOUND"),
        ("RecallMail", "OK"),
        ("SendMail", "INVALID_ARGUMENT"),
    ]
    assert calls[0].request == {"order_id": "o-9", "to": "a@example.com", "template": "paid"}


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("503", 503, "UNAVAILABLE"),
        ("UNAVAILABLE", 503, "UNAVAILABLE"),
        ("418", 418, "FAILED_PRECONDITION"),
        ("resource_exhausted", 429, "RESOURCE_EXHAUSTED"),
    ],
)
async def test_mailer_faults_map_to_http(
    demo: DemoServices, http: aiohttp.ClientSession, code: str, status: int, outcome: str
) -> None:
    """A fault code (status number or gRPC name) sets the HTTP status; retry_after_ms → Retry-After."""
    await demo.mailer.control.add_fault(method="SendMail", code=code, times=1, retry_after_ms=1200)
    headers = {"traceparent": "00-1-2-01", "X-Demo-Case": "mail", "Cookie": "secret=1"}
    async with http.post(
        f"{demo.mailer.url}/orders/o-1/mail", json={"to": "a@b"}, headers=headers
    ) as resp:
        assert resp.status == status
        assert resp.headers["Retry-After"] == "2"
    async with http.post(f"{demo.mailer.url}/orders/o-1/mail", json={"to": "a@b"}) as resp:
        assert resp.status == 200
    calls = await demo.mailer.control.calls()
    assert [c.outcome for c in calls] == [outcome, "OK"]
    assert calls[0].metadata == {"traceparent": "00-1-2-01", "x-demo-case": "mail"}


async def test_mailer_cancel_during_delay_is_recorded(
    demo: DemoServices, http: aiohttp.ClientSession
) -> None:
    """An HTTP caller that times out during an injected delay is recorded as CANCELLED."""
    await demo.mailer.control.add_fault(delay_ms=10_000, times=1)
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{demo.mailer.url}/orders/o-1/mail",
            json={"to": "a@b"},
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    calls = await demo.mailer.control.wait_for(lambda calls: bool(calls) and calls[0].outcome != "")
    assert calls[0].outcome == "CANCELLED"


async def test_mailer_control_rejects_bad_faults(
    demo: DemoServices, http: aiohttp.ClientSession
) -> None:
    """The JSON control plane answers 400 for an unknown code, a bad status or an unknown field."""
    for fault in (
        {"code": "NOPE"},
        {"code": "302"},
        {"code": "503", "when": "now"},
        {"times": "2"},
    ):
        async with http.post(f"{demo.mailer.url}/_control/faults", json=fault) as resp:
            assert resp.status == 400, fault
            assert (await resp.json())["error"]["code"] == "INVALID_ARGUMENT"
    assert await demo.mailer.control.calls() == []


@pytest.mark.parametrize(
    ("service", "name"),
    [
        ("inventory", "shop.v1.Inventory"),
        ("payments", "shop.v1.Payments"),
        ("loyalty", "maestro.v1.MaestroService"),
        ("shipping", "shop.v1.Shipping"),
    ],
)
async def test_grpc_services_report_health(
    channels: dict[str, grpc.aio.Channel], service: str, name: str
) -> None:
    """Every gRPC demo service (grpcio, grpclib, Node) answers grpc.health.v1 for "" and its
    business service."""
    stub = health_pb2_grpc.HealthStub(channels[service])
    for checked in ("", name):
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=checked), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_harness_reports_a_service_that_cannot_start() -> None:
    """Starting a service on a port already taken fails with RuntimeError, leaving no process."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="mailer exited"):
            await start_service("mailer", port=port, ready_timeout=15)


async def test_runner_starts_all_and_stops_on_sigterm() -> None:
    """python -m demo.run prints one line per service, serves, and exits 0 on SIGTERM."""
    ports = [arg for name in SERVICES for arg in (f"--{name}-port", "0")]
    runner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo.run",
        *ports,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert runner.stdout is not None
    try:
        lines = [
            (await asyncio.wait_for(runner.stdout.readline(), 30)).decode().split()
            for _ in SERVICES
        ]
        assert [line[0] for line in lines] == list(SERVICES)
        targets = {line[0]: line[1] for line in lines}
        assert targets["mailer"].startswith("http://127.0.0.1:")
        listed = await grpcurl("-plaintext", targets["payments"], "list")
        assert "shop.v1.Payments" in listed
        runner.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(runner.wait(), 15) == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{targets['mailer']}/health"),
            ):
                pass
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
