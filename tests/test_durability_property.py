"""Property: killed anywhere and restarted on its journal, an execution ends as the rules say.

Hypothesis draws a plan: a workflow over the four demo services (2–5 entries, each a call step or
a parallel group of 2–3; every step with its own retry policy, attempts 1–3, and most with their
compensation, as in workflows/checkout.yaml), an optional permanent fault (every call of one of
the workflow's methods fails FAILED_PRECONDITION), an optional slow method (its calls are held
150 ms, so that kills find calls in flight at the services, not only intents not yet sent) and a
kill point. The kill is either ``MAESTRO_FAULT_KILL_AFTER_EVENT=N`` (the journal writer SIGKILLs
its own process right after committing the group holding event ``N``, 0 the record; a high ``N``
may mean no kill at all) or, with a slow method, a SIGKILL from outside while one of its calls is
held. A real ``maestro serve`` on a fresh SQLite journal runs the plan, then a second one on the
same journal, without the variable, re-sends ``Start`` (it attaches) and finishes it.

The checks use only what a client sees — the events (``WatchExecution``), the ``Execution`` and
the calls each demo service recorded (every call carries ``x-demo-step: <step id>``) — against
DESIGN §4 and §10, never against the implementation:

- the execution finishes; its events are numbered 1..n, ``started`` first, ``finished`` last,
  ``recovered`` at most once, only after a kill and after the event the kill followed; a watch
  resumed halfway misses nothing; GetExecution and ``finished`` carry the same result;
- an attempt in flight at the kill counts as failed with UNAVAILABLE ("the gateway stopped during
  this call"): retried when attempts are left, failing the step (or the compensation) when not;
  nothing else is reported interrupted and nothing in flight is lost;
- a step is received at most ``attempts`` times and never more often than its intents; one that
  succeeded before the kill is not called again;
- a compensation runs only for a step that succeeded, at most once more than it was interrupted,
  one at a time and in reverse order of completion across the restart;
- the final status and its cause are those the plan implies: SUCCEEDED without a fault or an
  interrupted step without attempts left; else FAILED when nothing needed undoing, COMPENSATED
  when every needed compensation succeeded (with an OK call), COMPENSATION_FAILED only for an
  interrupted compensation without attempts left; each step's result agrees with its events.

``MAESTRO_PROPERTY_EXAMPLES`` raises the number of plans (8, about 10 s) to hunt for bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from demo.control_client import ControlClient, RecordedCall
from demo.gateway import GatewayProcess, retarget, start_gateway
from demo.harness import DEFAULT_PORTS, DemoServices

pytestmark = pytest.mark.asyncio(loop_scope="module")

KILL_AFTER_EVENT = "MAESTRO_FAULT_KILL_AFTER_EVENT"
INTERRUPTED = "the gateway stopped during this call"
FINISH_WITHIN = 30.0
EXIT_WITHIN = 10.0
STEP_HEADER = "x-demo-step"
SLOW_MS = 150
EXAMPLES = int(os.environ.get("MAESTRO_PROPERTY_EXAMPLES", "8"))

INPUT: dict[str, Any] = {
    "order_id": "P-1",
    "sku": "sku-1",
    "qty": 1,
    "amount": 1250,
    "address": "1 Main Street",
    "email": "ada@example.com",
}
STATUS = pb.ExecutionStatus


@dataclass(frozen=True, slots=True)
class Kind:
    """A call of one demo service and its compensation, as in workflows/checkout.yaml.

    ``OUT`` in the compensation stands for the step's output name.
    """

    service: str
    method: str
    input: dict[str, Any]
    undo_method: str
    undo_input: dict[str, Any] | None
    call: str
    """The method name the demo service records for the call (and faults match)."""
    undo: str
    """The method name the demo service records for the compensation."""


KINDS: dict[str, Kind] = {
    "reserve": Kind(
        "inventory",
        "shop.v1.Inventory/Reserve",
        {
            "order_id": "{{ input.order_id }}",
            "sku": "{{ input.sku }}",
            "qty": "{{ input.qty }}",
        },
        "shop.v1.Inventory/Release",
        {"reservation_id": "{{ OUT.id }}"},
        "Reserve",
        "Release",
    ),
    "charge": Kind(
        "payments",
        "shop.v1.Payments/Charge",
        {"order_id": "{{ input.order_id }}", "amount": "{{ input.amount }}", "currency": "EUR"},
        "shop.v1.Payments/Refund",
        {
            "payment_id": "{{ OUT.id }}",
            "reason": "rollback after {{ error.step_id }} failed: {{ error.code }}",
        },
        "Charge",
        "Refund",
    ),
    "notify": Kind(
        "mailer",
        "POST /orders/{{ input.order_id }}/mail",
        {"to": "{{ input.email }}", "subject": "Order {{ input.order_id }} confirmed"},
        "DELETE /orders/{{ input.order_id }}/mail/{{ OUT.message_id }}",
        None,
        "SendMail",
        "RecallMail",
    ),
    "ship": Kind(
        "shipping",
        "shop.v1.Shipping/CreateShipment",
        {
            "order_id": "{{ input.order_id }}",
            "reservation_id": "res-0",
            "address": "{{ input.address }}",
        },
        "shop.v1.Shipping/CancelShipment",
        {"shipment_id": "{{ OUT.id }}"},
        "CreateShipment",
        "CancelShipment",
    ),
}
SERVICES: dict[str, dict[str, Any]] = {
    "inventory": {"type": "grpc", "endpoint": f"127.0.0.1:{DEFAULT_PORTS['inventory']}"},
    "payments": {"type": "grpc", "endpoint": f"127.0.0.1:{DEFAULT_PORTS['payments']}"},
    "shipping": {"type": "grpc", "endpoint": f"127.0.0.1:{DEFAULT_PORTS['shipping']}"},
    "mailer": {"type": "http", "endpoint": f"http://127.0.0.1:{DEFAULT_PORTS['mailer']}"},
}


@dataclass(frozen=True, slots=True)
class Step:
    """One call step of a drawn workflow."""

    id: str
    kind: str
    attempts: int
    compensated: bool

    def definition(self) -> dict[str, Any]:
        """The step as workflow YAML data; its output is named ``o_<id>``."""
        kind = KINDS[self.kind]
        out = f"o_{self.id}"
        step: dict[str, Any] = {
            "id": self.id,
            "service": kind.service,
            "method": kind.method,
            "input": kind.input,
            "output": out,
            "retry": {"attempts": self.attempts, "initial": "10ms", "jitter": False},
            "metadata": {STEP_HEADER: self.id},
        }
        if self.compensated:
            compensate: dict[str, Any] = {
                "method": kind.undo_method.replace("OUT", out),
                "metadata": {STEP_HEADER: self.id},
            }
            if kind.undo_input is not None:
                compensate["input"] = {
                    key: value.replace("OUT", out) for key, value in kind.undo_input.items()
                }
            step["compensate"] = compensate
        return step


@dataclass(frozen=True, slots=True)
class Group:
    """A parallel group of a drawn workflow."""

    id: str
    children: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """One drawn example: the workflow, the permanent fault (a recorded method) and the kill."""

    entries: tuple[Step | Group, ...]
    fault: str | None
    slow: str | None
    """A recorded method (call or compensation) every call of which is held for :data:`SLOW_MS`,
    so that a kill finds calls in flight at the service, not only intents not yet sent."""
    kill_after: int | None
    """Kill right after event N is committed (0: the record); None: kill from outside (SIGKILL)
    while a call of the slow method is held at its service."""

    @property
    def steps(self) -> dict[str, Step]:
        """Every call step by id, in file order."""
        out: dict[str, Step] = {}
        for entry in self.entries:
            for step in entry.children if isinstance(entry, Group) else (entry,):
                out[step.id] = step
        return out

    def workflow(self) -> str:
        """The workflow YAML, at the demo's default ports (see :func:`retarget`)."""
        entries: list[dict[str, Any]] = [
            {"id": e.id, "parallel": [c.definition() for c in e.children]}
            if isinstance(e, Group)
            else e.definition()
            for e in self.entries
        ]
        document = {
            "name": "prop",
            "timeout": "30s",
            "compensation_timeout": "30s",
            "services": SERVICES,
            "steps": entries,
        }
        return yaml.safe_dump(document, sort_keys=False)

    def __str__(self) -> str:
        def show(step: Step) -> str:
            undo = "+undo" if step.compensated else ""
            return f"{step.id}:{step.kind}×{step.attempts}{undo}"

        parts = [
            "(" + " ‖ ".join(show(c) for c in e.children) + ")" if isinstance(e, Group) else show(e)
            for e in self.entries
        ]
        return (
            f"{' → '.join(parts)}; fault={self.fault}; slow={self.slow}; "
            f"kill_after={self.kill_after}"
        )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """A workflow of 2–5 entries over the demo services, a fault plan and a kill point."""
    numbers = itertools.count(1)

    def step() -> Step:
        return Step(
            id=f"s{next(numbers)}",
            kind=draw(st.sampled_from(sorted(KINDS))),
            attempts=draw(st.integers(1, 3)),
            compensated=draw(st.sampled_from([True, True, False])),
        )

    entries: list[Step | Group] = []
    for index in range(draw(st.integers(2, 5))):
        if draw(st.booleans()):
            entries.append(
                Group(f"g{index + 1}", tuple(step() for _ in range(draw(st.integers(2, 3)))))
            )
        else:
            entries.append(step())
    plan = Plan(tuple(entries), None, None, 0)
    kinds = [KINDS[s.kind] for s in plan.steps.values()]
    calls = sorted({k.call for k in kinds})
    undos = sorted(
        {k.undo for k, s in zip(kinds, plan.steps.values(), strict=True) if s.compensated}
    )
    fault = draw(st.none() | st.sampled_from(calls))
    slow = draw(st.none() | st.sampled_from(calls + undos))
    held = slow is not None and draw(st.sampled_from([False, False, True]))
    return Plan(plan.entries, fault, slow, None if held else draw(st.integers(0, 25)))


@dataclass(frozen=True, slots=True)
class Flat:
    """One event, flattened for the checks."""

    sequence: int
    kind: str
    step_id: str
    attempt: int
    code: str
    message: str

    @property
    def interrupted(self) -> bool:
        """The event reports an attempt that was in flight when the gateway stopped."""
        return self.code == "UNAVAILABLE" and INTERRUPTED in self.message


def flatten(event: pb.ExecutionEvent) -> Flat:
    kind = str(event.WhichOneof("event"))
    body = getattr(event, kind)
    error = getattr(body, "error", None)
    return Flat(
        event.sequence,
        kind,
        getattr(body, "step_id", ""),
        getattr(body, "attempt", 0),
        error.code if error is not None else "",
        error.message if error is not None else "",
    )


@dataclass
class Run:
    """What one example observed."""

    killed: bool
    held: RecordedCall | None
    """The call in flight at its service when the gateway was killed from outside."""
    execution: pb.Execution
    events: list[Flat]
    received: list[RecordedCall]
    streamed: pb.ExecutionResult
    """The result carried by the ``finished`` event."""

    def transcript(self) -> str:
        held = "" if self.held is None else f" held={self.held.method}@{self.held.metadata}"
        lines = [f"killed={self.killed}{held} status={STATUS.Name(self.execution.status)}"]
        lines += [
            f"  {e.sequence:>3} {e.kind} {e.step_id} #{e.attempt} {e.code} {e.message}".rstrip()
            for e in self.events
        ]
        lines += [
            f"  call {c.metadata.get(STEP_HEADER, '?')} {c.method} → {c.outcome or 'in flight'}"
            for c in self.received
        ]
        return "\n".join(lines)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


@contextlib.asynccontextmanager
async def gateway_stub(gateway: GatewayProcess) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


async def first_run(
    gateway: GatewayProcess,
    request: pb.ExecuteRequest,
    held: tuple[ControlClient, str] | None = None,
) -> tuple[bool, RecordedCall | None]:
    """Start the execution, wait until it finished or the gateway died.

    Args:
        held: A service and a method: SIGKILL the gateway as soon as a call of that method is in
            flight there (when none comes before the execution finishes, there is no kill).

    Returns:
        Whether the gateway was killed, and the held call it was killed under.
    """
    in_flight: RecordedCall | None = None
    async with gateway_stub(gateway) as stub:
        try:
            await stub.Start(request, timeout=10)
        except grpc.aio.AioRpcError:
            # Only a dying gateway may refuse: wait for it, its exit status tells below.
            async with asyncio.timeout(EXIT_WITHIN):
                await gateway.process.wait()
        async with asyncio.timeout(FINISH_WITHIN):
            while gateway.process.returncode is None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    execution = await stub.GetExecution(
                        pb.GetExecutionRequest(execution_id=request.execution_id), timeout=5
                    )
                    if execution.HasField("end_time"):
                        break
                if held is not None:
                    control, method = held
                    calls = await control.calls()
                    in_flight = next(
                        (c for c in calls if c.method == method and not c.outcome), None
                    )
                    if in_flight is not None:
                        gateway.process.send_signal(signal.SIGKILL)
                        await gateway.process.wait()
                        break
                await asyncio.sleep(0.02)
    return await gateway.stop() == -signal.SIGKILL, in_flight


async def second_run(
    gateway: GatewayProcess, request: pb.ExecuteRequest
) -> tuple[pb.Execution, list[pb.ExecutionEvent]]:
    """Re-send ``Start`` (it attaches), poll until the execution finished (bounded).

    Returns:
        The execution and every event it emitted (checked against a watch that resumes halfway).
    """
    execution_id = request.execution_id
    async with gateway_stub(gateway) as stub:
        again = await stub.Start(request, timeout=10)
        assert again.execution_id == execution_id, "the same id did not attach"
        async with asyncio.timeout(FINISH_WITHIN):
            while True:
                execution = await stub.GetExecution(
                    pb.GetExecutionRequest(execution_id=execution_id), timeout=5
                )
                if execution.HasField("end_time"):
                    break
                await asyncio.sleep(0.05)
        watch = stub.WatchExecution(pb.WatchExecutionRequest(execution_id=execution_id), timeout=10)
        events = [event async for event in watch]
        half = len(events) // 2
        rewatch = stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id, after_sequence=half), timeout=10
        )
        assert [event async for event in rewatch] == events[half:], "a resumed watch differs"
    return execution, events


def service_of(method: str) -> str:
    """The demo service that records ``method``."""
    return next(k.service for k in KINDS.values() if method in (k.call, k.undo))


def write_workflow(directory: Path, plan: Plan, addresses: dict[str, str]) -> Path:
    """Write the plan's workflow, pointed at ``addresses``; return the ``--workflows`` dir."""
    workflows = directory / "workflows"
    workflows.mkdir()
    (workflows / "prop.yaml").write_text(retarget(plan.workflow(), addresses))
    return workflows


async def run_plan(demo: DemoServices, plan: Plan) -> Run:
    """Run ``plan`` through a gateway killed at its event, then a second one; observe the end."""
    await demo.reset()
    for method in {plan.fault, plan.slow} - {None}:
        await demo[service_of(str(method))].control.add_fault(
            method=str(method),
            code="FAILED_PRECONDITION" if method == plan.fault else "",
            delay_ms=SLOW_MS if method == plan.slow else 0,
            times=1000,
        )
    addresses = {endpoint.name: endpoint.address for endpoint in demo.all()}
    request = pb.ExecuteRequest(workflow="prop", input=struct(INPUT), execution_id="prop-1")
    with tempfile.TemporaryDirectory(prefix="maestro-property-") as scratch:
        workflows = write_workflow(Path(scratch), plan, addresses)
        journal = ["--journal", str(Path(scratch, "journal.db"))]
        env = {} if plan.kill_after is None else {KILL_AFTER_EVENT: str(plan.kill_after)}
        held = None
        if plan.kill_after is None and plan.slow is not None:
            held = (demo[service_of(plan.slow)].control, plan.slow)
        first = await start_gateway(workflows, extra=journal, env=env)
        try:
            killed, held_call = await first_run(first, request, held)
        finally:
            await first.stop()
        second = await start_gateway(workflows, extra=journal)
        try:
            execution, events = await second_run(second, request)
        finally:
            await second.stop()
    received = [call for endpoint in demo.all() for call in await endpoint.control.calls()]
    streamed = events[-1].finished.result if events else pb.ExecutionResult()
    flat = [flatten(e) for e in events]
    return Run(killed, held_call, execution, flat, received, streamed)


@dataclass(frozen=True, slots=True)
class History:
    """The events split around ``recovered``, and what they say about each step."""

    recovered_at: int | None
    before: list[Flat]
    after: list[Flat]
    succeeded: dict[str, Flat]
    failed: dict[str, Flat]
    undone: set[str]
    """Steps whose compensation succeeded."""

    @classmethod
    def of(cls, events: Sequence[Flat]) -> History:
        recovered_at = next((e.sequence for e in events if e.kind == "recovered"), None)
        cut = recovered_at if recovered_at is not None else len(events) + 1
        return cls(
            recovered_at,
            [e for e in events if e.sequence < cut],
            [e for e in events if e.sequence > cut],
            {e.step_id: e for e in events if e.kind == "step_succeeded"},
            {e.step_id: e for e in events if e.kind == "step_failed"},
            {e.step_id for e in events if e.kind == "compensation_succeeded"},
        )


@dataclass(frozen=True, slots=True)
class Interruptions:
    """Attempts in flight at the kill, by step id: how each was resumed."""

    steps: dict[str, Flat]
    """The first event of the step after ``recovered``."""
    undos: dict[str, Flat]
    """The first compensation event of the step after ``recovered``."""
    interrupted: set[str]
    """Steps whose in-flight attempt was reported interrupted."""
    undos_interrupted: set[str]
    """Steps whose in-flight compensation attempt counted as failed (retried or not)."""


def check(plan: Plan, run: Run) -> None:
    """Assert every rule of DESIGN §4 and §10 that ``run`` can be held to."""
    history = check_history(plan, run)
    interruptions = check_interruptions(plan, run, history)
    check_calls(plan, run, history, interruptions)
    check_rollback(plan, run, history)
    check_outcome(plan, run, history, interruptions)
    check_results(plan, run, history)


def check_history(plan: Plan, run: Run) -> History:
    """The execution finished; its events are whole and in order; the kill is where it was set."""
    events = run.events
    kinds = [e.kind for e in events]
    assert run.execution.HasField("end_time"), "the execution did not finish"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)), "sequence gap"
    assert kinds[0] == "started", "the first event is not `started`"
    assert kinds[-1] == "finished", "the last event is not `finished`"
    assert kinds.count("started") == kinds.count("finished") == 1
    assert kinds.count("recovered") <= 1, "recovered more than once"
    assert run.execution.last_sequence == len(events)
    assert run.execution.status == run.execution.result.status
    assert run.streamed == run.execution.result, "GetExecution and `finished` disagree"
    steps = plan.steps
    for e in events:
        if e.step_id:
            assert e.step_id in steps, f"an event of an unknown step: {e}"
        if e.kind in ("step_started", "compensation_started"):
            assert 1 <= e.attempt <= steps[e.step_id].attempts, (
                f"{e.kind} {e.step_id}: attempt {e.attempt} of {steps[e.step_id].attempts}"
            )

    # Without a kill nothing is recovered. A kill at event N happened exactly when N (or, for 0,
    # the record) was committed, and what was committed before it survived: `recovered` comes
    # after it. A kill from outside under a held call found the execution running.
    history = History.of(events)
    recovered_at = history.recovered_at
    if not run.killed:
        assert recovered_at is None, "`recovered` without a kill"
        if plan.kill_after is not None:
            assert plan.kill_after != 0, "the record was committed but the gateway was not killed"
            assert plan.kill_after > len(events), (
                f"event {plan.kill_after} was committed but the gateway was not killed"
            )
    elif plan.kill_after is not None:
        assert plan.kill_after == 0 or plan.kill_after <= len(events), (
            f"killed after event {plan.kill_after}, but the journal holds only {len(events)}"
        )
        if recovered_at is not None:
            assert recovered_at > plan.kill_after, (
                f"`recovered` is event {recovered_at}, but event {plan.kill_after} "
                "was committed before the kill"
            )
    else:
        assert recovered_at is not None, "killed while a call was held, but never recovered"
    assert not set(history.succeeded) & set(history.failed), "a step succeeded and failed"
    return history


def check_interruptions(plan: Plan, run: Run, history: History) -> Interruptions:
    """An attempt in flight at the kill counts as failed with UNAVAILABLE, retried if it can be.

    A step reports it once, after ``recovered``: ``step_retrying`` when attempts are left,
    ``step_failed`` when not. A compensation has no retrying event (a failed attempt is followed
    by the next ``compensation_started``, restart or not); without attempts left it reports
    ``compensation_failed``. Nothing in flight is lost, and nothing else is reported interrupted.
    """
    steps = plan.steps
    open_steps = _in_flight(
        history.before, "step_started", ("step_succeeded", "step_retrying", "step_failed")
    )
    open_undos = _in_flight(
        history.before, "compensation_started", ("compensation_succeeded", "compensation_failed")
    )
    assert not any(e.interrupted for e in history.before), "interrupted before `recovered`"
    for e in history.after:
        if e.interrupted:
            undo = e.kind.startswith("compensation")
            assert e.kind in ("step_retrying", "step_failed", "compensation_failed"), e.kind
            assert (open_undos if undo else open_steps).get(e.step_id) == e.attempt, (
                f"{e.kind} {e.step_id} #{e.attempt} reported interrupted, but it was not in flight"
            )
    if history.recovered_at is None:  # finished at the kill: nothing was left in flight
        assert not any(e.interrupted for e in run.events), "interrupted without `recovered`"
        return Interruptions({}, {}, set(), set())

    resumed: dict[str, Flat] = {}
    interrupted: set[str] = set()
    for step_id, attempt in open_steps.items():
        limit = steps[step_id].attempts
        first = _first(history.after, step_id, "step_")
        assert first is not None, f"{step_id} was in flight at the kill and never ended"
        assert first.attempt == attempt, f"{step_id}: attempt {attempt} in flight, then {first}"
        resumed[step_id] = first
        if first.interrupted:
            interrupted.add(step_id)
            expected = "step_retrying" if attempt < limit else "step_failed"
            assert first.kind == expected, (
                f"{step_id}: interrupted attempt {attempt} of {limit} reported as {first.kind}, "
                f"the rule says {expected}"
            )
    undos: dict[str, Flat] = {}
    undos_interrupted: set[str] = set()
    for step_id, attempt in open_undos.items():
        limit = steps[step_id].attempts
        first = _first(history.after, step_id, "compensation_")
        assert first is not None, f"the compensation of {step_id} was lost to the restart"
        undos[step_id] = first
        if first.kind == "compensation_started":
            undos_interrupted.add(step_id)
            assert (first.attempt, attempt < limit) == (attempt + 1, True), (
                f"the compensation of {step_id}: attempt {attempt} of {limit} interrupted, "
                f"then attempt {first.attempt} started"
            )
        else:
            assert first.attempt == attempt, f"{step_id}: compensation #{attempt}, then {first}"
            if first.interrupted:
                undos_interrupted.add(step_id)
                assert attempt == limit, (
                    f"the compensation of {step_id}: interrupted attempt {attempt} of {limit} "
                    "was not retried"
                )

    if run.held is not None:
        # The call held at its service when the gateway died had its intent and no outcome (in
        # a parallel group its cancel may have been committed just before the kill).
        held = run.held.metadata.get(STEP_HEADER, "")
        if run.held.method == KINDS[steps[held].kind].undo:
            assert held not in undos or held in undos_interrupted, (
                f"the compensation of {held} was held at the kill, then {undos[held]}"
            )
        else:
            assert (
                held not in resumed or held in interrupted or resumed[held].code == "CANCELLED"
            ), f"{held} was held at the kill, then {resumed[held]}"
    return Interruptions(resumed, undos, interrupted, undos_interrupted)


def check_calls(plan: Plan, run: Run, history: History, interruptions: Interruptions) -> None:
    """What the services received, per step (``x-demo-step``), against the steps' policies."""
    steps = plan.steps
    intents = Counter(e.step_id for e in run.events if e.kind == "step_started")
    calls: dict[str, list[RecordedCall]] = {step_id: [] for step_id in steps}
    undos: dict[str, list[RecordedCall]] = {step_id: [] for step_id in steps}
    for call in run.received:
        step_id = call.metadata.get(STEP_HEADER, "")
        assert step_id in steps, f"a call of no known step: {call}"
        kind = KINDS[steps[step_id].kind]
        assert call.method in (kind.call, kind.undo), f"{step_id} received {call.method}"
        (calls if call.method == kind.call else undos)[step_id].append(call)
    for step_id, step in steps.items():
        received = len(calls[step_id])
        assert received <= step.attempts, f"{step_id}: {received} calls, attempts {step.attempts}"
        assert received <= intents[step_id], (
            f"{step_id}: {received} calls but {intents[step_id]} intents"
        )
        done = history.succeeded.get(step_id)
        if done is not None:
            assert any(c.outcome == "OK" for c in calls[step_id]), f"{step_id}: no OK call"
            if history.recovered_at is None or done.sequence < history.recovered_at:
                assert received == done.attempt, (
                    f"{step_id} succeeded (attempt {done.attempt}) before the kill, "
                    f"but was received {received} times"
                )
        undone = len(undos[step_id])
        allowed = 1 + (step_id in interruptions.undos_interrupted)
        assert undone <= allowed, f"{step_id}: compensated {undone} times, at most {allowed}"
        if undone:
            assert step.compensated, f"{step_id} declares no compensation but had one"
            assert done is not None, f"{step_id} was compensated but did not succeed"
        if step_id in history.undone:
            assert any(c.outcome == "OK" for c in undos[step_id]), (
                f"the compensation of {step_id} succeeded without an OK call"
            )


def check_rollback(plan: Plan, run: Run, history: History) -> None:
    """Compensations run one at a time, in reverse order of completion, restart or not (§4)."""
    steps = plan.steps
    completed = [e.step_id for e in run.events if e.kind == "step_succeeded"]
    undo_order: list[str] = []
    running: str | None = None
    for e in run.events:
        if e.kind == "recovered":
            running = None  # the interrupted attempt is resumed below
        elif e.kind == "compensation_started":
            assert running in (None, e.step_id), (
                f"the compensation of {e.step_id} started while {running}'s was running"
            )
            running = e.step_id
            if e.step_id not in undo_order:
                undo_order.append(e.step_id)
        elif e.kind in ("compensation_succeeded", "compensation_failed"):
            running = None
    expected = [s for s in reversed(completed) if steps[s].compensated]
    if undo_order:
        assert undo_order == expected, (
            f"compensations ran in the order {undo_order}, the completions say {expected}"
        )


def check_outcome(plan: Plan, run: Run, history: History, interruptions: Interruptions) -> None:
    """The final status and its cause are those the fault plan and the interruptions imply."""
    steps = plan.steps
    result = run.execution.result
    exhausted = {
        s for s in interruptions.interrupted if interruptions.steps[s].kind == "step_failed"
    }
    needs_undo = {s for s in history.succeeded if steps[s].compensated}
    if plan.fault is None and not exhausted:
        expected = STATUS.EXECUTION_STATUS_SUCCEEDED
    elif not needs_undo:
        expected = STATUS.EXECUTION_STATUS_FAILED
    elif needs_undo <= history.undone:
        expected = STATUS.EXECUTION_STATUS_COMPENSATED
    else:
        expected = STATUS.EXECUTION_STATUS_COMPENSATION_FAILED
    assert result.status == expected, (
        f"status {STATUS.Name(result.status)}, the rules say {STATUS.Name(expected)}"
    )
    if result.status == STATUS.EXECUTION_STATUS_SUCCEEDED:
        assert set(history.succeeded) == set(steps), "SUCCEEDED but a step did not succeed"
        assert not any(e.kind.startswith("compensation") for e in run.events)
        undos = {k.undo for k in KINDS.values()}
        assert not [c for c in run.received if c.method in undos], "SUCCEEDED but undone"
        return
    cause = result.error
    assert cause.step_id in history.failed, f"the cause {cause.step_id} has no step_failed"
    assert history.failed[cause.step_id].code == cause.code
    if cause.code == "UNAVAILABLE":
        assert cause.step_id in exhausted, f"{cause.step_id} failed UNAVAILABLE uninterrupted"
    else:
        assert cause.code == "FAILED_PRECONDITION", f"the cause is {cause.code}"
        assert KINDS[steps[cause.step_id].kind].call == plan.fault
    for step_id in needs_undo - history.undone:
        # Only an interrupted compensation without attempts left may fail.
        last = interruptions.undos.get(step_id)
        assert last is not None, f"the compensation of {step_id} failed uninterrupted"
        assert last.kind == "compensation_failed", f"{step_id}: undo failed with attempts left"
        assert last.interrupted, f"{step_id}: undo failed uninterrupted"


def check_results(plan: Plan, run: Run, history: History) -> None:
    """One result per step, in definition order, each where the step's events left it."""
    results = run.execution.result.steps
    assert [r.step_id for r in results] == list(plan.steps)
    last_attempt = {e.step_id: e.attempt for e in run.events if e.kind == "step_started"}
    undo_failed = {e.step_id for e in run.events if e.kind == "compensation_failed"}
    for result in results:
        step_id = result.step_id
        assert result.attempts == last_attempt.get(step_id, 0), (
            f"{step_id}: {result.attempts} attempts in the result, "
            f"{last_attempt.get(step_id, 0)} started"
        )
        if step_id in history.succeeded:
            expected = (
                pb.STEP_STATUS_COMPENSATED
                if step_id in history.undone
                else pb.STEP_STATUS_COMPENSATION_FAILED
                if step_id in undo_failed
                else pb.STEP_STATUS_SUCCEEDED
            )
        elif step_id in history.failed:
            cancelled = history.failed[step_id].code == "CANCELLED"
            expected = pb.STEP_STATUS_CANCELLED if cancelled else pb.STEP_STATUS_FAILED
        else:
            assert step_id not in last_attempt, f"{step_id} started but never ended"
            expected = pb.STEP_STATUS_PENDING
        assert result.status == expected, (
            f"{step_id} is {pb.StepStatus.Name(result.status)} in the result, "
            f"its events say {pb.StepStatus.Name(expected)}"
        )


def _in_flight(events: Sequence[Flat], start: str, ends: Sequence[str]) -> dict[str, int]:
    """Steps whose last ``start`` event has no end in ``events``: step id → attempt."""
    open_: dict[str, int] = {}
    for e in events:
        if e.kind == start:
            open_[e.step_id] = e.attempt
        elif e.kind in ends:
            open_.pop(e.step_id, None)
    return open_


def _first(events: Sequence[Flat], step_id: str, prefix: str) -> Flat | None:
    return next((e for e in events if e.step_id == step_id and e.kind.startswith(prefix)), None)


@pytest.mark.timeout(60 + 20 * EXAMPLES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans())
# Always in the run: killed from outside while Release is held at the service, so the rollback's
# interrupted attempt may have acted and is retried (Release received twice).
@example(
    plan=Plan(
        (Step("s1", "reserve", 2, True), Step("s2", "ship", 1, True)),
        fault="CreateShipment",
        slow="Release",
        kill_after=None,
    )
)
async def test_a_killed_execution_ends_as_the_rules_say(demo: DemoServices, plan: Plan) -> None:
    """Whatever the workflow and the kill point, the restarted gateway ends it by the rules."""
    note(str(plan))
    run = await run_plan(demo, plan)
    note(run.transcript())
    check(plan, run)
