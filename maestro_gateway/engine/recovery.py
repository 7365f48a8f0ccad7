"""Rebuild an execution's state from its journaled events, to resume it (DESIGN §10).

The events are the record of what happened, folded by step path (an event's ``step_id``, the
key of the execution's step states): a ``step_succeeded`` gives the step's output (it is
never called again), the order of those events is the saga's completion order, and the last event
of a step that did not end tells where its call stood:

- ``step_started(n)`` / ``compensation_started(n)``: attempt ``n`` was in flight. It counts as
  failed with UNAVAILABLE, and the retry policy decides what comes next;
- ``step_retrying(n)``: attempt ``n``'s failure was handled; the call waits out what is left of
  the delay, then makes attempt ``n + 1``.

Steps inside foreach, loop and workflow steps get their state (and the context of their
iteration or sub-workflow) when their path first appears (``maestro_gateway.engine.frames``).
A failure under ``continue_on_error`` is no cause, and the compensations a failed sub-workflow
runs on itself are no rollback of the execution: the execution continues, and its kinds take
those up again where they stood.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from maestro_gateway.codes import Code
from maestro_gateway.engine.context import Execution, Resume, StepState
from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    ExecutionRecovered,
    ExecutionStarted,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
)
from maestro_gateway.engine.frames import last_iteration, locate, publish_last_iteration
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import CallStep, LoopStep, WaitStep, WorkflowStep

INTERRUPTED = "the gateway stopped during this call; the service may have acted on it"
"""The message of an attempt that was in flight when the gateway stopped (DESIGN §10)."""


class Phase(enum.Enum):
    """What a resumed execution does next."""

    RUN = "run"
    """No step failed: continue with the steps that have not finished."""
    ROLLBACK = "rollback"
    """A step failed (or the rollback had begun): run the compensations not yet done."""


def interrupted_error() -> CallError:
    """The error an interrupted attempt counts as."""
    return CallError(Code.UNAVAILABLE, INTERRUPTED)


def restore(execution: Execution, events: Sequence[Event], wall_now: float) -> Phase:
    """Apply ``events`` (in sequence order) to the fresh ``execution``; return what comes next.

    Nothing is emitted: ``execution.sequence`` continues after the last event.
    """
    clock = execution.clock
    mono_offset = clock.monotonic() - wall_now
    rollback = False
    cancelled_cause: ErrorInfo | None = None
    for event in events:
        execution.sequence = event.sequence
        match event:
            case ExecutionStarted() | ExecutionRecovered():
                pass
            case StepStarted():
                state = locate(execution, event.step_id)
                state.status = StepStatus.RUNNING
                state.attempts = event.attempt
                if event.attempt == 1:
                    state.started = event.time + mono_offset
                if isinstance(state.step, CallStep):
                    state.resume = Resume(event.attempt, interrupted_error())
            case StepRetrying():
                state = locate(execution, event.step_id)
                wait = max(0.0, event.time + event.delay - wall_now)
                state.resume = Resume(event.attempt, None, wait)
            case StepSucceeded():
                state = locate(execution, event.step_id)
                state.resume = None
                state.attempts = event.attempt
                execution.step_succeeded(state, event.output, emit=False)
                state.duration = event.duration
                if isinstance(state.step, LoopStep):
                    _publish_last_iteration(execution, state)
                elif isinstance(state.step, WaitStep) and isinstance(event.output, dict):
                    execution.consumed_signals.add(str(event.output.get("signal_id", "")))
            case StepSkipped():
                execution.step_skipped(locate(execution, event.step_id), event.reason, emit=False)
            case StepFailed():
                state = locate(execution, event.step_id)
                state.resume = None
                state.status = event.status
                state.error = event.error
                state.attempts = max(state.attempts, event.attempt)
                if state.step.output is not None:
                    state.ctx[state.step.output] = None
                contained = state.contained()
                if execution.cause is None and event.status is StepStatus.FAILED and not contained:
                    execution.cause = event.error
                if (
                    event.status is StepStatus.CANCELLED
                    and cancelled_cause is None
                    and not contained
                ):
                    cancelled_cause = event.error
                execution.publish(state)
            case CompensationStarted():
                state = locate(execution, event.step_id)
                if not _undone_by_its_workflow(state):
                    rollback = True
                state.compensation_attempts = event.attempt
                state.resume = Resume(event.attempt, interrupted_error())
            case CompensationSucceeded():
                state = locate(execution, event.step_id)
                state.resume = None
                state.status = StepStatus.COMPENSATED
                execution.publish(state)
            case CompensationFailed():
                state = locate(execution, event.step_id)
                state.resume = None
                state.status = StepStatus.COMPENSATION_FAILED
                state.compensation_error = event.error
                execution.publish(state)
            case _:
                pass
    if execution.cause is None and cancelled_cause is not None:
        execution.cause = cancelled_cause
    return Phase.ROLLBACK if rollback or execution.cause is not None else Phase.RUN


def _undone_by_its_workflow(state: StepState) -> bool:
    """Whether ``state`` is compensated by the failed sub-workflow it belongs to (still running)."""
    parent = state.parent
    while parent is not None:
        if isinstance(parent.step, WorkflowStep) and parent.status is StepStatus.RUNNING:
            return True
        parent = parent.parent
    return False


def _publish_last_iteration(execution: Execution, loop: StepState) -> None:
    """After a loop, its body's outputs are those of its last iteration (DESIGN §12)."""
    step = loop.step
    assert isinstance(step, LoopStep)
    output = loop.output if isinstance(loop.output, dict) else {}
    publish_last_iteration(step, loop.ctx, output, last_iteration(execution, loop))
