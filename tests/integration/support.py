"""Workflows over the running demo services, and the helpers the integration tests share.

Workflows are YAML text with the harness's endpoints substituted (``$inventory``, ``$payments``,
``$shipping``, ``$mailer``, ``$loyalty``; see ``saga.yaml``), loaded with the real loader and run by the real
:class:`~maestro_gateway.engine.Engine` over real :class:`~maestro_gateway.transports.Transports`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from demo.control_client import RecordedCall
from demo.harness import DemoServices
from maestro_gateway.engine import Engine, Event, ExecutionResult
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import Workflow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
E = TypeVar("E")

ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "sku": "sku-1",
    "qty": 2,
    "amount": 1250,
    "email": "ada@example.com",
    "address": "1 Main Street",
    "ship": True,
}
"""An input of ``saga.yaml`` that succeeds on the demo services."""


CHECKOUT_INPUT: dict[str, Any] = {
    k: ORDER[k] for k in ("order_id", "sku", "qty", "amount", "address", "email")
}
"""An input of ``workflows/checkout.yaml``."""

CHECKOUT_PORTS = {
    "inventory": "127.0.0.1:50051",
    "payments": "127.0.0.1:50052",
    "shipping": "127.0.0.1:50053",
    "mailer": "http://127.0.0.1:8081",
}
"""The fixed endpoints written in ``workflows/checkout.yaml``."""


def checkout_text(demo: DemoServices) -> str:
    """``workflows/checkout.yaml`` pointed at the harness's services."""
    text = (ROOT / "workflows" / "checkout.yaml").read_text(encoding="utf-8")
    for name, fixed in CHECKOUT_PORTS.items():
        assert text.count(f'"{fixed}"') == 1, f"{fixed} not found once in checkout.yaml"
        text = text.replace(f'"{fixed}"', f'"{endpoints(demo)[name]}"')
    return text


def endpoints(demo: DemoServices) -> dict[str, str]:
    """Where each demo service listens: gRPC targets, and the mailer's base URL."""
    return {
        "inventory": demo.inventory.address,
        "payments": demo.payments.address,
        "shipping": demo.shipping.address,
        "mailer": demo.mailer.url,
        "loyalty": demo.loyalty.address,
    }


def render(template: str, demo: DemoServices, **knobs: str) -> str:
    """The text of ``template`` (a file here, or YAML text) with endpoints and ``knobs`` filled."""
    path = HERE / template
    text = path.read_text(encoding="utf-8") if template.endswith(".yaml") else template
    return string.Template(text).substitute(endpoints(demo), **knobs)


def load(template: str, demo: DemoServices, **knobs: str) -> Workflow:
    """Load ``template`` rendered by :func:`render`."""
    return load_string(render(template, demo, **knobs), path=template)


def saga(demo: DemoServices, timeout: str = "20s", compensation_timeout: str = "10s") -> Workflow:
    """``saga.yaml`` with a workflow ``timeout`` and a ``compensation_timeout``."""
    return load("saga.yaml", demo, timeout=timeout, compensation_timeout=compensation_timeout)


@dataclass(frozen=True)
class Target:
    """One business method of a demo service, callable as a single step."""

    service: str
    kind: str
    method: str
    input: str
    recorded: str


TARGETS: dict[str, Target] = {
    "inventory": Target(
        "inventory",
        "grpc",
        "shop.v1.Inventory/Reserve",
        '{order_id: o-1, sku: sku-1, qty: "{{ input.qty }}"}',
        "Reserve",
    ),
    "payments": Target(
        "payments", "grpc", "Charge", '{order_id: o-1, amount: "{{ input.amount }}"}', "Charge"
    ),
    "shipping": Target(
        "shipping",
        "grpc",
        "CreateShipment",
        "{order_id: o-1, reservation_id: res-9, address: 1 Main Street}",
        "CreateShipment",
    ),
    "mailer": Target(
        "mailer", "http", "POST /orders/o-1/mail", "{to: ada@example.com}", "SendMail"
    ),
    "loyalty": Target(
        "loyalty", "grpc", "EnrollMember", "{email: ada@example.com, name: Ada}", "EnrollMember"
    ),
}
"""The first business method of each demo service (``recorded``: its name in call records)."""

ONE_STEP = """
name: one-${service}
${workflow_timeout}
services:
  ${service}:
    type: ${kind}
    endpoint: "${endpoint}"
    timeout: ${timeout}
    retry: ${retry}
    ${breaker}
steps:
  - id: call
    service: ${service}
    method: "${method}"
    input: ${input}
"""


def one_step(
    demo: DemoServices,
    service: str,
    *,
    retry: str = "{attempts: 1}",
    breaker: str = "",
    timeout: str = "3s",
    workflow_timeout: str = "",
) -> Workflow:
    """A workflow of a single step ``call`` to the first business method of ``service``.

    Args:
        demo: the running services.
        service: which one to call.
        retry: the service's ``retry`` policy (YAML flow text).
        breaker: the service's ``circuit_breaker`` (YAML flow text), none when empty.
        timeout: the service's per-attempt ``timeout``.
        workflow_timeout: the workflow's ``timeout``, none when empty.
    """
    target = TARGETS[service]
    text = string.Template(ONE_STEP).substitute(
        workflow_timeout=f"timeout: {workflow_timeout}" if workflow_timeout else "",
        timeout=timeout,
        service=service,
        kind=target.kind,
        endpoint=endpoints(demo)[service],
        retry=retry,
        breaker=f"circuit_breaker: {breaker}" if breaker else "",
        method=target.method,
        input=target.input,
    )
    return load_string(text, path=f"one-{service}")


class Events(list[Event]):
    """Collects an execution's events (pass the instance as ``on_event``)."""

    def of(self, kind: type[E]) -> list[E]:
        """The events of type ``kind``, in order."""
        return [e for e in self if isinstance(e, kind)]

    def steps(self, kind: type[Any]) -> list[str]:
        """The ``step_id`` of each event of type ``kind``, in order."""
        return [e.step_id for e in self.of(kind)]


async def execute(
    engine: Engine,
    workflow: Workflow,
    value: Any,
    *,
    metadata: Sequence[tuple[str, str]] = (),
) -> tuple[ExecutionResult, Events]:
    """Run one execution; return its result and every event it emitted."""
    events = Events()
    result = await engine.execute(workflow, value, metadata=metadata, on_event=events.append)
    return result, events


def only(calls: list[RecordedCall], method: str) -> list[RecordedCall]:
    """The recorded calls of ``method``."""
    return [c for c in calls if c.method == method]


def finished(method: str, count: int = 1) -> Callable[[list[RecordedCall]], bool]:
    """A ``wait_for`` predicate: ``count`` calls of ``method`` have an outcome."""
    return lambda calls: sum(1 for c in only(calls, method) if c.outcome) >= count


def in_flight(method: str) -> Callable[[list[RecordedCall]], bool]:
    """A ``wait_for`` predicate: a call of ``method`` arrived and has no outcome yet."""
    return lambda calls: any(not c.outcome for c in only(calls, method))
