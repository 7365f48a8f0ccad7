"""How the showcase prints an execution, and what it expects of each run.

Events are printed one line each, as they arrive: the time since the call started, the sequence
number, the event kind, the step, the attempt, and what matters for that kind (duration and
output, error, retry delay). The checks return a list of problems, empty when the run behaved as
the walk-through says it will.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from maestro.v1 import gateway_pb2 as pb

from demo.control_client import RecordedCall

OUTPUT_WIDTH = 72
STEP_WIDTH = 15
"""The width of the step column; the order-lines scenes widen it for paths (``lines[0].reserve``)."""
LINE_WIDTH = 100
"""Where the list of step states in a result wraps."""
STEPS = ("reserve", "charge", "notify", "ship")
REWARD_STEPS = ("enroll", "award", "gift", "upgrade")
LINE_STEPS = (
    "lines[0].reserve",
    "lines[1].reserve",
    "lines[2].reserve",
    "pay.charge",
    "pay.receipt",
    "gift",
    "ship",
    "notify",
)
"""The call steps of an ``order_lines`` run over three lines that succeeds."""
UNDONE_LINE_STEPS = frozenset(LINE_STEPS) - {"ship", "notify"}
"""What an ``order_lines`` run whose shipment fails undoes."""


@dataclass
class Outcome:
    """What one ``Execute`` call produced: the events received and how the call ended."""

    events: list[pb.ExecutionEvent] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None

    @property
    def code(self) -> grpc.StatusCode:
        """The RPC status code the stream ended with."""
        return grpc.StatusCode.OK if self.error is None else self.error.code()

    @property
    def result(self) -> pb.ExecutionResult | None:
        """The result carried by the ``finished`` event, when the last event is one."""
        if self.events and self.events[-1].WhichOneof("event") == "finished":
            return self.events[-1].finished.result
        return None

    def kinds(self, step_id: str | None = None) -> list[str]:
        """The event kinds in arrival order (of one step when ``step_id`` is given)."""
        return [
            kind
            for event in self.events
            if (kind := event.WhichOneof("event")) is not None
            and (step_id is None or getattr(_field(event, kind), "step_id", None) == step_id)
        ]


def _field(event: pb.ExecutionEvent, kind: str) -> Any:
    return getattr(event, kind)


def _ms(duration: duration_pb2.Duration) -> str:
    return f"{duration.seconds * 1000 + duration.nanos / 1e6:.1f} ms"


def _plain(value: Any) -> Any:
    # google.protobuf.Value holds numbers as doubles: show 2.0 as 2.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _json(value: Any) -> str:
    value = _plain(value)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= OUTPUT_WIDTH else text[: OUTPUT_WIDTH - 1] + "…"


def _error(error: pb.Error) -> str:
    return f"{error.code}: {error.message}"


def _status_name(status: int) -> str:
    return str(pb.ExecutionStatus.Name(status)).removeprefix("EXECUTION_STATUS_")


def event_line(event: pb.ExecutionEvent, elapsed: float, width: int = STEP_WIDTH) -> str:
    """One readable line for ``event``, received ``elapsed`` seconds into the call.

    ``width`` is that of the step column (the step id or path).
    """
    kind = event.WhichOneof("event") or "?"
    head = f"  {f'+{elapsed:.3f}s':>8}  #{event.sequence:<3} {kind:<23}"
    if kind == "?":
        return head
    body = _field(event, kind)
    if kind == "started":
        return f"{head}{body.workflow}  (execution {event.execution_id})"
    if kind == "recovered":
        return f"{head}{body.reason}"
    if kind == "finished":
        result = body.result
        return f"{head}{_status_name(result.status):<15} after {_ms(result.duration)}"
    text = f"{head}{body.step_id:<{width}}"
    if kind != "step_skipped":
        text += f" attempt {body.attempt}"
    if kind == "step_succeeded":
        output = json_format.MessageToDict(body.output)
        text += f"  {_ms(body.duration)}  → {_json(output)}"
    elif kind == "compensation_succeeded":
        text += f"  {_ms(body.duration)}"
    elif kind == "step_retrying":
        text += f"  {_error(body.error)} — retry in {_ms(body.delay)}"
    elif kind in ("step_failed", "compensation_failed"):
        text += f"  {_error(body.error)}"
    elif kind == "step_skipped":
        text += f" {body.reason}"
    return text


def result_lines(outcome: Outcome) -> list[str]:
    """The result of the execution, as lines: status, output or error, each step's state."""
    result = outcome.result
    if result is None:
        return ["  result: none (no finished event)"]
    lines = [f"  result: {_status_name(result.status)}"]
    if result.status == pb.EXECUTION_STATUS_SUCCEEDED:
        lines.append(f"  output: {json.dumps(_plain(json_format.MessageToDict(result.output)))}")
    else:
        lines.append(f"  error:  step {result.error.step_id!r} {_error(result.error)}")
    steps = ", ".join(
        f"{step.step_id} {pb.StepStatus.Name(step.status).removeprefix('STEP_STATUS_')}"
        for step in result.steps
    )
    lines += textwrap.wrap(
        steps, LINE_WIDTH, initial_indent="  steps:  ", subsequent_indent=" " * 10
    )
    return lines


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc.ErrorInfo detail of a failed call, if it carries one."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # the detailed status disagrees with the call status
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def status_lines(outcome: Outcome) -> list[str]:
    """How the RPC ended: OK, or the code, message and ErrorInfo detail."""
    if outcome.error is None:
        return ["  gRPC status: OK"]
    lines = [f"  gRPC status: {outcome.code.name} {outcome.error.details()!r}"]
    info = error_info(outcome.error)
    if info is not None:
        metadata = ", ".join(f"{k}={v}" for k, v in sorted(info.metadata.items()))
        lines.append(f"  ErrorInfo:   reason={info.reason} domain={info.domain} {metadata}")
    return lines


def _common(outcome: Outcome, label: str) -> list[str]:
    problems = []
    sequence = [event.sequence for event in outcome.events]
    if sequence != list(range(1, len(sequence) + 1)):
        problems.append(f"{label}: sequence numbers {sequence} are not 1..n")
    kinds = outcome.kinds()
    if not kinds or kinds[0] != "started" or outcome.result is None:
        problems.append(f"{label}: expected started … finished, got {kinds}")
    return problems


def check_succeeded(outcome: Outcome, label: str, steps: tuple[str, ...] = STEPS) -> list[str]:
    """Problems with a run expected to succeed with every one of ``steps``."""
    problems = _common(outcome, label)
    result = outcome.result
    if result is not None and result.status != pb.EXECUTION_STATUS_SUCCEEDED:
        problems.append(f"{label}: status {_status_name(result.status)}, expected SUCCEEDED")
    if outcome.code != grpc.StatusCode.OK:
        problems.append(f"{label}: the call ended with {outcome.code.name}, expected OK")
    for step in steps:
        if "step_succeeded" not in outcome.kinds(step):
            problems.append(f"{label}: no step_succeeded for {step}")
    return problems


def check_rewarded(outcome: Outcome, label: str) -> list[str]:
    """Problems with an ``order_rewards`` run expected to succeed and upgrade the member."""
    problems = check_succeeded(outcome, label, REWARD_STEPS)
    result = outcome.result
    if result is not None and result.status == pb.EXECUTION_STATUS_SUCCEEDED:
        output = _plain(json_format.MessageToDict(result.output))
        if output.get("balance") != 1200 or (output.get("tier") or {}).get("tier") != "gold":
            problems.append(f"{label}: output {output}, expected balance 1200 and tier gold")
    return problems


def check_rewards_compensated(outcome: Outcome, label: str) -> list[str]:
    """Problems with an ``order_rewards`` run refused at ``upgrade`` and compensated."""
    problems = _common(outcome, label)
    result = outcome.result
    if result is not None:
        if result.status != pb.EXECUTION_STATUS_COMPENSATED:
            problems.append(f"{label}: status {_status_name(result.status)}, expected COMPENSATED")
        if (result.error.step_id, result.error.code) != ("upgrade", "FAILED_PRECONDITION"):
            problems.append(f"{label}: error {result.error}, expected upgrade FAILED_PRECONDITION")
    if outcome.code != grpc.StatusCode.FAILED_PRECONDITION:
        problems.append(
            f"{label}: the call ended with {outcome.code.name}, not FAILED_PRECONDITION"
        )
    done = [e.step_succeeded.step_id for e in outcome.events if e.HasField("step_succeeded")]
    undone = [
        e.compensation_succeeded.step_id
        for e in outcome.events
        if e.HasField("compensation_succeeded")
    ]
    if undone != list(reversed(done)) or sorted(done) != ["award", "enroll", "gift"]:
        problems.append(f"{label}: compensated {undone}, expected the reverse of {done}")
    return problems


def check_loyalty_calls(calls: list[RecordedCall], label: str) -> list[str]:
    """Problems with what the envelope service received: ids, and undo through Compensate."""
    problems = []
    for call in calls:
        request = call.request if isinstance(call.request, dict) else {}
        step = request.get("step_id", "")
        correlation = f"{request.get('workflow_id', '')}:{step}"
        if not step or request.get("correlation_id") != correlation:
            problems.append(f"{label}: {call.method} arrived without its ids: {request}")
        elif call.metadata.get("correlation-id") != correlation:
            problems.append(f"{label}: {call.method} arrived without correlation-id metadata")
    undone = sorted(c.method for c in calls if c.rpc == "Compensate")
    if undone != ["CancelMembership", "RevokePoints"]:
        problems.append(f"{label}: compensations through Compensate: {undone}")
    return problems


def check_compensated(outcome: Outcome, label: str) -> list[str]:
    """Problems with a run whose ``ship`` step fails and whose other steps are undone."""
    problems = _common(outcome, label)
    result = outcome.result
    if result is not None:
        if result.status != pb.EXECUTION_STATUS_COMPENSATED:
            problems.append(f"{label}: status {_status_name(result.status)}, expected COMPENSATED")
        if (result.error.step_id, result.error.code) != ("ship", "INVALID_ARGUMENT"):
            problems.append(f"{label}: error {result.error}, expected ship INVALID_ARGUMENT")
    if outcome.code != grpc.StatusCode.INVALID_ARGUMENT:
        problems.append(f"{label}: the call ended with {outcome.code.name}, not INVALID_ARGUMENT")
    elif (info := error_info(outcome.error)) is None or info.reason != "INVALID_ARGUMENT":
        problems.append(f"{label}: no ErrorInfo with reason INVALID_ARGUMENT")
    done = [e.step_succeeded.step_id for e in outcome.events if e.HasField("step_succeeded")]
    undone = [
        e.compensation_succeeded.step_id
        for e in outcome.events
        if e.HasField("compensation_succeeded")
    ]
    if undone != list(reversed(done)):
        problems.append(f"{label}: compensated {undone}, expected the reverse of {done}")
    return problems


def check_recovered(
    outcome: Outcome, label: str, received: int, shown: str, show_code: int
) -> list[str]:
    """Problems with a run killed in the middle of ``ship`` and finished by the next gateway."""
    problems = check_succeeded(outcome, label)
    if outcome.kinds().count("recovered") != 1:
        problems.append(f"{label}: expected one recovered event, got {outcome.kinds()}")
    retried = [e.step_retrying for e in outcome.events if e.HasField("step_retrying")]
    if [(r.step_id, r.error.code) for r in retried] != [("ship", "UNAVAILABLE")]:
        problems.append(f"{label}: expected ship's interrupted attempt to be retried once")
    if received != 2:
        problems.append(f"{label}: shipping received CreateShipment {received} times, expected 2")
    if show_code != 0 or "SUCCEEDED" not in shown:
        problems.append(f"{label}: maestro executions show exited {show_code}: {shown[-200:]}")
    return problems


def check_retried(outcome: Outcome, label: str, **retries: int) -> list[str]:
    """Problems with a run expected to succeed after ``retries[step]`` retries of each step."""
    problems = check_succeeded(outcome, label)
    seen = Counter(e.step_retrying.step_id for e in outcome.events if e.HasField("step_retrying"))
    if dict(seen) != retries:
        problems.append(f"{label}: retries {dict(seen)}, expected {retries}")
    return problems


def _succeeded(outcome: Outcome) -> list[str]:
    return [e.step_succeeded.step_id for e in outcome.events if e.HasField("step_succeeded")]


def _outputs(outcome: Outcome) -> dict[str, Any]:
    """Each succeeded step's output, by step id (or path)."""
    return {
        e.step_succeeded.step_id: json_format.MessageToDict(e.step_succeeded.output)
        for e in outcome.events
        if e.HasField("step_succeeded")
    }


def _undone(outcome: Outcome) -> list[str]:
    return [
        e.compensation_succeeded.step_id
        for e in outcome.events
        if e.HasField("compensation_succeeded")
    ]


def check_lines_succeeded(outcome: Outcome, label: str, lines: int = 3) -> list[str]:
    """Problems with an ``order_lines`` run over ``lines`` order lines expected to succeed.

    Every call step succeeds under its path (``lines[1].reserve``, ``pay.charge``), the review
    branch is skipped, and the output lists the reservations in line order.
    """
    steps = tuple(f"lines[{i}].reserve" for i in range(lines)) + LINE_STEPS[3:]
    problems = check_succeeded(outcome, label, steps)
    if outcome.kinds("review") != ["step_skipped"]:
        problems.append(f"{label}: review: {outcome.kinds('review')}, expected step_skipped")
    outputs = _outputs(outcome)
    in_order = [outputs.get(f"lines[{i}].reserve", {}).get("id") for i in range(lines)]
    result = outcome.result
    if result is not None and result.status == pb.EXECUTION_STATUS_SUCCEEDED:
        output = json_format.MessageToDict(result.output)
        if output.get("reservations") != in_order:
            problems.append(
                f"{label}: reservations {output.get('reservations')}, expected {in_order}"
            )
    return problems


def check_lines_compensated(
    outcome: Outcome, label: str, inventory: list[RecordedCall], payments: list[RecordedCall]
) -> list[str]:
    """Problems with an ``order_lines`` run whose shipment fails: all undone, newest first.

    The compensations are the reverse of the completions (each line's reservation, the
    payment's receipt and charge inside the sub-workflow, the gift); inventory released the
    reservations in that order, and payments refunded the charge.
    """
    problems = _common(outcome, label)
    result = outcome.result
    if result is not None:
        if result.status != pb.EXECUTION_STATUS_COMPENSATED:
            problems.append(f"{label}: status {_status_name(result.status)}, expected COMPENSATED")
        if (result.error.step_id, result.error.code) != ("ship", "FAILED_PRECONDITION"):
            problems.append(f"{label}: error {result.error}, expected ship FAILED_PRECONDITION")
    if outcome.code != grpc.StatusCode.FAILED_PRECONDITION:
        problems.append(
            f"{label}: the call ended with {outcome.code.name}, not FAILED_PRECONDITION"
        )
    done = [step for step in _succeeded(outcome) if step in UNDONE_LINE_STEPS]
    undone = _undone(outcome)
    if undone != list(reversed(done)) or set(undone) != UNDONE_LINE_STEPS:
        problems.append(f"{label}: compensated {undone}, expected the reverse of {done}")
    outputs = _outputs(outcome)
    newest_first = [
        outputs[step].get("id")
        for step in reversed(done)
        if step == "gift" or step.startswith("lines[")
    ]
    released = [c.request.get("reservation_id") for c in inventory if c.method == "Release"]
    if released != newest_first:
        problems.append(f"{label}: inventory released {released}, expected {newest_first}")
    if [c.method for c in payments] != ["Charge", "Refund"]:
        problems.append(f"{label}: payments received {[c.method for c in payments]}")
    return problems


PAY_STEPS = ("charge", "paid")
FULFIL_STEPS = ("reserve", "packed", "ship", "shipped")


@dataclass
class SignalsRun:
    """What scene 8 saw: pay_order's run, the fulfilment it triggered, what ``maestro signals``
    printed, and what the services received."""

    order_id: str
    paid: Outcome = field(default_factory=Outcome)
    fulfilment: Outcome = field(default_factory=Outcome)
    signal_id: str = ""
    triggered_by: str = ""
    sent: str = ""
    """``maestro signals send parcel.packed``'s output."""
    duplicate: str = ""
    """``maestro signals send order.paid`` with the emitted signal's id."""
    webhook: str = ""
    """``maestro signals send order.paid`` with another id, for the same order."""
    executions: list[str] = field(default_factory=list)
    """The executions of ``fulfil``."""
    reserved: int = 0
    """The Reserve calls inventory received for the order."""
    lineage: str = ""
    lineage_code: int = 0

    def output(self) -> dict[str, Any]:
        """pay_order's output (empty unless it succeeded)."""
        result = self.paid.result
        if result is None or result.status != pb.EXECUTION_STATUS_SUCCEEDED:
            return {}
        output: dict[str, Any] = json_format.MessageToDict(result.output)
        return output

    def emitted(self) -> dict[str, Any]:
        """The params of the signal pay_order emitted (its ``paid`` step's output)."""
        outputs = _outputs(self.paid)
        params = _plain(outputs.get("paid", {}).get("params", {}))
        return params if isinstance(params, dict) else {}


def check_signals(run: SignalsRun, label: str) -> list[str]:
    """Problems with scene 8: the emitted signal started one fulfilment, which the signal sent
    to it woke; the repeated deliveries started nothing; the lineage reaches order.shipped."""
    problems = check_succeeded(run.paid, f"{label} (pay_order)", PAY_STEPS)
    problems += check_succeeded(run.fulfilment, f"{label} (fulfil)", FULFIL_STEPS)
    paid = f"pay-{run.order_id}.paid"
    fulfilment = f"fulfil:{run.order_id}"
    if run.signal_id != paid or run.triggered_by != paid:
        problems.append(
            f"{label}: signal {run.signal_id!r}, triggered_by {run.triggered_by!r}; expected {paid}"
        )
    if f"signal packed-{run.order_id} parcel.packed\n  woke {fulfilment}" not in run.sent:
        problems.append(f"{label}: maestro signals send parcel.packed said {run.sent!r}")
    if "(duplicate: received before" not in run.duplicate or fulfilment not in run.duplicate:
        problems.append(f"{label}: the repeated signal was not a duplicate: {run.duplicate!r}")
    if "duplicate" in run.webhook or f"triggered {fulfilment}" not in run.webhook:
        problems.append(f"{label}: the webhook's signal did not dedup onto {fulfilment}")
    if run.executions != [fulfilment] or run.reserved != 1:
        problems.append(
            f"{label}: executions of fulfil {run.executions}, inventory Reserve ×{run.reserved}; "
            f"expected one of each"
        )
    expected = [
        f"execution pay-{run.order_id} (step paid)",
        f"└─ signal order.paid {paid} ",
        f"└─ triggered execution {fulfilment}",
        f"└─ signal order.shipped {fulfilment}.shipped ",
    ]
    lines = iter(run.lineage.splitlines())
    missing = [part for part in expected if not any(part in line for line in lines)]
    if run.lineage_code != 0 or missing:
        problems.append(f"{label}: maestro signals show exited {run.lineage_code}, lacks {missing}")
    return problems
