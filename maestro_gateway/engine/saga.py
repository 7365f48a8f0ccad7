"""Saga rollback: undo the succeeded steps, newest first (DESIGN §4).

Runs when an execution fails (a step failed after its retries, the deadline passed, the caller
cancelled). Compensations run one at a time in reverse order of completion, each seeing what its
step saw, its own output and ``error`` (the cause), with the compensation's own retry policy, all within
``compensation_timeout`` counted from the start of the rollback — a budget of its own, independent
of the workflow and caller deadlines, which may already have passed. A failed compensation is
recorded and the others still run.

After a restart the rollback continues where it stopped (DESIGN §10): compensations already
done are not run again, the one that was in flight counts its interrupted attempt as failed with
UNAVAILABLE under its retry policy, and the budget starts afresh.
"""

from __future__ import annotations

from collections.abc import Sequence

from maestro_gateway.engine.calls import CallFailed, CallRunner
from maestro_gateway.engine.context import Execution, StepState
from maestro_gateway.engine.events import ErrorInfo, StepStatus
from maestro_gateway.model.types import CallStep, SwitchStep, walk
from maestro_gateway.resilience.deadline import Deadline
from maestro_gateway.transports.base import Metadata


async def compensate(
    execution: Execution,
    runner: CallRunner,
    metadata: Metadata,
    *,
    states: Sequence[StepState] | None = None,
    error: ErrorInfo | None = None,
    budget: float | None = None,
) -> bool:
    """Run every needed compensation of ``execution``; return True when all succeeded.

    ``execution.completed`` is the completion list: one state per succeeded run of a step, each
    with its path (``lines[2].reserve``), so a step run more than once is undone once per run.
    Each compensated step ends COMPENSATED or COMPENSATION_FAILED (with ``compensation_error``),
    and ``steps.<id>.status`` in its context follows, so later compensations can see it. Each
    compensation renders in the context its step ran in (an iteration's sees its item), with
    ``error`` added.

    A sub-workflow that fails undoes only its own steps first (DESIGN §12): ``states`` (in
    completion order), ``error`` (its failure) and ``budget`` (its ``compensation_timeout``)
    replace the execution's completion list, cause and budget.
    """
    completed = execution.completed if states is None else states
    if not completed:
        return True
    cause = error if error is not None else execution.cause
    assert cause is not None
    error_value = cause.as_value()
    clock = execution.clock
    seconds = execution.workflow.compensation_timeout if budget is None else budget
    deadline = Deadline.from_timeout(clock, seconds)
    all_ok = True
    for state in reversed(completed):
        if state.status is StepStatus.COMPENSATED:
            continue
        if state.status is StepStatus.COMPENSATION_FAILED:
            all_ok = False
            continue
        step = state.step
        assert isinstance(step, CallStep)
        assert step.compensate is not None
        call = step.compensate
        started = clock.monotonic()
        resume, state.resume = state.resume, None
        ctx = state.ctx
        ctx["error"] = error_value
        trace = execution.trace
        if trace is not None:
            state.span = trace.compensation(execution.enclosing_span(state), state.path)
        try:
            await runner.run(
                execution,
                state,
                call,
                deadline=deadline,
                metadata=metadata,
                compensation=True,
                resume=resume,
            )
        except CallFailed as failed:
            all_ok = False
            state.status = StepStatus.COMPENSATION_FAILED
            state.compensation_error = failed.error
            execution.end_span(state, failed.error)
            execution.emit_compensation_failed(state, failed.error)
        else:
            execution.end_span(state)
            state.status = StepStatus.COMPENSATED
            execution.emit_compensation_succeeded(state, clock.monotonic() - started)
        ctx["steps"][state.step.id]["status"] = state.status.value
    _mark_enclosing(execution, completed)
    return all_ok


def _mark_enclosing(execution: Execution, undone: Sequence[StepState]) -> None:
    """A succeeded foreach, loop, switch or workflow step whose steps were undone ends
    COMPENSATED too (COMPENSATION_FAILED when one of them could not be undone)."""
    switches: dict[str, list[tuple[StepState, set[int]]]] = {}
    for other in execution.states.values():
        if isinstance(other.step, SwitchStep) and other.status is StepStatus.SUCCEEDED:
            prefix = other.path[: len(other.path) - len(other.step.id)]
            members = {id(s) for s in walk(other.step.children())}
            switches.setdefault(prefix, []).append((other, members))
    failed: set[int] = set()
    touched: dict[int, StepState] = {}
    for state in undone:
        bad = state.status is StepStatus.COMPENSATION_FAILED
        current: StepState | None = state
        while current is not None:
            prefix = current.path[: len(current.path) - len(current.step.id)]
            owners = [o for o, members in switches.get(prefix, ()) if id(current.step) in members]
            current = current.parent
            if current is not None:
                owners.append(current)
            for owner in owners:
                touched[id(owner)] = owner
                if bad:
                    failed.add(id(owner))
    for key, owner in touched.items():
        if owner.status is StepStatus.SUCCEEDED:
            owner.status = (
                StepStatus.COMPENSATION_FAILED if key in failed else StepStatus.COMPENSATED
            )
            execution.publish(owner)
