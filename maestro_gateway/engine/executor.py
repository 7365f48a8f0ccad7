"""The engine: runs one execution of a workflow (DESIGN §4).

Order of events for one execution::

    execution_started
    per step: step_skipped | step_started(1) [step_retrying(n) step_started(n+1)]…
              then step_succeeded | step_failed
    on failure: step_failed (code CANCELLED, or DEADLINE_EXCEEDED) for every step interrupted
              in flight, then per compensation, newest first:
              compensation_started(1) [compensation_started(n+1)]… then
              compensation_succeeded | compensation_failed
    execution_finished  (always last)

``step_retrying.attempt`` is the attempt that failed; the next ``step_started`` carries the next
number. Parallel children interleave their events.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Mapping
from typing import Any

from maestro_gateway.codes import Code
from maestro_gateway.engine.calls import CallFailed, CallRunner, evaluation_failure
from maestro_gateway.engine.context import Execution
from maestro_gateway.engine.events import (
    ErrorInfo,
    EventSink,
    ExecutionResult,
    ExecutionStatus,
    StepStatus,
)
from maestro_gateway.engine.saga import compensate
from maestro_gateway.errors import EvaluationError
from maestro_gateway.model.types import CallStep, ParallelStep, Workflow
from maestro_gateway.resilience.breaker import BreakerRegistry
from maestro_gateway.resilience.clock import Clock, SystemClock
from maestro_gateway.resilience.deadline import Deadline
from maestro_gateway.transports.base import Metadata, TransportFactory

_DEADLINE_SLACK = 0.05
"""A cancel this close to the caller's deadline (seconds) is that deadline passing."""


class _StepFailure(Exception):
    """A step failed for good; the cause is already recorded on the execution."""


class _DeadlinePassed(Exception):
    """A call ran out of time because the execution's deadline passed (not its own timeout).

    Treated like the deadline timer firing, so the cause names the first step in flight whichever
    of the equal timers (the workflow's, the attempt's, the transport's) happened to fire first.
    """


class Engine:
    """Runs workflows; one engine serves every execution of a process.

    Args:
        transports: builds (and caches) the transport of each service.
        clock: time for deadlines, backoff, breakers and timestamps (the system clock if None).
        rng: randomness for backoff jitter.
        breakers: circuit breakers shared by every execution (a new registry if None).
    """

    def __init__(
        self,
        transports: TransportFactory,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.breakers = breakers if breakers is not None else BreakerRegistry(self.clock)
        self._transports = transports
        self._runner = CallRunner(transports, self.breakers, self.clock, rng or random.Random())

    def prepare(self, workflow: Workflow) -> None:
        """Build the transport of every service ``workflow`` calls, ahead of its first execution.

        Transports are otherwise made on first use, inside an execution: the one-time cost of
        importing a wire stack and building its client would then block the event loop in the
        middle of that execution (delaying its parallel siblings and every other execution).
        """
        for service in workflow.services.values():
            self._transports.transport_for(service)

    async def execute(
        self,
        workflow: Workflow,
        input: Any,
        *,
        execution_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the caller's deadline, part of the API
        metadata: Metadata = (),
        labels: Mapping[str, str] | None = None,
        on_event: EventSink | None = None,
    ) -> ExecutionResult:
        """Run ``workflow`` on ``input`` and return its result.

        Never raises for a workflow failure: the result carries the status and the cause, and
        ``ExecutionFinished`` is the last event. When the calling task is cancelled, the calls in
        flight are cancelled, compensations still run (bounded by ``compensation_timeout``), the
        finished event reports CANCELLED, and then ``CancelledError`` propagates.

        Args:
            workflow: the workflow (its input already checked by ``model.schema.check_input``).
            input: the execution input.
            execution_id: the id to use; a new UUID4 when None.
            timeout: the caller's remaining deadline in seconds, or None.
            metadata: caller headers forwarded to every downstream call.
            labels: caller labels, reported in ``ExecutionStarted``.
            on_event: receives every event synchronously, in order; must not block.
        """
        clock = self.clock
        execution = Execution(workflow, execution_id or str(uuid.uuid4()), input, clock, on_event)
        execution.emit_started(labels or {})
        wf_deadline = (
            Deadline.from_timeout(clock, workflow.timeout) if workflow.timeout is not None else None
        )
        caller_deadline = Deadline.from_timeout(clock, timeout) if timeout is not None else None
        deadline = Deadline.min(wf_deadline, caller_deadline)
        output: Any = None
        cancelled = False
        try:
            if deadline is None:
                await self._run_steps(execution, None, metadata)
            else:
                async with asyncio.timeout(deadline.remaining()):
                    await self._run_steps(execution, deadline, metadata)
            output = self._output(execution)
        except _StepFailure:
            task = asyncio.current_task()
            # A TaskGroup whose child failed swallows a concurrent cancel of its parent.
            cancelled = task is not None and task.cancelling() > 0
        except (TimeoutError, _DeadlinePassed):
            caller_first = caller_deadline is not None and caller_deadline is deadline
            self._interrupt(
                execution,
                Code.DEADLINE_EXCEEDED,
                "caller deadline exceeded"
                if caller_first
                else f"workflow timeout of {workflow.timeout:g}s exceeded",
            )
        except asyncio.CancelledError:
            cancelled = True
            if caller_deadline is not None and caller_deadline.remaining() <= _DEADLINE_SLACK:
                # The RPC layer cancels us when the caller's deadline passes; its timer and ours
                # are a few ms apart. Report the deadline, as the caller sees it.
                self._interrupt(execution, Code.DEADLINE_EXCEEDED, "caller deadline exceeded")
            else:
                self._interrupt(execution, Code.CANCELLED, "execution cancelled by the caller")
        if execution.cause is None:
            result = execution.result(ExecutionStatus.SUCCEEDED, output)
            execution.emit_finished(result)
            return result
        if execution.completed:
            rollback = compensate(execution, self._runner, metadata)
            # Shielded even when not cancelled yet: after a caller deadline our timer fires first
            # and the RPC layer's cancel lands a few ms later, in the middle of the rollback.
            ok = await _shielded(rollback)
            status = ExecutionStatus.COMPENSATED if ok else ExecutionStatus.COMPENSATION_FAILED
        else:
            status = ExecutionStatus.FAILED
        result = execution.result(status, None)
        execution.emit_finished(result)
        task = asyncio.current_task()
        if cancelled or (task is not None and task.cancelling() > 0):
            raise asyncio.CancelledError
        return result

    async def _run_steps(
        self, execution: Execution, deadline: Deadline | None, md: Metadata
    ) -> None:
        for step in execution.workflow.steps:
            if isinstance(step, ParallelStep):
                await self._run_parallel(execution, step, deadline, md)
            else:
                await self._run_step(execution, step, deadline, md)

    async def _run_parallel(
        self, execution: Execution, step: ParallelStep, deadline: Deadline | None, md: Metadata
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        try:
            async with asyncio.TaskGroup() as group:
                for child in step.steps:
                    group.create_task(self._run_step(execution, child, deadline, md))
        except BaseExceptionGroup as group_error:
            if task.cancelling() > cancelling:
                # Python 3.11's TaskGroup leaves its own cancel request on the parent when a
                # child fails during __aexit__ (fixed in 3.12); take it back so that later
                # timeouts and cancels are read correctly. A caller cancel stays counted.
                task.uncancel()
            failures, rest = group_error.split(_StepFailure)
            _, rest = rest.split(_DeadlinePassed) if rest is not None else (None, None)
            if rest is not None:
                raise rest from None
            if failures is None:
                raise _DeadlinePassed from None
            # Siblings cancelled because of the failure: reported, never compensated.
            failed = execution.cause
            reason = f"cancelled: step '{failed.step_id}' failed" if failed else "cancelled"
            for state in execution.running():
                execution.step_failed(
                    state, ErrorInfo(state.step.id, Code.CANCELLED, reason), StepStatus.CANCELLED
                )
            raise _StepFailure from None

    async def _run_step(
        self, execution: Execution, step: CallStep, deadline: Deadline | None, md: Metadata
    ) -> None:
        state = execution.states[step.id]
        if step.when is not None:
            try:
                go = step.when.evaluate(execution.ctx)
            except EvaluationError as exc:
                execution.step_failed(state, evaluation_failure(step.id, exc, "when"))
                raise _StepFailure from exc
            if not go:
                execution.step_skipped(state, f"condition is false: {step.when.expression}")
                return
        execution.step_running(state)
        try:
            output = await self._runner.run(
                execution, state, step.call, deadline=deadline, metadata=md
            )
        except CallFailed as failed:
            if failed.error.code is Code.DEADLINE_EXCEEDED and deadline and deadline.expired:
                raise _DeadlinePassed from None
            execution.step_failed(state, failed.error)
            raise _StepFailure from None
        execution.step_succeeded(state, output)

    def _output(self, execution: Execution) -> Any:
        template = execution.workflow.output
        ctx = execution.ctx
        if template is None:
            return {s.output: ctx.get(s.output) for s in execution.workflow.call_steps()}
        try:
            return template.render(ctx)
        except EvaluationError as exc:
            named = exc.within("output")
            execution.cause = ErrorInfo("", Code.INVALID_ARGUMENT, f"workflow {named.message}")
            return None

    @staticmethod
    def _interrupt(execution: Execution, code: Code, message: str) -> None:
        """Record a deadline or a cancel: the cause names the first step in flight."""
        running = execution.running()
        status = StepStatus.CANCELLED if code is Code.CANCELLED else StepStatus.FAILED
        if execution.cause is None:
            execution.cause = ErrorInfo(running[0].step.id if running else "", code, message)
        for state in running:
            execution.step_failed(state, ErrorInfo(state.step.id, code, message), status)


async def _shielded(rollback: Any) -> bool:
    """Run the rollback to completion even if the awaiting task is cancelled again."""
    task: asyncio.Task[bool] = asyncio.ensure_future(rollback)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()
