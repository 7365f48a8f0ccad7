"""Step kinds: one executor function per model class, dispatched by type (DESIGN §2, §12).

A kind is a class of ``maestro_gateway.model.types`` plus one async function here, registered
with :func:`register`, that runs one step of that class in a :class:`Scope`. Nothing else in the
engine knows the kinds: a step runs through :func:`run_step`, a list of steps through
:func:`run_steps`, whatever they are.

A kind's function returns when its step is done (succeeded, skipped, or failed under
``continue_on_error``) and raises :class:`StepFailure` once the failure is recorded on the
step's state, or :class:`DeadlinePassed`. Every kind but ``parallel`` has a state of its own;
but for ``call`` (one ``step_started`` per attempt, :func:`run_call`), :func:`_run_kind` evaluates
its ``when``, reports ``step_started`` (attempt 1), runs the kind's body and reports
``step_succeeded`` with the body's output, or ``step_failed``.

A step whose state was rebuilt from the journal (``maestro_gateway.engine.recovery``) is run
again by the same functions: one that ended is not run again (its output is published where the
run that reaches it again reads it), one that was running continues without a second
``step_started``, so a foreach resumes its iterations and a loop its iteration.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from maestro_gateway.codes import Code
from maestro_gateway.engine.calls import CallFailed, CallRunner, evaluation_failure
from maestro_gateway.engine.context import Execution, StepState, first_call
from maestro_gateway.engine.events import ErrorInfo, StepStatus
from maestro_gateway.engine.frames import (
    KindError,
    child_ctx,
    foreach_items,
    iteration_ctx,
    publish_last_iteration,
)
from maestro_gateway.engine.paths import child_prefix, item_prefix, step_path
from maestro_gateway.engine.saga import compensate
from maestro_gateway.engine.signals import SignalPort
from maestro_gateway.errors import EvaluationError
from maestro_gateway.model.types import (
    DEFAULT_FOREACH_CONCURRENCY,
    CallStep,
    EmitStep,
    FailStep,
    ForeachStep,
    LoopStep,
    ParallelStep,
    StatefulStep,
    Step,
    SwitchStep,
    WaitStep,
    Workflow,
    WorkflowStep,
    level,
)
from maestro_gateway.resilience.deadline import Deadline
from maestro_gateway.transports.base import Metadata

S = TypeVar("S")
MAX_SIGNAL_ID = 128
"""The longest ``signal_id`` an emit step may give (derived ones may be longer)."""
_SIGNAL_ID = re.compile(r"[A-Za-z0-9._:\[\]-]+")


class StepFailure(Exception):
    """A step failed for good; ``error`` is the failure (the path of the step that failed).

    Already recorded on the states concerned; it becomes the execution's cause when nothing on
    the way up (``continue_on_error``) stops it.
    """

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


class DeadlinePassed(Exception):
    """A call ran out of time because the execution's deadline passed (not its own timeout).

    Treated like the deadline timer firing, so the cause names the first step in flight whichever
    of the equal timers (the workflow's, the attempt's, the transport's) happened to fire first.
    """


@dataclass(frozen=True, slots=True)
class Scope:
    """Where steps run: the execution, what bounds their calls, their paths and their context.

    Attributes:
        execution: the execution they belong to.
        runner: makes their calls.
        deadline: bounds every call (the earliest of the workflow's, the caller's and those of
            enclosing sub-workflows), or None.
        metadata: the caller's headers, forwarded to every call.
        prefix: the prefix of the paths of the steps run here ("" at the top level).
        ctx: the context their expressions read and their outputs enter (None: the
            execution's own).
        parent: the state of the foreach, loop or workflow step whose body this is, or None.
    """

    execution: Execution
    runner: CallRunner
    deadline: Deadline | None
    metadata: Metadata
    prefix: str = ""
    """Given to :func:`~maestro_gateway.engine.paths.step_path` with each step's id."""
    ctx: dict[str, Any] | None = None
    parent: StepState | None = None

    def inner(
        self,
        prefix: str,
        ctx: dict[str, Any],
        parent: StepState,
        deadline: Deadline | None = None,
    ) -> Scope:
        """The scope of a body: its prefix, its context, its owner (and a nearer deadline)."""
        return Scope(
            self.execution,
            self.runner,
            deadline if deadline is not None else self.deadline,
            self.metadata,
            prefix,
            ctx,
            parent,
        )


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


def _state(scope: Scope, step: StatefulStep) -> StepState:
    execution = scope.execution
    path = step_path(scope.prefix, step.id)
    ctx = scope.ctx
    if ctx is None:
        return execution.states[path]
    return execution.state(step, path, ctx, scope.parent)


async def run_call(scope: Scope, step: CallStep) -> None:
    """A call step: its condition, then its call with retries (DESIGN §4)."""
    execution = scope.execution
    state = _state(scope, step)
    status = state.status
    if status is StepStatus.SUCCEEDED or status is StepStatus.SKIPPED:
        return  # done before a restart (a compensation it may have in flight is the saga's)
    resume = state.resume
    if resume is not None:
        state.resume = None
        execution.span_of(state)  # resumed mid-call: with tracing on, its span opens here
    elif status is not StepStatus.PENDING:
        _ended(state, step)
        return
    elif not _begins(execution, state, step):
        return
    else:
        execution.step_running(state)
    deadline = scope.deadline
    try:
        output = await scope.runner.run(
            execution, state, step.call, deadline=deadline, metadata=scope.metadata, resume=resume
        )
    except CallFailed as failed:
        if failed.error.code is Code.DEADLINE_EXCEEDED and deadline and deadline.expired:
            raise DeadlinePassed from None
        _fail(execution, state, failed.error, step)
        return
    execution.step_succeeded(state, output)


def _fail(execution: Execution, state: StepState, error: ErrorInfo, step: StatefulStep) -> None:
    """Record ``state``'s failure; raise it unless the step continues on error."""
    execution.step_failed(state, error)
    if not getattr(step, "continue_on_error", False):
        raise StepFailure(error)


def _begins(execution: Execution, state: StepState, step: StatefulStep) -> bool:
    """Whether a pending step runs: its ``when`` holds (else it is skipped, or fails)."""
    when = step.when
    if when is None:
        return True
    try:
        go = when.evaluate(state.ctx)
    except EvaluationError as exc:
        _fail(execution, state, evaluation_failure(state.path, exc, "when"), step)
        return False
    if not go:
        execution.step_skipped(state, f"condition is false: {when.expression}")
    return go


def _ended(state: StepState, step: StatefulStep) -> None:
    """A step that ended before a restart: raise its failure again unless it continues on error."""
    if state.error is None or getattr(step, "continue_on_error", False):
        return
    if state.status is StepStatus.FAILED or state.status is StepStatus.CANCELLED:
        raise StepFailure(state.error)


async def _run_kind(
    scope: Scope,
    step: StatefulStep,
    body: Callable[[Scope, Any, StepState], Coroutine[Any, Any, Any]],
) -> None:
    """Run a kind's step: condition, ``step_started``, ``body``, then its end (module docstring)."""
    execution = scope.execution
    state = _state(scope, step)
    status = state.status
    if status is StepStatus.PENDING:
        if not _begins(execution, state, step):
            return
        execution.step_running(state)
        state.attempts = 1
        execution.emit_attempt(state.path, 1, False)
    elif status is not StepStatus.RUNNING:
        _ended(state, step)
        return
    try:
        output = await body(scope, step, state)
    except KindError as problem:
        _fail(execution, state, problem.error, step)
        return
    except StepFailure as failure:
        _fail(execution, state, failure.error, step)
        return
    execution.step_succeeded(state, output)


def _group_failure(
    task: asyncio.Task[Any], cancelling: int, group_error: BaseExceptionGroup[Any]
) -> ErrorInfo:
    """The failure that ended a task group, or raise what ended it otherwise.

    Raises :class:`DeadlinePassed` when a deadline did, and anything else as it is.
    """
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
    first = failures.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, StepFailure)
    return first.error


async def run_parallel(scope: Scope, step: ParallelStep) -> None:
    """A parallel group: every child at once; one failing cancels the others (DESIGN §4).

    The children keep their own ids: the group adds nothing to their paths, and has no state.
    """
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    try:
        async with asyncio.TaskGroup() as group:
            for child in step.steps:
                group.create_task(run_step(scope, child))
    except BaseExceptionGroup as group_error:
        error = _group_failure(task, cancelling, group_error)
        scope.execution.cancel_running(error, scope.prefix, step)  # the siblings cut short
        raise StepFailure(error) from None


async def _foreach(scope: Scope, step: ForeachStep, state: StepState) -> list[Any]:
    """Iterations in item order, at most ``concurrency`` at a time; the list of their outputs."""
    ctx = state.ctx
    path = state.path
    items = foreach_items(step, ctx, path)
    concurrency = _concurrency(step, ctx, path)
    outputs: list[Any] = [None] * len(items)
    names = step.body_outputs

    async def iteration(index: int) -> None:
        frame = iteration_ctx(ctx, step.index_name, index, step.item_name, items[index])
        await run_steps(scope.inner(item_prefix(path, index), frame, state), step.steps)
        outputs[index] = {name: frame.get(name) for name in names}

    if concurrency == 1 or len(items) <= 1:
        for index in range(len(items)):
            await iteration(index)
        return outputs
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    slots = asyncio.Semaphore(concurrency)

    async def bounded(index: int) -> None:
        try:
            await iteration(index)
        finally:
            slots.release()

    try:
        async with asyncio.TaskGroup() as group:
            for index in range(len(items)):
                await slots.acquire()
                group.create_task(bounded(index))
    except BaseExceptionGroup as group_error:
        error = _group_failure(task, cancelling, group_error)
        scope.execution.cancel_running(error, f"{path}[")  # the iterations cut short
        raise StepFailure(error) from None
    return outputs


def _concurrency(step: ForeachStep, ctx: dict[str, Any], path: str) -> int:
    if step.concurrency is None:
        return DEFAULT_FOREACH_CONCURRENCY
    try:
        value = step.concurrency.render(ctx)
    except EvaluationError as exc:
        raise KindError(evaluation_failure(path, exc, "concurrency")) from exc
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KindError(
            ErrorInfo(
                path,
                Code.INVALID_ARGUMENT,
                f"step '{path}': concurrency: expected an integer of at least 1, got {value!r}",
            )
        )
    return value


async def run_foreach(scope: Scope, step: ForeachStep) -> None:
    """A foreach step (DESIGN §12)."""
    await _run_kind(scope, step, _foreach)


async def _switch(scope: Scope, step: SwitchStep, state: StepState) -> int | None:
    """The first branch whose condition holds runs; the others' steps are SKIPPED first."""
    ctx = state.ctx
    path = state.path
    execution = scope.execution
    taken: int | None = None
    for index, branch in enumerate(step.branches):
        if branch.when is None:
            taken = index
            break
        try:
            if branch.when.evaluate(ctx):
                taken = index
                break
        except EvaluationError as exc:
            raise KindError(evaluation_failure(path, exc, f"switch[{index}].when")) from exc
    reason = (
        f"switch '{path}' took branch {taken}"
        if taken is not None
        else f"no branch of switch '{path}' matched"
    )
    for index, branch in enumerate(step.branches):
        if index == taken:
            continue
        for other in level(branch.steps):
            if isinstance(other, ParallelStep):
                continue
            skipped = _state(scope, other)
            if skipped.status is StepStatus.PENDING:
                execution.step_skipped(skipped, reason)
    if taken is not None:
        await run_steps(scope, step.branches[taken].steps)
    return taken


async def run_switch(scope: Scope, step: SwitchStep) -> None:
    """A switch step (DESIGN §12)."""
    await _run_kind(scope, step, _switch)


async def _loop(scope: Scope, step: LoopStep, state: StepState) -> dict[str, Any]:
    """A bounded do-while; the last iteration's outputs stay visible after it."""
    ctx = state.ctx
    path = state.path
    execution = scope.execution
    names = step.body_outputs
    for iteration in range(step.max_iterations):
        prefix = item_prefix(path, iteration)
        if iteration and step.delay > 0 and prefix not in execution.frames:
            await execution.clock.sleep(step.delay)  # bounded by the deadlines' timers
        frame = iteration_ctx(ctx, step.index_name, iteration)
        await run_steps(scope.inner(prefix, frame, state), step.steps)
        try:
            done = step.until.evaluate(frame)
        except EvaluationError as exc:
            raise KindError(evaluation_failure(path, exc, "until")) from exc
        if done:
            output = {name: frame.get(name) for name in names}
            publish_last_iteration(step, ctx, output, frame)
            return output
    raise KindError(
        ErrorInfo(
            path,
            Code.DEADLINE_EXCEEDED,
            f"step '{path}': loop ran max_iterations ({step.max_iterations}) "
            f"without 'until' holding",
        )
    )


async def run_loop(scope: Scope, step: LoopStep) -> None:
    """A loop step (DESIGN §12)."""
    await _run_kind(scope, step, _loop)


async def _workflow(scope: Scope, step: WorkflowStep, state: StepState) -> Any:
    """The child's steps inside this execution; on failure the child compensates itself first."""
    child = step.child
    path = state.path
    execution = scope.execution
    if child is None:
        raise KindError(
            ErrorInfo(
                path,
                Code.FAILED_PRECONDITION,
                f"step '{path}': workflow '{step.workflow}' is not loaded with this one",
            )
        )
    frame = child_ctx(step, child, state.ctx, execution.execution_id, path)
    prefix = child_prefix(path)
    own: Deadline | None = None
    if child.timeout is not None:
        own = Deadline(state.started + child.timeout, execution.clock)
    inner = scope.inner(prefix, frame, state, Deadline.min(scope.deadline, own))
    try:
        try:
            if own is None:
                await run_steps(inner, child.steps)
            else:
                async with asyncio.timeout(own.remaining()):
                    await run_steps(inner, child.steps)
        except (TimeoutError, DeadlinePassed):
            if own is None or (scope.deadline is not None and scope.deadline.expired):
                raise
            timeout = child.timeout or 0.0
            raise StepFailure(
                _child_timed_out(execution, prefix, path, child.name, timeout)
            ) from None
        return _child_output(child, frame, path)
    except (StepFailure, KindError) as failure:
        completed = [s for s in execution.completed if s.path.startswith(prefix)]
        if completed:
            await compensate(
                execution,
                scope.runner,
                scope.metadata,
                states=completed,
                error=failure.error,
                budget=child.compensation_timeout,
            )
        raise


def _child_timed_out(
    execution: Execution, prefix: str, path: str, name: str, timeout: float
) -> ErrorInfo:
    """Record a sub-workflow's own timeout on the steps it cut short; the error it fails with."""
    message = f"workflow '{name}' timeout of {timeout:g}s exceeded"
    running = execution.running(prefix)
    first = first_call(running)
    execution.interrupt(running, Code.DEADLINE_EXCEEDED, message)
    return ErrorInfo(first.path if first else path, Code.DEADLINE_EXCEEDED, message)


def _child_output(child: Workflow, frame: dict[str, Any], path: str) -> Any:
    template = child.output
    if template is None:
        return {name: frame.get(name) for name in child.outputs()}
    try:
        return template.render(frame)
    except EvaluationError as exc:
        raise KindError(evaluation_failure(path, exc, "output")) from exc


async def run_workflow(scope: Scope, step: WorkflowStep) -> None:
    """A sub-workflow step (DESIGN §12)."""
    await _run_kind(scope, step, _workflow)


async def _failing(scope: Scope, step: FailStep, state: StepState) -> None:
    """End the execution with the step's code and message."""
    try:
        message = step.message.render_text(state.ctx)
    except EvaluationError as exc:
        raise KindError(evaluation_failure(state.path, exc, "fail.message")) from exc
    raise KindError(ErrorInfo(state.path, step.code, message))


async def run_fail(scope: Scope, step: FailStep) -> None:
    """A fail step (DESIGN §12)."""
    await _run_kind(scope, step, _failing)


async def _emitting(scope: Scope, step: EmitStep, state: StepState) -> Any:
    """Send the signal; its id defaults to ``<execution_id>.<step path>`` (sent once)."""
    execution = scope.execution
    path = state.path
    port = _port(execution, path)
    try:
        params = step.params.render(state.ctx)
    except EvaluationError as exc:
        raise KindError(evaluation_failure(path, exc, "emit.params")) from exc
    signal_id = f"{execution.execution_id}.{path}"
    if step.signal_id is not None:
        try:
            signal_id = step.signal_id.render_text(state.ctx)
        except EvaluationError as exc:
            raise KindError(evaluation_failure(path, exc, "emit.signal_id")) from exc
    if not isinstance(params, dict):
        raise KindError(
            ErrorInfo(path, Code.INVALID_ARGUMENT, f"step '{path}': emit.params must be an object")
        )
    if step.signal_id is not None and (
        len(signal_id) > MAX_SIGNAL_ID or not _SIGNAL_ID.fullmatch(signal_id)
    ):
        raise KindError(
            ErrorInfo(
                path,
                Code.INVALID_ARGUMENT,
                f"step '{path}': emit.signal_id must be at most {MAX_SIGNAL_ID} letters, digits "
                "or ._:-[]",
            )
        )
    return await port.emit(step.signal, params, signal_id, (execution.execution_id, path))


async def run_emit(scope: Scope, step: EmitStep) -> None:
    """An emit step (DESIGN §13)."""
    await _run_kind(scope, step, _emitting)


async def _waiting(scope: Scope, step: WaitStep, state: StepState) -> Any:
    """The first matching signal received since the execution started, within ``timeout``."""
    execution = scope.execution
    path = state.path
    port = _port(execution, path)
    ctx = state.ctx
    match = step.match

    def matches(signal: dict[str, Any]) -> bool:
        return match is None or match.evaluate({**ctx, "signal": signal})

    remaining = state.started + step.timeout - execution.clock.monotonic()
    try:
        async with asyncio.timeout(max(0.0, remaining)):
            return await port.wait(
                execution.execution_id,
                step.signal,
                matches,
                execution.started_wall,
                execution.consumed_signals,
            )
    except EvaluationError as exc:
        raise KindError(evaluation_failure(path, exc, "wait.when")) from exc
    except TimeoutError:
        if scope.deadline is not None and scope.deadline.expired:
            raise DeadlinePassed from None
        raise KindError(
            ErrorInfo(
                path,
                Code.DEADLINE_EXCEEDED,
                f"step '{path}': no signal '{step.signal}' within {step.timeout:g}s",
            )
        ) from None


async def run_wait(scope: Scope, step: WaitStep) -> None:
    """A wait step (DESIGN §13): holds no call; survives restarts (it looks again)."""
    await _run_kind(scope, step, _waiting)


def _port(execution: Execution, path: str) -> SignalPort:
    port = execution.signals
    if port is None:
        raise KindError(
            ErrorInfo(
                path,
                Code.FAILED_PRECONDITION,
                f"step '{path}': signals need a gateway (maestro serve); this engine has none",
            )
        )
    return port


register(CallStep, run_call)
register(ParallelStep, run_parallel)
register(ForeachStep, run_foreach)
register(SwitchStep, run_switch)
register(LoopStep, run_loop)
register(WorkflowStep, run_workflow)
register(FailStep, run_fail)
register(WaitStep, run_wait)
register(EmitStep, run_emit)
