"""The step kinds of DESIGN §12 in the engine: foreach, switch, loop, fail, sub-workflows and
``continue_on_error``, over the scripted in-memory transport and a fake clock.

Workflows are built from model classes with real compiled templates (the loader's own checks
are in the fixture table); each test reads the events a client would stream.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from test_engine import SVC, Backend, FakeTransports, Run, call
from test_engine import run as run

from maestro_gateway.codes import Code
from maestro_gateway.engine import (
    CompensationStarted,
    Engine,
    ExecutionStatus,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
)
from maestro_gateway.engine.journaling import event_from_entry
from maestro_gateway.expr import Scope, compile_condition, compile_string, constant
from maestro_gateway.expr import mapping as tmapping
from maestro_gateway.journal import MemoryJournal
from maestro_gateway.model.types import (
    Call,
    CallStep,
    FailStep,
    ForeachStep,
    LoopStep,
    ParallelStep,
    RetryPolicy,
    Step,
    SwitchBranch,
    SwitchStep,
    Workflow,
    WorkflowStep,
    walk,
)
from maestro_gateway.resilience import FakeClock, SystemClock

NAMES = frozenset(
    {
        "input",
        "workflow",
        "steps",
        "error",
        "item",
        "index",
        "line",
        "i",
        "iteration",
        "reserve",
        "lines",
        "check",
        "charge",
        "payment",
        "big",
        "small",
        "route",
        "a",
        "b",
        "notify",
    }
)
SCOPE = Scope(names=NAMES, step_ids=NAMES)
RETRY = RetryPolicy(attempts=3, initial=0.1, jitter=False)


def tpl(value: Any) -> Any:
    if isinstance(value, str):
        return compile_string(value, SCOPE)
    if isinstance(value, dict):
        return tmapping({k: tpl(v) for k, v in value.items()})
    return constant(value)


def cond(text: str) -> Any:
    return compile_condition(text, SCOPE)


def calls(
    id: str,
    method: str | None = None,
    input: Any = None,
    *,
    undo: tuple[str, Any] | None = None,
    output: str | None = None,
    continue_on_error: bool = False,
    when: str | None = None,
) -> CallStep:
    made = call(method or id.capitalize(), {})
    made = Call(made.service, made.method, tpl(input or {}), made.metadata, None, RETRY)
    compensate = None
    if undo is not None:
        base = call(undo[0], {})
        compensate = Call(base.service, base.method, tpl(undo[1]), base.metadata, None, RETRY)
    return CallStep(
        id=id,
        call=made,
        output=output or id,
        when=cond(when) if when else None,
        compensate=compensate,
        continue_on_error=continue_on_error,
    )


def wf(*steps: Step, name: str = "wf", **kw: Any) -> Workflow:
    return Workflow(name=name, version="1", steps=steps, services={"svc": SVC}, **kw)


def link(parent: Workflow, *children: Workflow) -> Workflow:
    by_name = {c.name: c for c in children}
    for workflow in (parent, *children):
        for step in walk(workflow.steps):
            if isinstance(step, WorkflowStep):
                object.__setattr__(step, "child", by_name[step.workflow])
    return parent


def lines_foreach(**kw: Any) -> ForeachStep:
    body = kw.pop(
        "steps",
        (
            calls(
                "reserve",
                input={"sku": "{{ line.sku }}", "at": "{{ i }}"},
                undo=("Release", {"sku": "{{ line.sku }}", "why": "{{ error.code }}"}),
            ),
        ),
    )
    return ForeachStep(
        id="lines",
        items=tpl("{{ input.lines }}"),
        steps=body,
        output=kw.pop("output", "lines"),
        item_name="line",
        index_name="i",
        **kw,
    )


def skus(n: int) -> dict[str, Any]:
    return {"lines": [{"sku": f"s{k}"} for k in range(n)]}


def path_events(run: Run, kind: type) -> list[str]:
    return [getattr(e, "step_id", "") for e in run.events if isinstance(e, kind)]


# -- foreach -----------------------------------------------------------------------------------


async def test_foreach_runs_the_body_per_item_with_paths_and_a_list_output(run: Run) -> None:
    """Each iteration sees its item and index; events carry `lines[i].reserve`; output in order."""
    run.backend.on("Reserve", lambda req: {"id": f"r-{req['sku']}"})
    workflow = wf(lines_foreach(concurrency=tpl(1)), calls("a", input={"n": "{{ size(lines) }}"}))
    result = await run(workflow, skus(3))
    assert result.status is ExecutionStatus.SUCCEEDED
    assert [c[2] for c in run.backend.calls[:3]] == [
        {"sku": "s0", "at": 0},
        {"sku": "s1", "at": 1},
        {"sku": "s2", "at": 2},
    ]
    assert run.backend.calls[3][2] == {"n": 3}
    assert result.output["lines"] == [{"reserve": {"id": f"r-s{k}"}} for k in range(3)]
    assert path_events(run, StepSucceeded) == [
        "lines[0].reserve",
        "lines[1].reserve",
        "lines[2].reserve",
        "lines",
        "a",
    ]
    assert path_events(run, StepStarted)[0] == "lines"
    assert result.steps["lines[1].reserve"].output == {"id": "r-s1"}
    assert result.steps["lines"].status is StepStatus.SUCCEEDED


async def test_foreach_bounds_concurrency_and_starts_iterations_in_item_order(run: Run) -> None:
    """With concurrency 3 over 10 items, never more than 3 calls at once; starts in item order."""
    peak = 0

    def reserve(req: Any) -> Any:
        nonlocal peak
        peak = max(peak, run.backend.in_flight)
        return {"ok": req["at"]}

    run.backend.on("Reserve", reserve)
    result = await run(
        wf(lines_foreach(concurrency=tpl("{{ size(input.lines) > 5 ? 3 : 1 }}"))), skus(10)
    )
    assert result.status is ExecutionStatus.SUCCEEDED
    assert peak == 3
    starts = [c[2]["at"] for c in run.backend.calls]
    assert starts == list(range(10))
    assert [o["reserve"]["ok"] for o in result.output["lines"]] == list(range(10))


async def test_an_empty_foreach_succeeds_with_an_empty_list(run: Run) -> None:
    result = await run(wf(lines_foreach()), {"lines": []})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.output == {"lines": []}
    assert run.backend.calls == []


async def test_a_failing_iteration_cancels_the_others_and_the_saga_undoes_newest_first(
    run: Run,
) -> None:
    """Iteration 2 fails: no new iteration starts, those in flight are CANCELLED, and every
    succeeded body step is undone, newest completion first, each with its own item."""
    workflow = wf(lines_foreach(concurrency=tpl(1)))
    calls_seen = 0

    def third_fails(req: Any) -> Any:
        nonlocal calls_seen
        calls_seen += 1
        if req["at"] == 2:
            from maestro_gateway.errors import CallError

            raise CallError(Code.FAILED_PRECONDITION, "out of stock")
        return {"at": req["at"]}

    run.backend.on("Reserve", third_fails)
    result = await run(workflow, skus(6))
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == (
        "lines[2].reserve",
        Code.FAILED_PRECONDITION,
    )
    assert calls_seen == 3  # iterations 3, 4, 5 never started
    releases = [c[2] for c in run.backend.calls if c[1] == "Release"]
    assert releases == [
        {"sku": "s1", "why": "FAILED_PRECONDITION"},
        {"sku": "s0", "why": "FAILED_PRECONDITION"},
    ]
    assert result.steps["lines"].status is StepStatus.FAILED
    assert "lines[3].reserve" not in result.steps


async def test_a_failing_iteration_cancels_iterations_in_flight(run: Run) -> None:
    """Concurrent iterations: when one fails the others in flight are reported CANCELLED."""
    from maestro_gateway.errors import CallError

    def reserve(req: Any) -> Any:
        if req["at"] == 1:
            raise CallError(Code.FAILED_PRECONDITION, "no")
        return {"at": req["at"]}

    run.backend.on("Reserve", reserve)
    body = (
        calls("reserve", input={"sku": "{{ line.sku }}", "at": "{{ i }}"}),
        calls("a", method="Slow"),
    )
    run.backend.on("Slow", hang=True)
    result = await run(wf(lines_foreach(steps=body, concurrency=tpl(4))), skus(4))
    assert result.status is ExecutionStatus.FAILED
    cancelled = [
        e.step_id
        for e in run.events
        if isinstance(e, StepFailed) and e.status is StepStatus.CANCELLED
    ]
    assert set(cancelled) == {"lines[0].a", "lines[2].a", "lines[3].a"}


@pytest.mark.parametrize(
    ("items", "kw", "message"),
    [
        ("{{ input.count }}", {}, "step 'lines': foreach: expected a list, got a number"),
        (
            "{{ input.lines }}",
            {"max_items": 2},
            "step 'lines': foreach: 3 items, more than max_items (2)",
        ),
        (
            "{{ input.lines }}",
            {"concurrency": "{{ input.count - 3 }}"},
            "step 'lines': concurrency: expected an integer of at least 1, got 0",
        ),
    ],
)
async def test_foreach_bad_values_at_run_time_fail_the_step_with_invalid_argument(
    run: Run, items: str, kw: dict[str, Any], message: str
) -> None:
    step = lines_foreach(**{k: (tpl(v) if k == "concurrency" else v) for k, v in kw.items()})
    step = ForeachStep(
        step.id,
        tpl(items),
        step.steps,
        step.output,
        step.item_name,
        step.index_name,
        step.concurrency,
        step.max_items,
    )
    result = await run(wf(step), {**skus(3), "count": 3})
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert (result.error.step_id, result.error.code, result.error.message) == (
        "lines",
        Code.INVALID_ARGUMENT,
        message,
    )
    assert run.backend.calls == []


# -- switch ------------------------------------------------------------------------------------


def route() -> SwitchStep:
    return SwitchStep(
        id="route",
        branches=(
            SwitchBranch(cond("{{ input.amount > 1000 }}"), (calls("big", method="Review"),)),
            SwitchBranch(None, (calls("small", method="Approve"),)),
        ),
        output="route",
    )


async def test_switch_runs_the_first_matching_branch_and_skips_the_others(run: Run) -> None:
    result = await run(
        wf(route(), calls("a", input={"big": "{{ big }}", "route": "{{ route }}"})),
        {"amount": 5},
    )
    assert result.status is ExecutionStatus.SUCCEEDED
    assert run.backend.methods() == ["Approve", "A"]
    assert run.backend.calls[-1][2] == {"big": None, "route": 1}
    skipped = [e for e in run.events if isinstance(e, StepSkipped)]
    assert [(e.step_id, e.reason) for e in skipped] == [("big", "switch 'route' took branch 1")]
    assert result.steps["big"].status is StepStatus.SKIPPED
    assert result.output["route"] == 1


async def test_a_switch_with_no_match_and_no_default_outputs_null(run: Run) -> None:
    step = SwitchStep(
        id="route",
        branches=(SwitchBranch(cond("{{ input.amount > 1000 }}"), (calls("big"),)),),
        output="route",
    )
    result = await run(wf(step), {"amount": 5})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.output == {"route": None, "big": None}
    assert run.backend.calls == []


# -- loop --------------------------------------------------------------------------------------


def poll(max_iterations: int = 5, delay: float = 2.0) -> LoopStep:
    return LoopStep(
        id="wait",
        steps=(calls("check", method="GetJob", input={"n": "{{ iteration }}"}),),
        until=cond("{{ check.state == 'DONE' }}"),
        max_iterations=max_iterations,
        output="wait",
        delay=delay,
    )


async def test_a_loop_repeats_until_its_condition_holds_with_its_delay(run: Run) -> None:
    states = iter(["RUNNING", "RUNNING", "DONE"])
    run.backend.on("GetJob", lambda req: {"state": next(states), "n": req["n"]})
    result = await run(wf(poll(), calls("a", input={"last": "{{ check.n }}"})))
    assert result.status is ExecutionStatus.SUCCEEDED
    assert [c[2] for c in run.backend.calls] == [{"n": 0}, {"n": 1}, {"n": 2}, {"last": 2}]
    assert run.clock.sleeps == [2.0, 2.0]
    assert path_events(run, StepSucceeded) == [
        "wait[0].check",
        "wait[1].check",
        "wait[2].check",
        "wait",
        "a",
    ]
    assert result.output["wait"] == {"check": {"state": "DONE", "n": 2}}


async def test_a_loop_that_reaches_max_iterations_fails_with_deadline_exceeded(run: Run) -> None:
    run.backend.on("GetJob", {"state": "RUNNING"})
    result = await run(wf(poll(max_iterations=3, delay=0)))
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("wait", Code.DEADLINE_EXCEEDED)
    assert "max_iterations (3)" in result.error.message
    assert len(run.backend.calls) == 3


# -- fail and continue_on_error ----------------------------------------------------------------


async def test_fail_ends_the_execution_with_its_code_and_message_and_the_saga_runs(
    run: Run,
) -> None:
    reject = FailStep(
        id="reject",
        code=Code.FAILED_PRECONDITION,
        message=tpl("amount {{ input.amount }} is over the limit"),
        when=cond("{{ input.amount > 10 }}"),
    )
    workflow = wf(calls("a", undo=("UndoA", {})), reject, calls("b"))
    result = await run(workflow, {"amount": 50})
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code, result.error.message) == (
        "reject",
        Code.FAILED_PRECONDITION,
        "amount 50 is over the limit",
    )
    assert run.backend.methods() == ["A", "UndoA"]
    ok = await run(workflow, {"amount": 5})
    assert ok.status is ExecutionStatus.SUCCEEDED
    assert ok.steps["reject"].status is StepStatus.SKIPPED


async def test_continue_on_error_reports_the_failure_and_goes_on(run: Run) -> None:
    run.backend.on("Notify", code=Code.UNAVAILABLE, fails=99)
    workflow = wf(
        calls("notify", continue_on_error=True),
        calls("a", input={"out": "{{ notify }}", "code": "{{ steps.notify.error.code }}"}),
    )
    result = await run(workflow)
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.error is None
    assert result.steps["notify"].status is StepStatus.FAILED
    assert run.backend.calls[-1][2] == {"out": None, "code": "UNAVAILABLE"}
    assert path_events(run, StepFailed) == ["notify"]


async def test_a_foreach_that_continues_on_error_keeps_its_done_iterations_for_the_saga(
    run: Run,
) -> None:
    """The foreach fails and the execution goes on; a later failure undoes iterations 0 and 1."""
    from maestro_gateway.errors import CallError

    def reserve(req: Any) -> Any:
        if req["at"] == 2:
            raise CallError(Code.FAILED_PRECONDITION, "no")
        return {"at": req["at"]}

    run.backend.on("Reserve", reserve)
    run.backend.on("B", code=Code.FAILED_PRECONDITION, fails=1)
    workflow = wf(
        lines_foreach(concurrency=tpl(1), continue_on_error=True),
        calls("a", input={"lines": "{{ lines }}"}),
        calls("b"),
    )
    result = await run(workflow, skus(4))
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert result.error.step_id == "b"
    assert result.steps["lines"].status is StepStatus.FAILED
    a_call = next(c for c in run.backend.calls if c[1] == "A")
    assert a_call[2] == {"lines": None}
    releases = [c[2]["sku"] for c in run.backend.calls if c[1] == "Release"]
    assert releases == ["s1", "s0"]
    assert result.steps["lines[1].reserve"].status is StepStatus.COMPENSATED


# -- sub-workflows ---------------------------------------------------------------------------


def payment() -> Workflow:
    return wf(
        calls(
            "charge",
            input={"amount": "{{ input.amount }}"},
            undo=("Refund", {"id": "{{ charge.id }}"}),
        ),
        calls("a", method="Receipt"),
        name="payment",
        input_schema={"type": "object", "required": ["amount"]},
        output=tpl("{{ charge.id }}"),
    )


def pay_step(**kw: Any) -> WorkflowStep:
    return WorkflowStep(
        id="pay",
        workflow="payment",
        input=tpl({"amount": "{{ input.amount }}"}),
        output="payment",
        **kw,
    )


async def test_a_sub_workflow_runs_inside_the_execution_with_prefixed_paths(run: Run) -> None:
    run.backend.on("Charge", {"id": "c-1"})
    parent = link(wf(pay_step(), calls("b", input={"p": "{{ payment }}"})), payment())
    result = await run(parent, {"amount": 7})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert run.backend.calls[0][2] == {"amount": 7}
    assert run.backend.calls[-1][2] == {"p": "c-1"}
    assert path_events(run, StepSucceeded) == ["pay.charge", "pay.a", "pay", "b"]
    assert result.output["payment"] == "c-1"
    assert {e.execution_id for e in run.events} == {result.execution_id}


async def test_a_sub_workflow_input_against_its_schema(run: Run) -> None:
    bad = WorkflowStep(id="pay", workflow="payment", input=tpl({}), output="payment")
    result = await run(link(wf(bad), payment()), {})
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.code is Code.INVALID_ARGUMENT
    assert result.error.step_id == "pay"
    assert "workflow 'payment'" in result.error.message
    assert "amount" in result.error.message


async def test_a_failing_child_compensates_itself_then_the_parent_undoes_its_own(run: Run) -> None:
    run.backend.on("Charge", {"id": "c-1"})
    run.backend.on("Receipt", code=Code.FAILED_PRECONDITION, fails=1)
    parent = link(wf(calls("b", undo=("UndoB", {})), pay_step()), payment())
    result = await run(parent, {"amount": 7})
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert result.error.step_id == "pay.a"
    assert run.backend.methods() == ["B", "Charge", "Receipt", "Refund", "UndoB"]
    compensations = path_events(run, CompensationStarted)
    assert compensations == ["pay.charge", "b"]


async def test_the_parent_saga_undoes_a_finished_child_when_a_later_step_fails(
    run: Run,
) -> None:
    run.backend.on("Charge", {"id": "c-9"})
    run.backend.on("B", code=Code.FAILED_PRECONDITION, fails=1)
    parent = link(
        wf(calls("a", method="First", undo=("UndoFirst", {})), pay_step(), calls("b")), payment()
    )
    result = await run(parent, {"amount": 7})
    assert result.status is ExecutionStatus.COMPENSATED
    assert [c[1:3] for c in run.backend.calls[-2:]] == [
        ("Refund", {"id": "c-9"}),
        ("UndoFirst", {}),
    ]
    # The sub-workflow's step reads as undone, not as a success left standing.
    assert result.steps["pay"].status is StepStatus.COMPENSATED
    assert result.steps["pay.charge"].status is StepStatus.COMPENSATED


async def test_a_sub_workflow_that_continues_on_error_lets_the_parent_go_on(run: Run) -> None:
    run.backend.on("Charge", {"id": "c-1"})
    run.backend.on("Receipt", code=Code.FAILED_PRECONDITION, fails=1)
    parent = link(
        wf(pay_step(continue_on_error=True), calls("b", input={"p": "{{ payment }}"})), payment()
    )
    result = await run(parent, {"amount": 7})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert run.backend.methods() == ["Charge", "Receipt", "Refund", "B"]
    assert run.backend.calls[-1][2] == {"p": None}
    assert result.steps["pay"].status is StepStatus.FAILED


# -- nesting -----------------------------------------------------------------------------------


async def test_kinds_nest_foreach_switch_parallel_with_paths(run: Run) -> None:
    body = (
        SwitchStep(
            id="route",
            branches=(
                SwitchBranch(
                    cond("{{ line.qty > 1 }}"),
                    (ParallelStep("p", (calls("big", method="Big"), calls("a", method="Also"))),),
                ),
                SwitchBranch(None, (calls("small", method="Small"),)),
            ),
            output="route",
        ),
    )
    step = ForeachStep("lines", tpl("{{ input.lines }}"), body, "lines", "line", "i", tpl(1))
    result = await run(wf(step), {"lines": [{"qty": 2}, {"qty": 1}]})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert sorted(path_events(run, StepSucceeded)) == sorted(
        [
            "lines[0].big",
            "lines[0].a",
            "lines[0].route",
            "lines[1].small",
            "lines[1].route",
            "lines",
        ]
    )
    assert path_events(run, StepSkipped) == ["lines[0].small", "lines[1].big", "lines[1].a"]
    assert result.output["lines"][0] == {
        "route": 0,
        "big": {"echo": {}},
        "a": {"echo": {}},
        "small": None,
    }


async def test_a_deadline_inside_a_foreach_names_the_call_in_flight() -> None:
    run = Run(SystemClock())
    run.backend.on("Reserve", hang=True)
    result = await run(wf(lines_foreach(concurrency=tpl(1)), timeout=0.2), skus(2))
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("lines[0].reserve", Code.DEADLINE_EXCEEDED)
    failed = [e.step_id for e in run.events if isinstance(e, StepFailed)]
    assert failed == ["lines", "lines[0].reserve"]


# -- durable: resumed from the journal where they stood (DESIGN §10, §12) ----------------------


class Process:
    """One gateway "process" over a journal it shares with the next (see test_engine_recovery)."""

    def __init__(self, journal: MemoryJournal, clock: FakeClock) -> None:
        self.backend = Backend()
        self.journal = journal
        self.engine = Engine(
            FakeTransports(self.backend), clock=clock, rng=random.Random(1), journal=journal
        )

    async def crash_when(self, workflow: Workflow, input: Any, method: str, count: int = 1) -> None:
        """Run ``workflow`` and stop the "process" while ``method`` is in flight the ``count``-th time."""
        task = asyncio.create_task(self.engine.execute(workflow, input, execution_id="ex-1"))
        b = self.backend
        await b.wait_for(lambda: sum(1 for m in b.methods() if m == method) >= count)
        self.engine.hand_over()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def resume(self, workflow: Workflow) -> Any:
        record = await self.journal.get("ex-1")
        assert record is not None
        events = [event_from_entry(e) for e in await self.journal.events("ex-1")]
        return await self.engine.resume(workflow, record, events, reason="test restart")


async def test_a_resumed_foreach_does_not_redo_finished_iterations() -> None:
    """Stopped during iteration 2: iterations 0 and 1 are not called again; the list is whole."""
    journal, clock = MemoryJournal(), FakeClock()
    workflow = wf(lines_foreach(concurrency=tpl(1)), calls("a", input={"n": "{{ size(lines) }}"}))
    first = Process(journal, clock)
    first.backend.on("Reserve", lambda req: {"at": req["at"]}, hang_at=3)
    await first.crash_when(workflow, skus(4), "Reserve", count=3)

    second = Process(journal, clock)
    second.backend.on("Reserve", lambda req: {"at": req["at"]})
    result = await second.resume(workflow)
    assert result.status is ExecutionStatus.SUCCEEDED
    assert [c[2]["at"] for c in second.backend.calls if c[1] == "Reserve"] == [2, 3]
    assert result.output["lines"] == [{"reserve": {"at": k}} for k in range(4)]
    assert second.backend.calls[-1][2] == {"n": 4}
    events = [event_from_entry(e) for e in await journal.events("ex-1")]
    started = [getattr(e, "step_id", "") for e in events if isinstance(e, StepStarted)]
    assert started.count("lines") == 1
    assert started.count("lines[2].reserve") == 2  # the interrupted attempt, then its retry


async def test_a_resumed_loop_continues_at_its_iteration() -> None:
    journal, clock = MemoryJournal(), FakeClock()
    workflow = wf(poll(delay=1.0), calls("a", input={"last": "{{ check.n }}"}))
    first = Process(journal, clock)
    first.backend.on("GetJob", lambda req: {"state": "RUNNING", "n": req["n"]}, hang_at=2)
    await first.crash_when(workflow, {}, "GetJob", count=2)

    second = Process(journal, clock)
    states = iter(["RUNNING", "DONE"])
    second.backend.on("GetJob", lambda req: {"state": next(states), "n": req["n"]})
    result = await second.resume(workflow)
    assert result.status is ExecutionStatus.SUCCEEDED
    assert [c[2] for c in second.backend.calls] == [{"n": 1}, {"n": 2}, {"last": 2}]
    assert result.output["wait"] == {"check": {"state": "DONE", "n": 2}}


async def test_a_resumed_sub_workflow_continues_inside() -> None:
    journal, clock = MemoryJournal(), FakeClock()
    workflow = link(wf(pay_step(), calls("b", input={"p": "{{ payment }}"})), payment())
    first = Process(journal, clock)
    first.backend.on("Charge", {"id": "c-1"})
    first.backend.on("Receipt", hang=True)
    await first.crash_when(workflow, {"amount": 3}, "Receipt")

    second = Process(journal, clock)
    result = await second.resume(workflow)
    assert result.status is ExecutionStatus.SUCCEEDED
    assert second.backend.methods() == ["Receipt", "B"]
    assert second.backend.calls[-1][2] == {"p": "c-1"}


async def test_a_rollback_resumed_after_a_restart_undoes_iterations_with_their_items() -> None:
    """Stopped while undoing iteration 1: the restart undoes it (retried) and iteration 0,
    each compensation rendered with its own item, rebuilt from the journal."""
    journal, clock = MemoryJournal(), FakeClock()
    workflow = wf(lines_foreach(concurrency=tpl(1)), calls("b"))
    first = Process(journal, clock)
    first.backend.on("B", code=Code.FAILED_PRECONDITION, fails=1)
    first.backend.on("Release", hang_at=2)
    await first.crash_when(workflow, skus(3), "Release", count=2)
    assert [c[2]["sku"] for c in first.backend.calls if c[1] == "Release"] == ["s2", "s1"]

    second = Process(journal, clock)
    result = await second.resume(workflow)
    assert result.status is ExecutionStatus.COMPENSATED
    assert [c[2] for c in second.backend.calls] == [
        {"sku": "s1", "why": "FAILED_PRECONDITION"},
        {"sku": "s0", "why": "FAILED_PRECONDITION"},
    ]


async def test_a_succeeded_foreach_whose_iterations_are_undone_ends_compensated(
    run: Run,
) -> None:
    run.backend.on("B", code=Code.FAILED_PRECONDITION, fails=1)
    run.backend.on("Release", code=Code.FAILED_PRECONDITION, fails=1)  # the first undo fails
    plain = calls("a", method="Plain")  # nothing to undo inside this switch
    switch = SwitchStep("route", (SwitchBranch(None, (plain,)),), "route")
    result = await run(wf(lines_foreach(concurrency=tpl(1)), switch, calls("b")), skus(2))
    assert result.status is ExecutionStatus.COMPENSATION_FAILED
    assert result.steps["lines"].status is StepStatus.COMPENSATION_FAILED
    assert result.steps["lines[1].reserve"].status is StepStatus.COMPENSATION_FAILED
    assert result.steps["lines[0].reserve"].status is StepStatus.COMPENSATED
    assert result.steps["route"].status is StepStatus.SUCCEEDED
