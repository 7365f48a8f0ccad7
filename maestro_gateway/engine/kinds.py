"""Step kinds: one executor function per model class, dispatched by type (DESIGN §2, §12).

A kind is a class of ``maestro_gateway.model.types`` plus one async function here, registered
with :func:`register`, that runs one step of that class in a :class:`Scope`. Nothing else in the
engine knows the kinds: a step runs through :func:`run_step`, a list of steps through
:func:`run_steps`, whatever they are.

A kind's function returns when its step is done (succeeded, or skipped) and raises
:class:`StepFailure` once the failure is recorded on the execution, or :class:`DeadlinePassed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from maestro_gateway.codes import Code
from maestro_gateway.engine.calls import CallFailed, CallRunner, evaluation_failure
from maestro_gateway.engine.context import Execution
from maestro_gateway.engine.events import StepStatus
from maestro_gateway.engine.paths import step_path
from maestro_gateway.errors import EvaluationError
from maestro_gateway.model.types import CallStep, ParallelStep, Step
from maestro_gateway.resilience.deadline import Deadline
from maestro_gateway.transports.base import Metadata

S = TypeVar("S")


class StepFailure(Exception):
    """A step failed for good; the cause is already recorded on the execution."""


class DeadlinePassed(Exception):
    """A call ran out of time because the execution's deadline passed (not its own timeout).

    Treated like the deadline timer firing, so the cause names the first step in flight whichever
    of the equal timers (the workflow's, the attempt's, the transport's) happened to fire first.
    """


@dataclass(frozen=True, slots=True)
class Scope:
    """Where steps run: the execution, what bounds their calls, and the prefix of their paths.

    Attributes:
        execution: the execution they belong to.
        runner: makes their calls.
        deadline: bounds every call (the earlier of the workflow's and the caller's), or None.
        metadata: the caller's headers, forwarded to every call.
        prefix: the prefix of the paths of the steps run here ("" at the top level).
    """

    execution: Execution
    runner: CallRunner
    deadline: Deadline | None
    metadata: Metadata
    prefix: str = ""
    """Given to :func:`~maestro_gateway.engine.paths.step_path` with each step's id."""


StepRunner = Callable[[Scope, Any], Coroutine[Any, Any, None]]
"""The executor of one kind: runs one step of it in a scope."""

_KINDS: dict[type[Any], StepRunner] = {}


def register(kind: type[S], run: Callable[[Scope, S], Coroutine[Any, Any, None]]) -> None:
    """Make ``run`` the executor of every step of class ``kind``."""
    _KINDS[kind] = run


def run_step(scope: Scope, step: Step) -> Coroutine[Any, Any, None]:
    """Run ``step`` with the executor of its kind."""
    return _KINDS[type(step)](scope, step)


async def run_steps(scope: Scope, steps: Sequence[Step]) -> None:
    """Run ``steps`` one after the other, in order."""
    kinds = _KINDS
    for step in steps:
        await kinds[type(step)](scope, step)


async def run_call(scope: Scope, step: CallStep) -> None:
    """A call step: its condition, then its call with retries (DESIGN §4)."""
    execution = scope.execution
    path = step_path(scope.prefix, step.id)
    state = execution.states[path]
    status = state.status
    if status is StepStatus.SUCCEEDED or status is StepStatus.SKIPPED:
        return  # done before a restart
    resume = state.resume
    if resume is not None:
        state.resume = None
    elif step.when is not None:
        try:
            go = step.when.evaluate(execution.ctx)
        except EvaluationError as exc:
            execution.step_failed(state, evaluation_failure(path, exc, "when"))
            raise StepFailure from exc
        if not go:
            execution.step_skipped(state, f"condition is false: {step.when.expression}")
            return
    if resume is None:
        execution.step_running(state)
    deadline = scope.deadline
    try:
        output = await scope.runner.run(
            execution, state, step.call, deadline=deadline, metadata=scope.metadata, resume=resume
        )
    except CallFailed as failed:
        if failed.error.code is Code.DEADLINE_EXCEEDED and deadline and deadline.expired:
            raise DeadlinePassed from None
        execution.step_failed(state, failed.error)
        raise StepFailure from None
    execution.step_succeeded(state, output)


async def run_parallel(scope: Scope, step: ParallelStep) -> None:
    """A parallel group: every child at once; one failing cancels the others (DESIGN §4).

    The children keep their own ids: the group adds nothing to their paths.
    """
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    execution = scope.execution
    try:
        async with asyncio.TaskGroup() as group:
            for child in step.steps:
                group.create_task(run_step(scope, child))
    except BaseExceptionGroup as group_error:
        if task.cancelling() > cancelling:
            # Python 3.11's TaskGroup leaves its own cancel request on the parent when a
            # child fails during __aexit__ (fixed in 3.12); take it back so that later
            # timeouts and cancels are read correctly. A caller cancel stays counted.
            task.uncancel()
        failures, rest = group_error.split(StepFailure)
        _, rest = rest.split(DeadlinePassed) if rest is not None else (None, None)
        if rest is not None:
            raise rest from None
        if failures is None:
            raise DeadlinePassed from None
        execution.cancel_running()  # the siblings the failure cut short
        raise StepFailure from None


register(CallStep, run_call)
register(ParallelStep, run_parallel)
