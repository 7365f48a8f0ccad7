"""DESIGN §4 end to end: order, parallelism, conditions and the saga on the real demo services.

The four demo services (grpcio, grpclib, Node.js, aiohttp) run as subprocesses for the module;
the real loader, engine and transports run in the test's event loop. Assertions read what the
services recorded (requests, selected metadata, outcomes, wall-clock start/end), not timings.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from integration.support import (
    CHECKOUT_INPUT,
    ORDER,
    Events,
    checkout_text,
    execute,
    finished,
    in_flight,
    only,
    render,
    saga,
)

from demo.harness import DemoServices
from maestro_gateway.codes import Code
from maestro_gateway.engine import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    Engine,
    ErrorInfo,
    ExecutionFinished,
    ExecutionStatus,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
)
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.schema import check_input
from maestro_gateway.transports import Transports

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(demo: DemoServices) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await demo.reset()


@pytest_asyncio.fixture(loop_scope="module")
async def engine() -> AsyncIterator[Engine]:
    """A real engine over real transports (closed after the test)."""
    async with Transports() as transports:
        yield Engine(transports)


async def test_checkout_example_succeeds_across_all_four_services(
    demo: DemoServices, engine: Engine
) -> None:
    """The shipped checkout workflow succeeds on all four stacks; output and values as declared."""
    workflow = load_string(checkout_text(demo), path="checkout.yaml")
    check_input(workflow, CHECKOUT_INPUT)
    result, events = await execute(engine, workflow, CHECKOUT_INPUT)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    steps = result.steps
    reservation = steps["reserve"].output
    payment = steps["charge"].output
    mail = steps["notify"].output
    shipment = steps["ship"].output
    assert result.output == {
        "order_id": "o-1",
        "reservation": reservation["id"],
        "payment": payment["id"],
        "paid": 1250,
        "message": mail["message_id"],
        "tracking": shipment["tracking_number"],
    }
    # int64 stays an int (proto3 JSON would give a string); enums come as names.
    assert type(reservation["expires_at_unix_ms"]) is int
    assert reservation["expires_at_unix_ms"] > 1_600_000_000_000
    assert reservation["qty"] == 2
    assert type(reservation["qty"]) is int
    assert payment == {
        "id": payment["id"],
        "amount": 1250,
        "currency": "EUR",
        "status": "PAYMENT_STATUS_CAPTURED",
    }
    assert type(payment["amount"]) is int
    assert shipment["carrier"] == "DEMO-POST"
    assert mail["status"] == "SENT"
    assert {s.status for s in steps.values()} == {StepStatus.SUCCEEDED}
    assert sorted(events.steps(StepSucceeded)) == ["charge", "notify", "reserve", "ship"]
    for name, method in [
        ("inventory", "Reserve"),
        ("payments", "Charge"),
        ("shipping", "CreateShipment"),
        ("mailer", "SendMail"),
    ]:
        calls = await demo[name].control.calls()
        assert [(c.method, c.outcome) for c in calls] == [(method, "OK")]
    (reserve,) = await demo.inventory.control.calls()
    assert reserve.request == {"order_id": "o-1", "sku": "sku-1", "qty": 2}


async def test_steps_run_in_order_and_parallel_branches_overlap(
    demo: DemoServices, engine: Engine
) -> None:
    """Top-level steps run in file order; the two branches of `parallel` are in flight together."""
    await demo.payments.control.add_fault(method="Charge", delay_ms=300)
    await demo.mailer.control.add_fault(method="SendMail", delay_ms=300)
    result, _ = await execute(engine, saga(demo), ORDER)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    (reserve,) = await demo.inventory.control.calls()
    (charge,) = await demo.payments.control.calls()
    (notify,) = await demo.mailer.control.calls()
    (ship,) = await demo.shipping.control.calls()
    assert reserve.ended_unix_ms <= min(charge.started_unix_ms, notify.started_unix_ms)
    # Overlap: each branch started before the other one ended.
    assert charge.started_unix_ms < notify.ended_unix_ms
    assert notify.started_unix_ms < charge.ended_unix_ms
    assert ship.started_unix_ms >= max(charge.ended_unix_ms, notify.ended_unix_ms)


async def test_when_false_skips_the_step_without_calling_it(
    demo: DemoServices, engine: Engine
) -> None:
    """A false `when` skips the step: no call, only `step_skipped`, output null in the result."""
    result, events = await execute(engine, saga(demo), {**ORDER, "ship": False})
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.steps["ship"].status is StepStatus.SKIPPED
    assert result.steps["ship"].output is None
    assert result.output["shipment"] is None
    assert set(result.output) == {"reservation", "payment", "mail", "shipment"}
    assert events.steps(StepSkipped) == ["ship"]
    assert "ship" not in events.steps(StepStarted)
    assert await demo.shipping.control.calls() == []


SKIP_THEN_FAIL = """
name: skip-then-fail
services:
  inventory: {type: grpc, endpoint: "$inventory"}
  shipping: {type: grpc, endpoint: "$shipping"}
  payments: {type: grpc, endpoint: "$payments"}
steps:
  - id: reserve
    service: inventory
    method: Reserve
    input: {order_id: o-1, sku: sku-1, qty: 1}
    compensate: {method: Release, input: {reservation_id: "{{ reserve.id }}"}}
  - id: ship
    service: shipping
    method: CreateShipment
    when: "{{ reserve.qty > 1 }}"
    input: {order_id: o-1, address: here}
    compensate: {method: CancelShipment, input: {shipment_id: "{{ ship.id }}"}}
  - id: charge
    service: payments
    method: Charge
    input: {order_id: o-1, amount: 0}
"""


async def test_skipped_step_is_never_compensated(demo: DemoServices, engine: Engine) -> None:
    """A later failure compensates the steps that ran; the skipped one is neither run nor undone."""
    workflow = load_string(render(SKIP_THEN_FAIL, demo))
    result, events = await execute(engine, workflow, {})
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("charge", Code.INVALID_ARGUMENT)
    assert "amount must be > 0" in result.error.message
    assert result.steps["ship"].status is StepStatus.SKIPPED
    assert result.steps["reserve"].status is StepStatus.COMPENSATED
    assert events.steps(CompensationStarted) == ["reserve"]
    assert await demo.shipping.control.calls() == []
    calls = await demo.inventory.control.calls()
    assert [(c.method, c.outcome) for c in calls] == [("Reserve", "OK"), ("Release", "OK")]


async def test_late_failure_compensates_in_reverse_completion_order(
    demo: DemoServices, engine: Engine
) -> None:
    """The last step failing undoes notify, charge, reserve (newest first), each seeing `error`."""
    # Usually makes notify complete after charge; the order asserted is the one observed.
    await demo.mailer.control.add_fault(method="SendMail", delay_ms=200)
    await demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    result, events = await execute(engine, saga(demo), ORDER)
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error == ErrorInfo(
        "ship", Code.INVALID_ARGUMENT, "injected fault: INVALID_ARGUMENT"
    )
    completed = events.steps(StepSucceeded)
    assert completed[0] == "reserve"
    assert sorted(completed) == ["charge", "notify", "reserve"]
    assert events.steps(CompensationSucceeded) == completed[::-1]
    statuses = {sid: s.status for sid, s in result.steps.items()}
    assert statuses == {
        "reserve": StepStatus.COMPENSATED,
        "charge": StepStatus.COMPENSATED,
        "notify": StepStatus.COMPENSATED,
        "ship": StepStatus.FAILED,
    }
    mail_id = result.steps["notify"].output["message_id"]
    payment_id = result.steps["charge"].output["id"]
    reservation_id = result.steps["reserve"].output["id"]
    (recall,) = only(await demo.mailer.control.calls(), "RecallMail")
    (refund,) = only(await demo.payments.control.calls(), "Refund")
    (release,) = only(await demo.inventory.control.calls(), "Release")
    assert recall.request == {"order_id": "o-1", "message_id": mail_id}
    assert refund.request == {
        "payment_id": payment_id,
        "reason": "rollback after ship failed: INVALID_ARGUMENT",
    }
    assert release.request == {"reservation_id": reservation_id}
    for call in (recall, refund, release):
        assert call.outcome == "OK"
        assert call.metadata["x-demo-cause"] == "ship INVALID_ARGUMENT"
    # One at a time, newest first, as the services saw them.
    undo = {"notify": recall, "charge": refund, "reserve": release}
    seen = [undo[step] for step in completed[::-1]]
    for before, after in itertools.pairwise(seen):
        assert before.ended_unix_ms <= after.started_unix_ms
    assert only(await demo.shipping.control.calls(), "CancelShipment") == []


@pytest.mark.parametrize(
    ("service", "method", "step"),
    [("inventory", "Release", "reserve"), ("mailer", "RecallMail", "notify")],
)
async def test_failed_compensation_does_not_stop_the_others(
    demo: DemoServices, engine: Engine, service: str, method: str, step: str
) -> None:
    """A failing compensation (gRPC or HTTP) gives COMPENSATION_FAILED; the others still run."""
    await demo.mailer.control.add_fault(method="SendMail", delay_ms=200)
    await demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    await demo[service].control.add_fault(method=method, code="FAILED_PRECONDITION", message="no")
    result, events = await execute(engine, saga(demo), ORDER)
    assert result.status is ExecutionStatus.COMPENSATION_FAILED
    # The cause stays the original failure.
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("ship", Code.INVALID_ARGUMENT)
    failed = result.steps[step]
    assert failed.status is StepStatus.COMPENSATION_FAILED
    assert failed.compensation_error is not None
    assert (failed.compensation_error.step_id, failed.compensation_error.code) == (
        step,
        Code.FAILED_PRECONDITION,
    )
    assert [e.step_id for e in events.of(CompensationFailed)] == [step]
    others = {"reserve", "charge", "notify"} - {step}
    assert {result.steps[s].status for s in others} == {StepStatus.COMPENSATED}
    assert events.steps(CompensationStarted) == events.steps(StepSucceeded)[::-1]
    expected = {"inventory": "Release", "payments": "Refund", "mailer": "RecallMail"}
    for name, undo in expected.items():
        (call,) = only(await demo[name].control.calls(), undo)
        assert call.outcome == ("FAILED_PRECONDITION" if undo == method else "OK")


async def test_workflow_deadline_mid_call_cancels_downstream_and_compensates(
    demo: DemoServices, engine: Engine
) -> None:
    """The workflow deadline cuts the call in flight (seen as CANCELLED); earlier steps are undone."""
    workflow = saga(demo, timeout="500ms")
    warm, _ = await execute(engine, workflow, ORDER)  # connect and resolve before the clock matters
    assert warm.status is ExecutionStatus.SUCCEEDED, warm.error
    await demo.reset()
    await demo.shipping.control.add_fault(method="CreateShipment", delay_ms=5000)
    result, events = await execute(engine, workflow, ORDER)
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("ship", Code.DEADLINE_EXCEEDED)
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.steps["ship"].status is StepStatus.FAILED
    assert result.duration < 4.0  # well before the 5 s delay would have ended
    calls = await demo.shipping.control.wait_for(finished("CreateShipment"))
    assert [(c.method, c.outcome) for c in calls] == [("CreateShipment", "CANCELLED")]
    undone = events.steps(CompensationSucceeded)
    assert sorted(undone) == ["charge", "notify", "reserve"]
    assert undone[-1] == "reserve"
    for name, undo in [("inventory", "Release"), ("payments", "Refund"), ("mailer", "RecallMail")]:
        (call,) = only(await demo[name].control.calls(), undo)
        assert call.outcome == "OK"
        assert call.metadata["x-demo-cause"] == "ship DEADLINE_EXCEEDED"


async def test_caller_cancel_mid_call_compensates_then_propagates(
    demo: DemoServices, engine: Engine
) -> None:
    """Cancelling the task mid-call cancels downstream, compensates, then raises CancelledError."""
    await demo.shipping.control.add_fault(method="CreateShipment", delay_ms=10_000)
    events = Events()
    task = asyncio.create_task(engine.execute(saga(demo), ORDER, on_event=events.append))
    await demo.shipping.control.wait_for(in_flight("CreateShipment"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    calls = await demo.shipping.control.wait_for(finished("CreateShipment"))
    assert [(c.method, c.outcome) for c in calls] == [("CreateShipment", "CANCELLED")]
    (done,) = events.of(ExecutionFinished)
    result = done.result
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("ship", Code.CANCELLED)
    assert result.steps["ship"].status is StepStatus.CANCELLED
    for name, undo in [("inventory", "Release"), ("payments", "Refund"), ("mailer", "RecallMail")]:
        (call,) = only(await demo[name].control.calls(), undo)
        assert call.outcome == "OK"
        assert call.metadata["x-demo-cause"] == "ship CANCELLED"


@pytest.mark.parametrize(
    ("failing", "sibling"),
    [
        (("payments", "Charge", "charge"), ("mailer", "SendMail", "notify")),
        (("mailer", "SendMail", "notify"), ("payments", "Charge", "charge")),
    ],
)
async def test_failing_branch_cancels_its_sibling_in_flight(
    demo: DemoServices,
    engine: Engine,
    failing: tuple[str, str, str],
    sibling: tuple[str, str, str],
) -> None:
    """A failing parallel branch cancels the sibling in flight; only succeeded steps are undone."""
    (bad_service, bad_method, bad_step), (other_service, other_method, other_step) = (
        failing,
        sibling,
    )
    await demo[other_service].control.add_fault(method=other_method, delay_ms=10_000)
    # Fail only once the sibling is surely in flight: a short delay, then the error.
    await demo[bad_service].control.add_fault(
        method=bad_method, code="INVALID_ARGUMENT", delay_ms=300
    )
    result, events = await execute(engine, saga(demo), ORDER)
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == (bad_step, Code.INVALID_ARGUMENT)
    assert result.steps[other_step].status is StepStatus.CANCELLED
    assert result.steps[bad_step].status is StepStatus.FAILED
    assert result.steps["reserve"].status is StepStatus.COMPENSATED
    assert result.duration < 8.0  # the 10 s sibling did not hold the execution
    calls = await demo[other_service].control.wait_for(finished(other_method))
    assert [(c.method, c.outcome) for c in calls] == [(other_method, "CANCELLED")]
    assert events.steps(CompensationStarted) == ["reserve"]
    assert [c.method for c in await demo.inventory.control.calls()] == ["Reserve", "Release"]
    assert only(await demo.payments.control.calls(), "Refund") == []
    assert only(await demo.mailer.control.calls(), "RecallMail") == []
    assert await demo.shipping.control.calls() == []


@pytest.mark.parametrize("whose", ["workflow", "caller"])
async def test_deadline_in_the_first_step_fails_with_nothing_to_undo(
    demo: DemoServices, engine: Engine, whose: str
) -> None:
    """A workflow or caller deadline during the first step: FAILED, one call, cancelled downstream."""
    workflow = saga(demo, timeout="500ms" if whose == "workflow" else "20s")
    await demo.inventory.control.add_fault(method="Reserve", delay_ms=5000)
    events = Events()
    result = await engine.execute(
        workflow, ORDER, timeout=0.5 if whose == "caller" else None, on_event=events.append
    )
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("reserve", Code.DEADLINE_EXCEEDED)
    assert whose in result.error.message
    # Not retried although the service allows 2 attempts: the deadline itself has passed.
    calls = await demo.inventory.control.wait_for(finished("Reserve"))
    assert [(c.method, c.outcome) for c in calls] == [("Reserve", "CANCELLED")]
    assert events.of(CompensationStarted) == []
    for name in ("payments", "shipping", "mailer"):
        assert await demo[name].control.calls() == []


async def test_workflow_deadline_during_parallel_cancels_both_branches(
    demo: DemoServices, engine: Engine
) -> None:
    """A deadline while both branches are in flight cancels both downstream; reserve is undone."""
    workflow = saga(demo, timeout="500ms")
    warm, _ = await execute(engine, workflow, ORDER)
    assert warm.status is ExecutionStatus.SUCCEEDED, warm.error
    await demo.reset()
    await demo.payments.control.add_fault(method="Charge", delay_ms=5000)
    await demo.mailer.control.add_fault(method="SendMail", delay_ms=5000)
    result, events = await execute(engine, workflow, ORDER)
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert result.error.code is Code.DEADLINE_EXCEEDED
    assert result.error.step_id in {"charge", "notify"}
    for step in ("charge", "notify"):
        assert result.steps[step].status is StepStatus.FAILED
        error = result.steps[step].error
        assert error is not None
        assert error.code is Code.DEADLINE_EXCEEDED
    for name, method in [("payments", "Charge"), ("mailer", "SendMail")]:
        calls = await demo[name].control.wait_for(finished(method))
        assert [(c.method, c.outcome) for c in calls] == [(method, "CANCELLED")]
    assert events.steps(CompensationSucceeded) == ["reserve"]
    (release,) = only(await demo.inventory.control.calls(), "Release")
    assert release.metadata["x-demo-cause"] == f"{result.error.step_id} DEADLINE_EXCEEDED"


async def test_compensation_is_retried_with_the_step_policy(
    demo: DemoServices, engine: Engine
) -> None:
    """A compensation failing with UNAVAILABLE is retried under its service's retry policy."""
    await demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    await demo.inventory.control.add_fault(method="Release", code="UNAVAILABLE", times=1)
    result, events = await execute(engine, saga(demo), ORDER)
    assert result.status is ExecutionStatus.COMPENSATED
    releases = only(await demo.inventory.control.calls(), "Release")
    assert [c.outcome for c in releases] == ["UNAVAILABLE", "OK"]
    assert [e.attempt for e in events.of(CompensationStarted) if e.step_id == "reserve"] == [1, 2]


async def test_compensation_budget_cuts_a_hanging_compensation(
    demo: DemoServices, engine: Engine
) -> None:
    """A compensation outliving `compensation_timeout` is cancelled downstream and reported failed."""
    await demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    await demo.inventory.control.add_fault(method="Release", delay_ms=5000)
    result, _ = await execute(engine, saga(demo, compensation_timeout="1s"), ORDER)
    assert result.status is ExecutionStatus.COMPENSATION_FAILED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("ship", Code.INVALID_ARGUMENT)
    error = result.steps["reserve"].compensation_error
    assert error is not None
    assert error.code is Code.DEADLINE_EXCEEDED
    assert result.steps["charge"].status is StepStatus.COMPENSATED
    assert result.steps["notify"].status is StepStatus.COMPENSATED
    calls = await demo.inventory.control.wait_for(finished("Release"))
    assert [c.outcome for c in only(calls, "Release")] == ["CANCELLED"]


async def test_second_cancel_during_compensation_does_not_cut_it(
    demo: DemoServices, engine: Engine
) -> None:
    """Cancelling again while compensations run leaves them to finish; CancelledError follows."""
    await demo.shipping.control.add_fault(method="CreateShipment", delay_ms=10_000)
    await demo.inventory.control.add_fault(method="Release", delay_ms=500)
    events = Events()
    task = asyncio.create_task(engine.execute(saga(demo), ORDER, on_event=events.append))
    await demo.shipping.control.wait_for(in_flight("CreateShipment"))
    task.cancel()
    await demo.inventory.control.wait_for(in_flight("Release"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (release,) = only(await demo.inventory.control.calls(), "Release")
    assert release.outcome == "OK"
    (done,) = events.of(ExecutionFinished)
    assert done.result.status is ExecutionStatus.COMPENSATED
