"""The execution engine (DESIGN §4) against a scripted in-memory transport and a fake clock."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from maestro_gateway.codes import Code
from maestro_gateway.engine import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    Engine,
    Event,
    ExecutionFinished,
    ExecutionResult,
    ExecutionStarted,
    ExecutionStatus,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
    result_to_json,
)
from maestro_gateway.errors import CallError
from maestro_gateway.expr import Scope, Template, compile_condition, compile_string, constant
from maestro_gateway.expr import mapping as tmapping
from maestro_gateway.expr import sequence as tsequence
from maestro_gateway.model.types import (
    Call,
    CallStep,
    CircuitBreakerPolicy,
    GrpcMethod,
    HttpMethod,
    ParallelStep,
    RetryPolicy,
    Service,
    Step,
    Workflow,
)
from maestro_gateway.resilience import BreakerRegistry, FakeClock, SystemClock
from maestro_gateway.transports.base import CallInfo, Metadata, Transport

# ---------------------------------------------------------------------------------------------
# A scripted downstream: per-method behaviours, every call recorded.


@dataclass
class Script:
    """What a method does: fail ``fails`` times with ``code``, then answer (or hang forever).

    ``hang_at``: only the call of that number (1-based) hangs.
    """

    result: Any = None
    code: Code = Code.UNAVAILABLE
    fails: float = 0
    retry_after: float | None = None
    hang: bool = False
    barrier: int = 0
    hang_at: int = 0
    calls: int = 0


@dataclass
class Backend:
    """Records calls in order; ``log`` holds ("start"|"end"|"cancel", method) entries."""

    scripts: dict[str, Script] = field(default_factory=dict)
    calls: list[tuple[str, str, Any, float | None, tuple[tuple[str, str], ...]]] = field(
        default_factory=list
    )
    log: list[tuple[str, str]] = field(default_factory=list)
    in_flight: int = 0
    arrived: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, method: str, result: Any = None, **kw: Any) -> Script:
        script = self.scripts[method] = Script(result=result, **kw)
        return script

    def methods(self) -> list[str]:
        return [c[1] for c in self.calls]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class FakeTransport:
    """A Transport over the backend, tagged with its service name."""

    def __init__(self, backend: Backend, service: str) -> None:
        self.backend = backend
        self.service = service

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the Transport protocol's signature
        metadata: Metadata,
        info: CallInfo | None = None,
    ) -> Any:
        b = self.backend
        b.calls.append((self.service, method, request, timeout, tuple(metadata)))
        script = b.scripts.get(method) or Script(result={"echo": request})
        script.calls += 1
        number = script.calls
        b.log.append(("start", method))
        b.in_flight += 1
        b.changed.set()
        try:
            await asyncio.sleep(0)
            if script.barrier:
                b.arrived += 1
                b.changed.set()
                await b.wait_for(lambda: b.arrived >= script.barrier)
            if script.hang or number == script.hang_at:
                await asyncio.Event().wait()
            if script.calls <= script.fails:
                raise CallError(script.code, f"{method} failed", retry_after=script.retry_after)
            result = script.result
            return result(request) if callable(result) else result
        except asyncio.CancelledError:
            b.log.append(("cancel", method))
            raise
        finally:
            b.in_flight -= 1
            b.log.append(("end", method))
            b.changed.set()

    async def close(self) -> None:
        """Nothing to release."""


class FakeTransports:
    """A TransportFactory returning one FakeTransport per service over a shared backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def transport_for(self, service: Service) -> Transport:
        return FakeTransport(self.backend, service.name)

    async def close(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------------------------
# Building workflows with real compiled templates.

OUTPUTS = frozenset({"a", "b", "c", "d", "reservation", "payment", "slow", "fast", "ship"})
SCOPE = Scope(
    names=frozenset({"input", "workflow", "steps", "error"}) | OUTPUTS,
    step_ids=OUTPUTS,
)


def tpl(value: Any) -> Template:
    """Compile a literal: strings may hold {{ }}, dicts render recursively."""
    if isinstance(value, str):
        return compile_string(value, SCOPE)
    if isinstance(value, dict):
        return tmapping({k: tpl(v) for k, v in value.items()})
    if isinstance(value, list):
        return tsequence([tpl(v) for v in value])
    return constant(value)


def service(name: str = "svc", **kw: Any) -> Service:
    return Service(name=name, type="grpc", endpoint=f"{name}:50051", **kw)


SVC = service()


def call(
    method: str,
    input: Any = None,
    *,
    svc: Service = SVC,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    metadata: dict[str, str] | None = None,
) -> Call:
    return Call(
        service=svc,
        method=GrpcMethod(None, method),
        input=tpl(input if input is not None else {}),
        metadata={**svc.metadata, **{k: tpl(v) for k, v in (metadata or {}).items()}},
        timeout=timeout,
        retry=retry or svc.retry,
    )


def step(
    id: str,
    method: str | None = None,
    input: Any = None,
    *,
    undo: Call | None = None,
    when: str | None = None,
    output: str | None = None,
    **kw: Any,
) -> CallStep:
    return CallStep(
        id=id,
        call=call(method or id.capitalize(), input, **kw),
        output=output or id,
        when=compile_condition(when, SCOPE) if when else None,
        compensate=undo,
    )


def workflow(*steps: Step, **kw: Any) -> Workflow:
    return Workflow(name="wf", version="1", steps=steps, **kw)


class Run:
    """One engine over a fresh backend and fake clock; collects events."""

    def __init__(self, clock: Any = None) -> None:
        self.backend = Backend()
        self.clock = clock or FakeClock()
        self.breakers = BreakerRegistry(self.clock)
        self.engine = Engine(
            FakeTransports(self.backend),
            clock=self.clock,
            rng=random.Random(3),
            breakers=self.breakers,
        )
        self.events: list[Event] = []

    async def __call__(self, wf: Workflow, input: Any = None, **kw: Any) -> ExecutionResult:
        self.events = []
        return await self.engine.execute(wf, input or {}, on_event=self.events.append, **kw)

    def kinds(self) -> list[tuple[str, str]]:
        return [(type(e).__name__, getattr(e, "step_id", "")) for e in self.events]


@pytest.fixture
def run() -> Run:
    return Run()


# ---------------------------------------------------------------------------------------------


async def test_sequential_steps_run_in_order_with_numbered_events(run: Run) -> None:
    """Top-level steps run in file order; events are numbered 1, 2, 3… and end with finished."""
    run.backend.on("A", {"id": 7})
    wf = workflow(step("a"), step("b", input={"prev": "{{ .a.id }}"}), step("c"))
    result = await run(wf, execution_id="ex-1", labels={"team": "shop"})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert run.backend.methods() == ["A", "B", "C"]
    assert run.backend.calls[1][2] == {"prev": 7}
    assert [e.sequence for e in run.events] == list(range(1, len(run.events) + 1))
    assert run.kinds() == [
        ("ExecutionStarted", ""),
        ("StepStarted", "a"),
        ("StepSucceeded", "a"),
        ("StepStarted", "b"),
        ("StepSucceeded", "b"),
        ("StepStarted", "c"),
        ("StepSucceeded", "c"),
        ("ExecutionFinished", ""),
    ]
    started = run.events[0]
    assert isinstance(started, ExecutionStarted)
    assert started.labels == {"team": "shop"}
    assert all(e.execution_id == "ex-1" for e in run.events)
    finished = run.events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.result is result


async def test_default_output_maps_every_step_output_skipped_as_null(run: Run) -> None:
    """Without `output`, the result is every step output by output name, skipped ones null."""
    run.backend.on("A", {"id": 1})
    run.backend.on("B", {"amount": 0})
    wf = workflow(
        step("a", output="reservation"),
        step("b", output="payment"),
        step("c", output="ship", when="{{ .payment.amount > 0 }}"),
    )
    result = await run(wf)
    assert result.output == {"reservation": {"id": 1}, "payment": {"amount": 0}, "ship": None}


async def test_workflow_output_template_is_rendered_after_success(run: Run) -> None:
    """A declared `output` is rendered from the final context."""
    run.backend.on("A", {"id": "r-1"})
    wf = workflow(step("a"), output=tpl({"ref": "{{ a.id }}", "who": "{{ workflow.name }}"}))
    result = await run(wf)
    assert result.output == {"ref": "r-1", "who": "wf"}


async def test_skipped_step_emits_only_step_skipped_and_is_not_compensated(run: Run) -> None:
    """`when` false: SKIPPED, output null, only `step_skipped`, never compensated."""
    run.backend.on("C", code=Code.NOT_FOUND, fails=math.inf)
    wf = workflow(
        step("a", undo=call("UndoA")),
        step("b", when="{{ input.go }}", undo=call("UndoB")),
        step("c"),
    )
    result = await run(wf, {"go": False})
    assert ("StepSkipped", "b") in run.kinds()
    assert ("StepStarted", "b") not in run.kinds()
    assert result.steps["b"].status is StepStatus.SKIPPED
    assert run.backend.methods() == ["A", "C", "UndoA"]
    skipped = next(e for e in run.events if isinstance(e, StepSkipped))
    assert "input.go" in skipped.reason


async def test_parallel_children_overlap(run: Run) -> None:
    """Both parallel children are in flight before either finishes."""
    run.backend.on("B", {"b": 1}, barrier=2)
    run.backend.on("C", {"c": 1}, barrier=2)
    wf = workflow(step("a"), ParallelStep("p", (step("b"), step("c"))), step("d"))
    result = await run(wf)
    assert result.status is ExecutionStatus.SUCCEEDED
    log = run.backend.log
    assert log.index(("start", "C")) < log.index(("end", "B"))
    assert log.index(("start", "B")) < log.index(("end", "C"))
    assert run.backend.methods()[0] == "A"
    assert run.backend.methods()[-1] == "D"


async def test_parallel_failure_cancels_siblings_and_compensates_only_succeeded(run: Run) -> None:
    """A failing child cancels its in-flight sibling (which sees the cancel), reported as CANCELLED."""
    run.backend.on("Slow", hang=True, barrier=2)
    run.backend.on("Fast", code=Code.INVALID_ARGUMENT, fails=math.inf, barrier=2)
    wf = workflow(
        step("a", undo=call("UndoA")),
        ParallelStep("p", (step("slow", undo=call("UndoSlow")), step("fast"))),
        step("d"),
    )
    result = await run(wf)
    assert ("cancel", "Slow") in run.backend.log
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("fast", Code.INVALID_ARGUMENT)
    assert result.steps["slow"].status is StepStatus.CANCELLED
    assert result.steps["slow"].error is not None
    assert result.steps["slow"].error.code is Code.CANCELLED
    assert result.steps["d"].status is StepStatus.PENDING
    assert run.backend.methods() == ["A", "Slow", "Fast", "UndoA"]
    failed = [e for e in run.events if isinstance(e, StepFailed)]
    assert [(e.step_id, e.error.code) for e in failed] == [
        ("fast", Code.INVALID_ARGUMENT),
        ("slow", Code.CANCELLED),
    ]


async def test_compensations_run_newest_first_with_context_and_error(run: Run) -> None:
    """Succeeded steps are undone in reverse completion order, each seeing outputs and `error`."""
    run.backend.on("A", {"id": "a1"})
    run.backend.on("B", {"id": "b1"})
    run.backend.on("C", {"id": "c1"})
    run.backend.on("D", code=Code.FAILED_PRECONDITION, fails=math.inf)
    undo = {"id": "{{ .%s.id }}", "why": "{{ error.code }}", "at": "{{ error.step_id }}"}
    wf = workflow(
        step("a", undo=call("UndoA", {k: v.replace("%s", "a") for k, v in undo.items()})),
        step("b"),
        step("c", undo=call("UndoC", {k: v.replace("%s", "c") for k, v in undo.items()})),
        step("d"),
    )
    result = await run(wf)
    assert result.status is ExecutionStatus.COMPENSATED
    undos = [(c[1], c[2]) for c in run.backend.calls if c[1].startswith("Undo")]
    assert undos == [
        ("UndoC", {"id": "c1", "why": "FAILED_PRECONDITION", "at": "d"}),
        ("UndoA", {"id": "a1", "why": "FAILED_PRECONDITION", "at": "d"}),
    ]
    assert result.steps["c"].status is StepStatus.COMPENSATED
    assert result.steps["b"].status is StepStatus.SUCCEEDED
    assert result.steps["d"].status is StepStatus.FAILED
    tail = run.kinds()[-6:]
    assert tail == [
        ("StepFailed", "d"),
        ("CompensationStarted", "c"),
        ("CompensationSucceeded", "c"),
        ("CompensationStarted", "a"),
        ("CompensationSucceeded", "a"),
        ("ExecutionFinished", ""),
    ]


async def test_failed_compensation_is_reported_and_others_still_run(run: Run) -> None:
    """One failing compensation gives COMPENSATION_FAILED; the older ones still run."""
    run.backend.on("UndoB", code=Code.INTERNAL, fails=math.inf)
    run.backend.on("C", code=Code.NOT_FOUND, fails=math.inf)
    wf = workflow(
        step("a", undo=call("UndoA")),
        step("b", undo=call("UndoB")),
        step("c"),
    )
    result = await run(wf)
    assert result.status is ExecutionStatus.COMPENSATION_FAILED
    assert run.backend.methods() == ["A", "B", "C", "UndoB", "UndoA"]
    assert result.steps["b"].status is StepStatus.COMPENSATION_FAILED
    assert result.steps["b"].compensation_error is not None
    assert result.steps["b"].compensation_error.code is Code.INTERNAL
    assert result.steps["a"].status is StepStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("c", Code.NOT_FOUND)
    failed = [e for e in run.events if isinstance(e, CompensationFailed)]
    assert [e.step_id for e in failed] == ["b"]


async def test_failure_with_nothing_to_undo_is_failed(run: Run) -> None:
    """A failure with no succeeded compensable step ends FAILED."""
    run.backend.on("B", code=Code.PERMISSION_DENIED, fails=math.inf)
    result = await run(workflow(step("a"), step("b", undo=call("UndoB"))))
    assert result.status is ExecutionStatus.FAILED
    assert run.backend.methods() == ["A", "B"]


async def test_retryable_codes_are_retried_with_backoff_events(run: Run) -> None:
    """UNAVAILABLE is retried up to `attempts` calls, announcing each retry with its delay."""
    run.backend.on("A", {"ok": True}, code=Code.UNAVAILABLE, fails=2)
    policy = RetryPolicy(attempts=3, initial=0.5, multiplier=2, max=10, jitter=False)
    result = await run(workflow(step("a", retry=policy)))
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.steps["a"].attempts == 3
    assert run.clock.sleeps == [0.5, 1.0]
    retrying = [e for e in run.events if isinstance(e, StepRetrying)]
    assert [(e.attempt, e.delay, e.error.code) for e in retrying] == [
        (1, 0.5, Code.UNAVAILABLE),
        (2, 1.0, Code.UNAVAILABLE),
    ]
    started = [e.attempt for e in run.events if isinstance(e, StepStarted)]
    assert started == [1, 2, 3]
    succeeded = next(e for e in run.events if isinstance(e, StepSucceeded))
    assert succeeded.attempt == 3
    assert succeeded.output == {"ok": True}


async def test_attempts_are_exhausted_then_the_step_fails(run: Run) -> None:
    """A retryable failure stops after `attempts` calls in total, the first included."""
    run.backend.on("A", code=Code.RESOURCE_EXHAUSTED, fails=math.inf)
    result = await run(workflow(step("a", retry=RetryPolicy(attempts=4))))
    assert run.backend.methods() == ["A"] * 4
    assert result.steps["a"].attempts == 4
    assert result.error is not None
    assert result.error.code is Code.RESOURCE_EXHAUSTED


async def test_permanent_codes_stop_at_once(run: Run) -> None:
    """A business error is never retried, whatever `attempts` says."""
    run.backend.on("A", code=Code.INVALID_ARGUMENT, fails=math.inf)
    result = await run(workflow(step("a", retry=RetryPolicy(attempts=5))))
    assert run.backend.methods() == ["A"]
    assert run.clock.sleeps == []
    assert result.error is not None
    assert result.error.code is Code.INVALID_ARGUMENT


async def test_retry_codes_override_the_default_set(run: Run) -> None:
    """`retry.codes` replaces the default set: NOT_FOUND retried, UNAVAILABLE not."""
    policy = RetryPolicy(attempts=3, codes=frozenset({Code.NOT_FOUND}), jitter=False)
    run.backend.on("A", {"x": 1}, code=Code.NOT_FOUND, fails=2)
    run.backend.on("B", code=Code.UNAVAILABLE, fails=math.inf)
    result = await run(workflow(step("a", retry=policy), step("b", retry=policy)))
    assert run.backend.methods() == ["A", "A", "A", "B"]
    assert result.error is not None
    assert result.error.step_id == "b"


async def test_retry_after_from_the_service_sets_the_delay(run: Run) -> None:
    """A Retry-After/RetryInfo delay replaces the backoff, even above `max`."""
    run.backend.on("A", {}, code=Code.RESOURCE_EXHAUSTED, fails=1, retry_after=7.0)
    policy = RetryPolicy(attempts=2, initial=0.1, max=1.0)
    result = await run(workflow(step("a", retry=policy)))
    assert result.status is ExecutionStatus.SUCCEEDED
    assert run.clock.sleeps == [7.0]


async def test_no_backoff_sleep_outlives_the_deadline(run: Run) -> None:
    """When the next delay would pass the deadline, the step fails with its last error, unslept."""
    run.backend.on("A", code=Code.UNAVAILABLE, fails=math.inf)
    policy = RetryPolicy(attempts=5, initial=5.0, jitter=False)
    result = await run(workflow(step("a", retry=policy)), timeout=3.0)
    assert run.backend.methods() == ["A"]
    assert run.clock.sleeps == []
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("a", Code.UNAVAILABLE)


async def test_attempt_timeout_is_the_smallest_bound(run: Run) -> None:
    """Each attempt gets min(step timeout, workflow time left, caller time left)."""
    wf = workflow(step("a", timeout=2.0), step("b", timeout=30.0), step("c"), timeout=20.0)
    await run(wf, timeout=10.0)
    timeouts = [c[3] for c in run.backend.calls]
    assert timeouts[0] == pytest.approx(2.0)
    assert timeouts[1] == pytest.approx(10.0)
    assert timeouts[2] == pytest.approx(10.0)


async def test_breaker_opens_refuses_without_calling_then_probes_and_closes(run: Run) -> None:
    """Open after N infrastructure failures; refuse with no call; probe after `reset`; close."""
    flaky = service("flaky", circuit_breaker=CircuitBreakerPolicy(failures=2, reset=30))
    script = run.backend.on("A", {"up": True}, code=Code.UNAVAILABLE, fails=2)
    wf = workflow(step("a", svc=flaky))
    for _ in range(2):
        assert (await run(wf)).status is ExecutionStatus.FAILED
    refused = await run(wf)
    assert script.calls == 2
    assert refused.error is not None
    assert refused.error.code is Code.UNAVAILABLE
    assert "circuit breaker" in refused.error.message
    assert isinstance(run.clock, FakeClock)
    run.clock.advance(30)
    assert (await run(wf)).status is ExecutionStatus.SUCCEEDED
    assert script.calls == 3
    assert (await run(wf)).status is ExecutionStatus.SUCCEEDED
    assert script.calls == 4


async def test_breaker_is_shared_across_workflows_by_endpoint(run: Run) -> None:
    """Two workflows naming the same endpoint share one breaker."""
    one = service("flaky", circuit_breaker=CircuitBreakerPolicy(failures=1, reset=30))
    other = Service(
        name="other", type="grpc", endpoint=one.endpoint, circuit_breaker=one.circuit_breaker
    )
    run.backend.on("A", code=Code.DEADLINE_EXCEEDED, fails=math.inf)
    await run(workflow(step("a", svc=one)))
    result = await run(workflow(step("b", svc=other)))
    assert run.backend.methods() == ["A"]
    assert result.error is not None
    assert "circuit breaker" in result.error.message


async def test_business_errors_never_trip_the_breaker(run: Run) -> None:
    """NOT_FOUND answers do not open the circuit."""
    svc = service("biz", circuit_breaker=CircuitBreakerPolicy(failures=1, reset=30))
    run.backend.on("A", code=Code.NOT_FOUND, fails=math.inf)
    for _ in range(3):
        await run(workflow(step("a", svc=svc)))
    assert run.backend.methods() == ["A", "A", "A"]


async def test_workflow_deadline_mid_call_cancels_and_compensates() -> None:
    """The workflow deadline cancels the call in flight, which is named; compensations still run."""
    run = Run(SystemClock())
    run.backend.on("B", hang=True)
    wf = workflow(step("a", undo=call("UndoA")), step("b"), timeout=0.2, compensation_timeout=5)
    result = await run(wf)
    assert ("cancel", "B") in run.backend.log
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("b", Code.DEADLINE_EXCEEDED)
    assert result.steps["b"].status is StepStatus.FAILED
    assert run.backend.methods() == ["A", "B", "UndoA"]
    assert isinstance(run.events[-1], ExecutionFinished)


async def test_caller_cancel_compensates_reports_cancelled_then_propagates() -> None:
    """Cancelling the caller's task cancels the call, compensates, emits finished, re-raises."""
    run = Run(SystemClock())
    run.backend.on("B", hang=True)
    wf = workflow(step("a", undo=call("UndoA", {"why": "{{ error.code }}"})), step("b"))
    task = asyncio.create_task(run(wf))
    await run.backend.wait_for(lambda: ("start", "B") in run.backend.log)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ("cancel", "B") in run.backend.log
    assert run.backend.calls[-1][1:3] == ("UndoA", {"why": "CANCELLED"})
    finished = run.events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.result.status is ExecutionStatus.COMPENSATED
    assert finished.result.error is not None
    assert (finished.result.error.step_id, finished.result.error.code) == ("b", Code.CANCELLED)
    assert isinstance(run.events[-2], CompensationSucceeded)
    assert isinstance(run.events[-3], CompensationStarted)


async def test_cancel_at_the_callers_deadline_reports_deadline_exceeded() -> None:
    """The RPC layer's cancel when the caller's deadline passes is reported as that deadline."""
    clock = FakeClock()
    run = Run(clock)
    run.backend.on("B", hang=True)
    wf = workflow(step("a", undo=call("UndoA", {"why": "{{ error.code }}"})), step("b"))
    task = asyncio.create_task(run(wf, timeout=30.0))
    await run.backend.wait_for(lambda: ("start", "B") in run.backend.log)
    clock.advance(30.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finished = run.events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.result.error is not None
    assert finished.result.error.code is Code.DEADLINE_EXCEEDED
    assert run.backend.calls[-1][1:3] == ("UndoA", {"why": "DEADLINE_EXCEEDED"})


async def test_evaluation_error_names_step_field_and_expression(run: Run) -> None:
    """A runtime template error fails the step with INVALID_ARGUMENT before any call."""
    run.backend.on("A", {"id": 1})
    wf = workflow(step("a"), step("b", input={"ref": "{{ .a.missing }}"}))
    result = await run(wf)
    assert run.backend.methods() == ["A"]
    assert result.error is not None
    assert result.error.code is Code.INVALID_ARGUMENT
    assert "'b'" in result.error.message
    assert "in input.ref:" in result.error.message
    assert ".a.missing" in result.error.message


async def test_evaluation_error_names_the_nested_field_path(run: Run) -> None:
    """The failing field is named by its full path inside the input, lists included."""
    run.backend.on("A", {"id": 1})
    nested = {"order": {"lines": [{"sku": "x"}, {"sku": "{{ a.nope }}"}]}}
    result = await run(workflow(step("a"), step("b", input=nested)))
    assert result.error is not None
    assert "in input.order.lines[1].sku:" in result.error.message


async def test_output_evaluation_error_fails_and_compensates(run: Run) -> None:
    """An error evaluating the workflow output fails the execution and undoes the steps."""
    wf = workflow(step("a", undo=call("UndoA")), output=tpl({"x": "{{ a.nope.deeper }}"}))
    result = await run(wf)
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.output is None
    assert result.error is not None
    assert result.error.code is Code.INVALID_ARGUMENT
    assert "in output.x:" in result.error.message
    assert run.backend.methods()[-1] == "UndoA"


async def test_metadata_and_http_paths_are_rendered(run: Run) -> None:
    """Caller metadata then service and step metadata are sent; HTTP paths are rendered."""
    http = Service(
        name="mailer",
        type="http",
        endpoint="http://127.0.0.1:1",
        metadata={"x-team": tpl("shop"), "x-order": tpl("{{ input.order }}")},
    )
    mail = Call(
        service=http,
        method=HttpMethod("POST", tpl("/orders/{{ input.order }}/mail")),
        input=tpl({"n": "{{ input.order }}"}),
        metadata={**http.metadata, "x-step": tpl("s-{{ workflow.name }}")},
        timeout=None,
        retry=RetryPolicy(),
    )
    wf = workflow(CallStep(id="a", call=mail, output="a"))
    await run(wf, {"order": 42}, metadata=[("traceparent", "00-abc")])
    (svc, method, request, _, md) = run.backend.calls[0]
    assert (svc, method, request) == ("mailer", "POST /orders/42/mail", {"n": 42})
    assert md == (
        ("traceparent", "00-abc"),
        ("x-team", "shop"),
        ("x-order", "42"),
        ("x-step", "s-wf"),
    )


async def test_no_events_are_built_without_a_listener(run: Run) -> None:
    """Without `on_event` the engine still returns the full result."""
    run.backend.on("A", code=Code.UNAVAILABLE, fails=1)
    result = await run.engine.execute(workflow(step("a", retry=RetryPolicy(attempts=2))), {})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.steps["a"].attempts == 2
    assert len(result.execution_id) == 36


async def test_result_to_json_is_plain_json(run: Run) -> None:
    """The JSON form names status and codes, has ISO-8601 start and per-step entries."""
    run.backend.on("B", code=Code.ABORTED, fails=math.inf)
    result = await run(workflow(step("a", undo=call("UndoA")), step("b")), execution_id="e1")
    data = json.loads(json.dumps(result_to_json(result)))
    assert data["status"] == "COMPENSATED"
    assert data["error"] == {"step_id": "b", "code": "ABORTED", "message": "B failed"}
    assert data["steps"]["a"]["status"] == "COMPENSATED"
    assert data["steps"]["b"]["attempts"] == 1
    assert data["started_at"].startswith("2023-11-14T22:13:20")
    assert data["started_at"].endswith("Z")
    assert data["execution_id"] == "e1"
    assert data["workflow"] == "wf"


def test_engine_keeps_the_breaker_registry_it_is_given() -> None:
    """A supplied (still empty) registry is the one the engine uses, shared with its owner."""
    registry = BreakerRegistry(FakeClock())
    engine = Engine(FakeTransports(Backend()), breakers=registry)
    assert engine.breakers is registry
