"""Every file in ``workflows/`` loads; the examples keep the shapes the docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from maestro_gateway.model.bundle import load_linked
from maestro_gateway.model.loader import load_file
from maestro_gateway.model.types import (
    CallStep,
    EmitStep,
    ForeachStep,
    GrpcMethod,
    HttpMethod,
    ParallelStep,
    SwitchStep,
    WaitStep,
    WorkflowStep,
)

WORKFLOWS = Path(__file__).parent.parent / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yaml"))


def test_there_are_examples() -> None:
    """The checkout, Maestro.go-style, order-lines, payment and signals examples exist."""
    assert {p.name for p in FILES} >= {
        "checkout.yaml",
        "maestro-go-style.yaml",
        "order-lines.yaml",
        "payment.yaml",
        "pay-order.yaml",
        "fulfil.yaml",
    }


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_workflow_loads(path: Path) -> None:
    """Each workflow file in workflows/ is valid."""
    assert load_file(str(path)).name


def test_checkout_shape() -> None:
    """checkout: reserve → parallel(charge, notify) → ship, all compensated, with a schema."""
    workflow = load_file(str(WORKFLOWS / "checkout.yaml"))
    reserve, group, ship = workflow.steps
    assert isinstance(reserve, CallStep)
    assert isinstance(group, ParallelStep)
    assert isinstance(ship, CallStep)
    assert [s.id for s in group.steps] == ["charge", "notify"]
    assert all(s.compensate is not None for s in workflow.call_steps())
    assert reserve.call.method == GrpcMethod("shop.v1.Inventory", "Reserve")
    notify = group.steps[1]
    assert isinstance(notify.call.method, HttpMethod)
    assert notify.call.method.path.render_text({"input": {"order_id": "o-1"}}) == "/orders/o-1/mail"
    assert workflow.input_schema is not None
    assert "order_id" in workflow.input_schema["required"]
    assert workflow.services["mailer"].endpoint == "http://127.0.0.1:8081"
    assert ship.when is not None


def test_maestro_go_style_uses_leading_dots_and_whole_objects() -> None:
    """The Maestro.go example evaluates `.analysis.confidence > 0.8` and `{{ .analysis }}`."""
    workflow = load_file(str(WORKFLOWS / "maestro-go-style.yaml"))
    group = workflow.steps[2]
    assert isinstance(group, ParallelStep)
    flag = group.steps[0]
    assert flag.when is not None
    assert flag.when.evaluate({"analysis": {"confidence": 0.9}}) is True
    assert flag.when.evaluate({"analysis": {"confidence": 0.5}}) is False
    analysis = {"confidence": 0.9, "labels": ["spam"]}
    assert flag.call.input.render({"analysis": analysis}) == analysis


# The keys Maestro.go's workflow types read (its internal/domain/workflow.go).
MAESTRO_GO_KEYS = {
    "workflow": {"name", "version", "timeout", "services", "steps", "output"},
    "service": {"type", "endpoint", "timeout", "retry", "metadata"},
    "retry": {"attempts", "backoff"},
    "step": {"id", "service", "method", "input", "output", "when", "compensate", "parallel"},
    "compensate": {"method", "input"},
}


def test_order_rewards_is_pure_maestro_go_format() -> None:
    """order-rewards.yaml uses only keys Maestro.go reads, and its loyalty service is gRPC."""
    raw = yaml.safe_load((WORKFLOWS / "order-rewards.yaml").read_text())
    assert set(raw) <= MAESTRO_GO_KEYS["workflow"]
    for service in raw["services"].values():
        assert set(service) <= MAESTRO_GO_KEYS["service"]
        assert set(service.get("retry", {})) <= MAESTRO_GO_KEYS["retry"]
    steps = [child for step in raw["steps"] for child in step.get("parallel", [step])]
    for step in steps:
        assert set(step) <= MAESTRO_GO_KEYS["step"]
        assert set(step.get("compensate", {})) <= MAESTRO_GO_KEYS["compensate"]
    workflow = load_file(str(WORKFLOWS / "order-rewards.yaml"))
    assert workflow.services["loyalty"].protocol == "auto"
    assert workflow.services["loyalty"].endpoint == "127.0.0.1:50054"


def test_order_lines_runs_the_payment_workflow_through_the_kinds() -> None:
    """order-lines: a foreach per line, the payment sub-workflow (linked), a switch, a notify
    that may fail; payment: Charge compensated by Refund, with an input schema."""
    workflow = load_linked(str(WORKFLOWS / "order-lines.yaml"))
    lines, pay, route, ship, notify = workflow.steps
    assert isinstance(lines, ForeachStep)
    assert (lines.item_name, lines.output) == ("line", "reservations")
    assert lines.concurrency is not None
    assert lines.concurrency.render({"input": {"lines": [{}] * 3}}) == 2
    (reserve,) = lines.steps
    assert isinstance(reserve, CallStep)
    assert reserve.compensate is not None
    assert reserve.compensate.method == GrpcMethod("shop.v1.Inventory", "Release")
    assert isinstance(pay, WorkflowStep)
    assert pay.child is not None
    assert pay.child.name == "payment"
    assert pay.child.path == str(WORKFLOWS / "payment.yaml")
    assert isinstance(route, SwitchStep)
    assert [branch.when is None for branch in route.branches] == [False, True]
    assert isinstance(ship, CallStep)
    assert isinstance(notify, CallStep)
    assert notify.continue_on_error
    payment = pay.child
    assert payment.input_schema is not None
    assert {"order_id", "amount"} <= set(payment.input_schema["required"])
    charge = payment.step("charge")
    assert isinstance(charge, CallStep)
    assert charge.compensate is not None
    assert charge.compensate.method == GrpcMethod("shop.v1.Payments", "Refund")


def test_pay_order_emits_what_fulfil_is_triggered_by() -> None:
    """pay-order emits order.paid after its charge; fulfil, triggered by order.paid with a
    positive amount (dedup on the order id), reserves, waits for its parcel.packed, ships and
    emits order.shipped; the trigger's input from pay-order's params passes fulfil's schema."""
    pay = load_file(str(WORKFLOWS / "pay-order.yaml"))
    charge, paid = pay.steps
    assert isinstance(charge, CallStep)
    assert charge.call.method == GrpcMethod("shop.v1.Payments", "Charge")
    assert isinstance(paid, EmitStep)
    assert (paid.signal, paid.signal_id) == ("order.paid", None)  # <execution_id>.paid
    order = {"order_id": "A-1", "sku": "sku-1", "qty": 1, "amount": 5, "address": "1 Main St"}
    params = paid.params.render({"input": order, "payment": {"id": "pay-1"}})
    assert params == {**order, "payment_id": "pay-1"}

    fulfil = load_file(str(WORKFLOWS / "fulfil.yaml"))
    (trigger,) = fulfil.triggers
    assert trigger.signal == "order.paid"
    assert trigger.when is not None
    assert trigger.input is not None
    assert trigger.dedup is not None
    signal = {"signal": {"signal_id": "pay-A-1.paid", "name": "order.paid", "params": params}}
    assert trigger.when.evaluate(signal) is True
    zero = {"signal": {**signal["signal"], "params": {**params, "amount": 0}}}
    assert trigger.when.evaluate(zero) is False
    assert trigger.dedup.render_text(signal) == "A-1"
    input = trigger.input.render(signal)
    assert input == {k: order[k] for k in ("order_id", "sku", "qty", "address")}
    assert fulfil.input_schema is not None
    assert set(fulfil.input_schema["required"]) <= set(input)
    reserve, packed, ship, shipped = fulfil.steps
    assert isinstance(reserve, CallStep)
    assert reserve.compensate is not None
    assert isinstance(packed, WaitStep)
    assert packed.signal == "parcel.packed"
    assert packed.match is not None
    mine = {"input": input, "signal": {"params": {"order_id": "A-1"}}}
    other = {"input": input, "signal": {"params": {"order_id": "B-2"}}}
    assert (packed.match.evaluate(mine), packed.match.evaluate(other)) == (True, False)
    assert isinstance(ship, CallStep)
    assert isinstance(shipped, EmitStep)
    assert shipped.signal == "order.shipped"
