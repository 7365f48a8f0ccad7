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
number. Parallel children interleave their events. Each step runs through the executor of its
kind (``maestro_gateway.engine.kinds``); events and results name steps by path.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from maestro_gateway.codes import Code
from maestro_gateway.engine.calls import CallRunner
from maestro_gateway.engine.context import Execution, first_call
from maestro_gateway.engine.events import (
    ErrorInfo,
    Event,
    EventSink,
    ExecutionResult,
    ExecutionStatus,
    StepStatus,
)
from maestro_gateway.engine.journaling import final_state, result_data
from maestro_gateway.engine.kinds import DeadlinePassed, Scope, StepFailure, run_steps
from maestro_gateway.engine.recovery import Phase, restore
from maestro_gateway.engine.saga import compensate
from maestro_gateway.engine.signals import SignalPort
from maestro_gateway.engine.tracing import ExecutionTrace
from maestro_gateway.errors import EvaluationError
from maestro_gateway.journal.base import (
    CreateEntry,
    ExecutionRecord,
    ExecutionState,
    Journal,
    StateEntry,
)
from maestro_gateway.model.stored import stored_source
from maestro_gateway.model.types import Workflow
from maestro_gateway.resilience.breaker import BreakerRegistry
from maestro_gateway.resilience.clock import Clock, SystemClock
from maestro_gateway.resilience.deadline import Deadline
from maestro_gateway.transports.base import Metadata, TransportFactory

_DEADLINE_SLACK = 0.05
"""A cancel this close to the caller's deadline (seconds) is that deadline passing."""

T = TypeVar("T")


class ExecutionExists(Exception):
    """The execution id is already in the journal; ``record`` is what it holds."""

    def __init__(self, record: ExecutionRecord) -> None:
        super().__init__(f"execution '{record.execution_id}' already exists")
        self.record = record


def new_record(
    workflow: Workflow,
    input: Any,
    execution_id: str,
    *,
    clock: Clock,
    timeout: float | None = None,
    metadata: Metadata = (),
    labels: Mapping[str, str] | None = None,
    triggered_by: str = "",
) -> ExecutionRecord:
    """The journal record of a new execution starting now; deadlines become wall-clock times.

    ``triggered_by`` is the id of the signal whose trigger started it (DESIGN §13).
    """
    now = clock.wall()
    return ExecutionRecord(
        execution_id=execution_id,
        workflow=workflow.name,
        source=stored_source(workflow),
        path=workflow.path,
        input=input,
        labels=dict(labels or {}),
        metadata=tuple(metadata),
        started_at=now,
        workflow_deadline=now + workflow.timeout if workflow.timeout is not None else None,
        caller_deadline=now + timeout if timeout is not None else None,
        triggered_by=triggered_by,
    )


class Engine:
    """Runs workflows; one engine serves every execution of a process.

    Args:
        transports: builds (and caches) the transport of each service.
        clock: time for deadlines, backoff, breakers and timestamps (the system clock if None).
        rng: randomness for backoff jitter.
        breakers: circuit breakers shared by every execution (a new registry if None).
        journal: where executions are recorded (write-ahead, DESIGN §10), or None.
    """

    def __init__(
        self,
        transports: TransportFactory,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        breakers: BreakerRegistry | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.breakers = breakers if breakers is not None else BreakerRegistry(self.clock)
        self.journal = journal
        self._transports = transports
        self._runner = CallRunner(transports, self.breakers, self.clock, rng or random.Random())
        self._handing_over = False
        self._handed_over: set[str] = set()
        self._cancel_reasons: dict[str, str] = {}
        self.signals: SignalPort | None = None
        """Where wait and emit steps reach signals (set by the gateway), or None."""

    def prepare(self, workflow: Workflow) -> None:
        """Build the transport of every service ``workflow`` calls, ahead of its first execution.

        Transports are otherwise made on first use, inside an execution: the one-time cost of
        importing a wire stack and building its client would then block the event loop in the
        middle of that execution (delaying its parallel siblings and every other execution).
        """
        for service in workflow.services.values():
            self._transports.transport_for(service)

    def hand_over(self, execution_id: str | None = None) -> None:
        """From now on a cancel stops an execution where it is, for another start to resume.

        The gateway calls this before cancelling what is still running at the end of a
        shutdown with a durable journal: no compensation runs, nothing more is journaled, and
        the execution stays unfinished (an attempt in flight has its intent and no outcome).
        With ``execution_id``, for that execution only (a replica that lost its lease on it,
        DESIGN §11); it holds until that execution's run ends.
        """
        if execution_id is None:
            self._handing_over = True
        else:
            self._handed_over.add(execution_id)

    def guard_calls(self, may_send: Callable[[str], Awaitable[bool]] | None) -> None:
        """Ask ``may_send(execution_id)`` before each call is sent, once its intent is durable.

        False stops the execution there, as a hand-over does (the gateway has handed it over
        already): a replica whose lease may have lapsed (a long pause) sends nothing on it.
        """
        self._runner.may_send = may_send

    def _handing(self, execution_id: str) -> bool:
        return self._handing_over or execution_id in self._handed_over

    def note_cancel(self, execution_id: str, reason: str) -> None:
        """Give the reason of the cancel about to reach ``execution_id`` (in its CANCELLED error)."""
        self._cancel_reasons[execution_id] = reason

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
        record: ExecutionRecord | None = None,
        trace: ExecutionTrace | None = None,
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
            on_event: receives every event synchronously, in order; must not block. With a
                journal, each event once it is durable.
            record: the execution's record, already committed to the journal by the caller
                (which then gives the id, deadlines, metadata and labels); when None and the
                engine has a journal, the engine commits one first.
            trace: the execution's spans when tracing is on (``maestro_gateway.engine.tracing``).

        Raises:
            ExecutionExists: the engine committed the record itself and the id was taken.
        """
        clock = self.clock
        journal = self.journal
        if record is None:
            record = new_record(
                workflow,
                input,
                execution_id or str(uuid.uuid4()),
                clock=clock,
                timeout=timeout,
                metadata=metadata,
                labels=labels,
            )
            if journal is not None and execution_id is None:
                # A generated id cannot be taken: committed with the first entries after it.
                journal.submit((CreateEntry(record),))
            elif journal is not None:
                existing = await journal.create(record)
                if existing is not None:
                    raise ExecutionExists(existing)
        execution = self._execution(workflow, record, on_event)
        execution.trace = trace
        execution.emit_started(record.labels)
        try:
            return await self._drive(execution, record, Phase.RUN)
        finally:
            self._handed_over.discard(record.execution_id)

    async def resume(
        self,
        workflow: Workflow,
        record: ExecutionRecord,
        events: Sequence[Event],
        *,
        reason: str,
        on_event: EventSink | None = None,
        trace: ExecutionTrace | None = None,
    ) -> ExecutionResult:
        """Continue an unfinished execution from its journaled ``events`` (DESIGN §10).

        Steps that completed are not called again; an attempt that was in flight counts as
        failed with UNAVAILABLE under the step's retry policy; an interrupted rollback
        continues with a fresh compensation budget; a deadline that passed meanwhile ends the
        execution with DEADLINE_EXCEEDED. Emits ``recovered`` first, then continues the sequence.

        Args:
            workflow: the definition the execution started with (loaded from ``record.source``
                by ``maestro_gateway.model.stored.load_stored``).
            record: its journal record.
            events: its journaled events, in order.
            reason: the text of the ``recovered`` event.
            on_event: as for :meth:`execute`.
            trace: as for :meth:`execute`; spans open from here on (the run before the restart
                had its own).
        """
        execution = self._execution(workflow, record, on_event)
        phase = restore(execution, events, self.clock.wall())
        execution.trace = trace
        if not events:
            execution.emit_started(record.labels)  # stopped right after its record was committed
        execution.emit_recovered(reason)
        try:
            return await self._drive(execution, record, phase)
        finally:
            self._handed_over.discard(record.execution_id)

    def _execution(
        self, workflow: Workflow, record: ExecutionRecord, on_event: EventSink | None
    ) -> Execution:
        clock = self.clock
        execution = Execution(
            workflow, record.execution_id, record.input, clock, on_event, self.journal
        )
        execution.signals = self.signals
        execution.started_wall = record.started_at
        execution.started_mono = clock.monotonic() - (clock.wall() - record.started_at)
        return execution

    async def _drive(
        self, execution: Execution, record: ExecutionRecord, phase: Phase
    ) -> ExecutionResult:
        """Run (or continue) ``execution`` to its end: steps, then rollback when needed."""
        workflow = execution.workflow
        clock = self.clock
        metadata = record.metadata
        wf_deadline = _wall_deadline(clock, record.workflow_deadline)
        caller_deadline = _wall_deadline(clock, record.caller_deadline)
        deadline = Deadline.min(wf_deadline, caller_deadline)
        caller_first = caller_deadline is not None and caller_deadline is deadline
        deadline_message = (
            "caller deadline exceeded"
            if caller_first
            else f"workflow timeout of {workflow.timeout or 0:g}s exceeded"
        )
        output: Any = None
        cancelled = False
        if phase is Phase.RUN and deadline is not None and deadline.expired:
            # It passed while the gateway was down: nothing more is called.
            self._interrupt(execution, Code.DEADLINE_EXCEEDED, deadline_message)
        elif phase is Phase.RUN:
            scope = Scope(execution, self._runner, deadline, metadata)
            try:
                if deadline is None:
                    await run_steps(scope, workflow.steps)
                else:
                    async with asyncio.timeout(deadline.remaining()):
                        await run_steps(scope, workflow.steps)
                output = self._output(execution)
            except StepFailure as failure:
                if execution.cause is None:
                    execution.cause = failure.error
                task = asyncio.current_task()
                # A TaskGroup whose child failed swallows a concurrent cancel of its parent.
                cancelled = task is not None and task.cancelling() > 0
                if cancelled and self._handing(execution.execution_id):
                    raise asyncio.CancelledError from None
            except (TimeoutError, DeadlinePassed):
                self._interrupt(execution, Code.DEADLINE_EXCEEDED, deadline_message)
            except asyncio.CancelledError:
                if self._handing(execution.execution_id):
                    raise
                cancelled = True
                if caller_deadline is not None and caller_deadline.remaining() <= _DEADLINE_SLACK:
                    # The RPC layer cancels us when the caller's deadline passes; its timer and
                    # ours are a few ms apart. Report the deadline, as the caller sees it.
                    self._interrupt(execution, Code.DEADLINE_EXCEEDED, "caller deadline exceeded")
                else:
                    why = self._cancel_reasons.get(execution.execution_id)
                    message = (
                        f"execution cancelled: {why}"
                        if why
                        else "execution cancelled by the caller"
                    )
                    self._interrupt(execution, Code.CANCELLED, message)
        else:
            if execution.cause is None:
                # The rollback had begun after the workflow output failed to evaluate.
                self._output(execution)
            execution.cancel_running(execution.cause)  # calls cut short beside the failure
        if execution.cause is None:
            result = execution.result(ExecutionStatus.SUCCEEDED, output)
            await self._finish(execution, result)
            return result
        if execution.completed:
            if self.journal is not None:
                self.journal.submit(
                    (StateEntry(execution.execution_id, ExecutionState.COMPENSATING, clock.wall()),)
                )
            rollback = compensate(execution, self._runner, metadata)
            # Shielded even when not cancelled yet: after a caller deadline our timer fires first
            # and the RPC layer's cancel lands a few ms later, in the middle of the rollback.
            ok = await self._shielded(rollback, execution.execution_id)
            status = ExecutionStatus.COMPENSATED if ok else ExecutionStatus.COMPENSATION_FAILED
        else:
            status = ExecutionStatus.FAILED
        result = execution.result(status, None)
        await self._finish(execution, result)
        task = asyncio.current_task()
        if cancelled or (task is not None and task.cancelling() > 0):
            raise asyncio.CancelledError
        return result

    async def _finish(self, execution: Execution, result: ExecutionResult) -> None:
        """Emit ``finished`` and, with a journal, return once it and the result are durable."""
        self._cancel_reasons.pop(execution.execution_id, None)
        execution.emit_finished(result)
        journal = self.journal
        if journal is not None:
            state = StateEntry(
                execution.execution_id,
                final_state(result.status),
                self.clock.wall(),
                result_data(result),
            )
            journal.submit((state,))
            await self._shielded(journal.flush(), execution.execution_id)

    def _output(self, execution: Execution) -> Any:
        template = execution.workflow.output
        ctx = execution.ctx
        if template is None:
            return {name: ctx.get(name) for name in execution.workflow.outputs()}
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
        if execution.cause is None:
            first = first_call(running) or (running[0] if running else None)
            execution.cause = ErrorInfo(first.path if first else "", code, message)
        status = StepStatus.CANCELLED if code is Code.CANCELLED else StepStatus.FAILED
        execution.interrupt(running, code, message, status)

    async def _shielded(self, work: Awaitable[T], execution_id: str) -> T:
        """Run ``work`` to completion even if the awaiting task is cancelled again.

        Except during a hand-over (:meth:`hand_over`): then ``work`` is cancelled too.
        """
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if self._handing(execution_id):
                    task.cancel()
                    raise
                if task.done():
                    return task.result()


def _wall_deadline(clock: Clock, at: float | None) -> Deadline | None:
    """The deadline at wall-clock time ``at`` on ``clock``'s monotonic scale."""
    if at is None:
        return None
    return Deadline(clock.monotonic() + (at - clock.wall()), clock)
