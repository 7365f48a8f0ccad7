"""DESIGN §12 on the real demo services: the shipped ``order-lines.yaml`` and ``payment.yaml``.

The workflows of ``workflows/`` are copied, pointed at the demo services of this module
(inventory on grpcio, payments on grpclib, shipping on Node.js, mailer on aiohttp), loaded with
their sub-workflow linked, and run by the real engine over real transports. Assertions read the
result, the events and what every service recorded through its control plane.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from integration.support import Events, execute, only

from demo.control_client import RecordedCall
from demo.gateway import write_workflows
from demo.harness import DemoServices
from maestro_gateway.codes import Code
from maestro_gateway.engine import (
    CompensationStarted,
    CompensationSucceeded,
    Engine,
    ExecutionStatus,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
)
from maestro_gateway.model.bundle import load_linked
from maestro_gateway.model.schema import check_input
from maestro_gateway.model.types import Workflow
from maestro_gateway.transports import Transports

pytestmark = pytest.mark.asyncio(loop_scope="module")

LINES = [
    {"sku": "sku-1", "qty": 2},
    {"sku": "sku-2", "qty": 1},
    {"sku": "sku-3", "qty": 1},
    {"sku": "sku-1", "qty": 3},
]


def order(**changes: Any) -> dict[str, Any]:
    """A valid ``order_lines`` input (four lines) with ``changes`` applied."""
    value: dict[str, Any] = {
        "order_id": "L-1",
        "lines": LINES,
        "amount": 7499,
        "address": "1 Main Street",
        "email": "ada@example.com",
    }
    return {**value, **changes}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def order_lines(demo: DemoServices, tmp_path_factory: pytest.TempPathFactory) -> Workflow:
    """``workflows/order-lines.yaml`` retargeted at this module's services, ``payment`` linked."""
    directory = write_workflows(tmp_path_factory.mktemp("kinds"), demo)
    return load_linked(str(Path(directory) / "order-lines.yaml"))


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(demo: DemoServices) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await demo.reset()


@pytest_asyncio.fixture(loop_scope="module")
async def engine() -> AsyncIterator[Engine]:
    """A real engine over real transports (closed after the test)."""
    async with Transports() as transports:
        yield Engine(transports)


async def run(engine: Engine, workflow: Workflow, value: dict[str, Any]) -> tuple[Any, Events]:
    """Check ``value`` against the workflow's schema (as the server does), then execute it."""
    check_input(workflow, value)
    return await execute(engine, workflow, value)


def reserves(events: Events, kind: type[Any]) -> list[str]:
    """The paths of the line reservations among the events of ``kind``, in order."""
    return [step for step in events.steps(kind) if step.startswith("lines[")]


def most_in_flight(calls: list[RecordedCall]) -> int:
    """The largest number of ``calls`` a service was serving at once (from its recorded times)."""
    return max(
        sum(
            1
            for c in calls
            if c is call or c.started_unix_ms <= call.started_unix_ms < c.ended_unix_ms
        )
        for call in calls
    )


async def test_every_line_is_reserved_and_the_outputs_follow_the_items(
    demo: DemoServices, engine: Engine, order_lines: Workflow
) -> None:
    """Four lines, two at a time, started in item order; outputs in item order; paths as ids."""
    # The first reservation to arrive answers last: completion order differs from item order.
    await demo.inventory.control.add_fault(method="Reserve", delay_ms=200, times=1)
    result, events = await run(engine, order_lines, order())
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    paths = [f"lines[{i}].reserve" for i in range(4)]
    assert reserves(events, StepStarted) == paths
    assert sorted(reserves(events, StepSucceeded)) == paths
    body = result.steps["lines"].output
    assert [(r["reservation"]["sku"], r["reservation"]["qty"]) for r in body] == [
        (line["sku"], line["qty"]) for line in LINES
    ]
    ids = [r["reservation"]["id"] for r in body]
    assert [result.steps[path].output["id"] for path in paths] == ids
    payment = result.steps["pay.charge"].output
    receipt = result.steps["pay.receipt"].output
    gift = result.steps["gift"].output
    shipment = result.steps["ship"].output
    assert result.output == {
        "order_id": "L-1",
        "reservations": ids,
        "payment": payment["id"],
        "receipt": receipt["message_id"],
        "gift": gift["id"],
        "tracking": shipment["tracking_number"],
        "notified": True,
    }
    assert result.steps["pay"].output == {
        "id": payment["id"],
        "amount": 7499,
        "currency": "EUR",
        "status": "PAYMENT_STATUS_CAPTURED",
        "receipt": receipt["message_id"],
    }
    assert result.steps["route"].output == 1
    assert result.steps["review"].status is StepStatus.SKIPPED
    assert events.steps(StepSkipped) == ["review"]
    assert events.steps(CompensationStarted) == []

    inventory = await demo.inventory.control.calls()
    lines = only(inventory, "Reserve")
    assert sorted((c.request["sku"], c.request["qty"]) for c in lines[:4]) == sorted(
        (line["sku"], line["qty"]) for line in LINES
    )
    assert most_in_flight(lines[:4]) == 2  # concurrency: size(input.lines) > 20 ? 8 : 2
    assert lines[4].request == {"order_id": "L-1", "sku": "sku-2", "qty": 1}  # the gift
    assert [(c.method, c.outcome) for c in await demo.payments.control.calls()] == [
        ("Charge", "OK")
    ]
    (ship,) = await demo.shipping.control.calls()
    assert ship.request == {
        "order_id": "L-1",
        "reservation_id": ids[0],
        "address": "1 Main Street",
    }
    mails = await demo.mailer.control.calls()
    assert [(c.method, c.request["template"], c.outcome) for c in mails] == [
        ("SendMail", "receipt", "OK"),
        ("SendMail", "shipped", "OK"),
    ]


async def test_a_failing_line_undoes_the_lines_reserved(
    demo: DemoServices, engine: Engine, order_lines: Workflow
) -> None:
    """A line inventory cannot serve fails the order; the other lines are released, newest first."""
    # Every Reserve answers after 1 s: the first two lines end a second after they started, and
    # the third, started when the first of them ended, fails a second later. No rule counts
    # calls: under load the third line's call can reach the service before the first line's
    # ("pass 2, then delay 1" then delayed the wrong line).
    await demo.inventory.control.add_fault(method="Reserve", delay_ms=1000)
    lines = [*LINES[:2], {"sku": "sku-3", "qty": 9}]
    result, events = await run(engine, order_lines, order(lines=lines))
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == (
        "lines[2].reserve",
        Code.FAILED_PRECONDITION,
    )
    assert "insufficient stock for 'sku-3'" in result.error.message
    assert events.steps(StepFailed) == ["lines[2].reserve", "lines"]
    done = reserves(events, StepSucceeded)
    assert sorted(done) == ["lines[0].reserve", "lines[1].reserve"]
    assert events.steps(CompensationSucceeded) == done[::-1]
    statuses = {step: result.steps[step].status for step in ("lines", "pay", *done)}
    assert statuses == {
        "lines": StepStatus.FAILED,
        "pay": StepStatus.PENDING,
        "lines[0].reserve": StepStatus.COMPENSATED,
        "lines[1].reserve": StepStatus.COMPENSATED,
    }
    inventory = await demo.inventory.control.calls()
    assert [(c.method, c.outcome) for c in only(inventory, "Reserve")] == [
        ("Reserve", "OK"),
        ("Reserve", "OK"),
        ("Reserve", "FAILED_PRECONDITION"),
    ]
    # Each compensation released its own line's reservation, in reverse completion order.
    released = [c.request["reservation_id"] for c in only(inventory, "Release")]
    assert released == [result.steps[step].output["id"] for step in done[::-1]]
    assert {c.outcome for c in only(inventory, "Release")} == {"OK"}
    for name in ("payments", "shipping", "mailer"):
        assert await demo[name].control.calls() == [], name


async def test_a_failing_payment_undoes_its_charge_before_the_parent_rolls_back(
    demo: DemoServices, engine: Engine, order_lines: Workflow
) -> None:
    """The receipt failing fails the child, which refunds its own charge; then the lines go."""
    await demo.mailer.control.add_fault(
        method="SendMail", code="INVALID_ARGUMENT", message="mailbox closed", times=1
    )
    result, events = await run(engine, order_lines, order())
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("pay.receipt", Code.INVALID_ARGUMENT)
    assert "mailbox closed" in result.error.message
    # The child's own rollback comes before the step fails, then the parent's saga.
    kinds = [(type(e).__name__, getattr(e, "step_id", "")) for e in events]
    child_failed = kinds.index(("StepFailed", "pay.receipt"))
    assert kinds[child_failed + 1 : child_failed + 4] == [
        ("CompensationStarted", "pay.charge"),
        ("CompensationSucceeded", "pay.charge"),
        ("StepFailed", "pay"),
    ]
    assert events.steps(CompensationSucceeded)[1:] == reserves(events, StepSucceeded)[::-1]
    assert result.steps["pay"].status is StepStatus.FAILED
    assert result.steps["pay.charge"].status is StepStatus.COMPENSATED
    assert result.steps["pay.receipt"].status is StepStatus.FAILED
    assert result.steps["ship"].status is StepStatus.PENDING

    payment_id = result.steps["pay.charge"].output["id"]
    charge, refund = await demo.payments.control.calls()
    assert (charge.method, refund.method) == ("Charge", "Refund")
    assert refund.request == {
        "payment_id": payment_id,
        "reason": "rollback after pay.receipt failed: INVALID_ARGUMENT",
    }
    releases = only(await demo.inventory.control.calls(), "Release")
    assert len(releases) == 4
    assert refund.ended_unix_ms <= min(c.started_unix_ms for c in releases)
    assert [(c.method, c.outcome) for c in await demo.mailer.control.calls()] == [
        ("SendMail", "INVALID_ARGUMENT")
    ]
    assert await demo.shipping.control.calls() == []


async def test_a_failing_notification_does_not_fail_the_order(
    demo: DemoServices, engine: Engine, order_lines: Workflow
) -> None:
    """continue_on_error: the notification fails after its retries, the order succeeds, undoes nothing."""
    await demo.mailer.control.add_fault(method="SendMail", times=1)  # the receipt goes through
    await demo.mailer.control.add_fault(method="SendMail", code="UNAVAILABLE", message="down")
    result, events = await run(engine, order_lines, order())
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.error is None
    notify = result.steps["notify"]
    assert notify.status is StepStatus.FAILED
    assert notify.output is None
    assert notify.error is not None
    assert (notify.error.step_id, notify.error.code) == ("notify", Code.UNAVAILABLE)
    assert result.output["notified"] is False
    assert result.output["tracking"] == result.steps["ship"].output["tracking_number"]
    assert events.steps(StepFailed) == ["notify"]
    assert events.steps(CompensationStarted) == []
    assert [(c.method, c.outcome) for c in await demo.mailer.control.calls()] == [
        ("SendMail", "OK"),
        ("SendMail", "UNAVAILABLE"),
    ]
    assert only(await demo.inventory.control.calls(), "Release") == []
    assert only(await demo.payments.control.calls(), "Refund") == []
    assert only(await demo.shipping.control.calls(), "CancelShipment") == []


async def test_a_large_order_without_approval_is_refused_and_the_payment_undone(
    demo: DemoServices, engine: Engine, order_lines: Workflow
) -> None:
    """The review branch's fail step undoes the child's receipt and charge with the lines."""
    result, events = await run(engine, order_lines, order(amount=60_000))
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("review", Code.FAILED_PRECONDITION)
    assert result.error.message == (
        "order L-1 is over 500.00 and needs a reviewer's approval (approved_by)"
    )
    assert result.steps["gift"].status is StepStatus.SKIPPED
    assert events.steps(StepSkipped) == ["gift"]
    done = [s for s in events.steps(StepSucceeded) if s.startswith(("lines[", "pay."))]
    assert events.steps(CompensationSucceeded) == done[::-1]
    assert done[-2:] == ["pay.charge", "pay.receipt"]
    (refund,) = only(await demo.payments.control.calls(), "Refund")
    assert refund.request["reason"] == "rollback after review failed: FAILED_PRECONDITION"
    assert [c.method for c in await demo.mailer.control.calls()] == ["SendMail", "RecallMail"]
    releases = only(await demo.inventory.control.calls(), "Release")
    assert len(releases) == 4
    for before, after in itertools.pairwise([refund, *releases]):
        assert before.ended_unix_ms <= after.started_unix_ms

    await demo.reset()
    approved, _ = await run(engine, order_lines, order(amount=60_000, approved_by="grace"))
    assert approved.status is ExecutionStatus.SUCCEEDED, approved.error
    assert approved.steps["review"].status is StepStatus.SKIPPED
    assert approved.output["gift"] == approved.steps["gift"].output["id"]
