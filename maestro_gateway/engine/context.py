"""The mutable state of one execution: the expression context, step states and event emission.

The context is one dict, mutated in place as steps finish (never copied per step): ``input``,
``workflow`` (``name``, ``version``, ``execution_id``), ``steps`` (``{id: {output, status,
attempts, error}}``), each finished step's output under its output name, and ``error`` once a
rollback starts. Parallel siblings cannot reference each other (a load-time rule), so sharing the
dict between concurrent children is safe.

Events are built only when someone listens: every ``emit_*`` method returns at once when the
execution has no sink.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    EventSink,
    ExecutionFinished,
    ExecutionResult,
    ExecutionStarted,
    StepFailed,
    StepResult,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
)
from maestro_gateway.model.types import CallStep, Workflow
from maestro_gateway.resilience.clock import Clock


class StepState:
    """What is known about one call step during an execution."""

    __slots__ = (
        "attempts",
        "compensation_attempts",
        "compensation_error",
        "duration",
        "error",
        "output",
        "started",
        "status",
        "step",
    )

    def __init__(self, step: CallStep) -> None:
        self.step = step
        self.status = StepStatus.PENDING
        self.attempts = 0
        self.compensation_attempts = 0
        self.output: Any = None
        self.error: ErrorInfo | None = None
        self.compensation_error: ErrorInfo | None = None
        self.started = 0.0
        self.duration = 0.0

    def result(self) -> StepResult:
        """The immutable result of this step."""
        return StepResult(
            step_id=self.step.id,
            status=self.status,
            attempts=self.attempts,
            output=self.output,
            error=self.error,
            duration=self.duration,
            compensation_error=self.compensation_error,
        )


class Execution:
    """One run of a workflow: context, step states, completion order and the event sequence.

    Args:
        workflow: the workflow being run.
        execution_id: its id.
        input: the execution input (already checked against the schema by the caller).
        clock: time for durations and event timestamps.
        sink: receives events synchronously, or None when nobody listens.
    """

    __slots__ = (
        "cause",
        "clock",
        "completed",
        "ctx",
        "execution_id",
        "sequence",
        "sink",
        "started_mono",
        "started_wall",
        "states",
        "steps_ctx",
        "workflow",
    )

    def __init__(
        self,
        workflow: Workflow,
        execution_id: str,
        input: Any,
        clock: Clock,
        sink: EventSink | None,
    ) -> None:
        self.workflow = workflow
        self.execution_id = execution_id
        self.clock = clock
        self.sink = sink
        self.sequence = 0
        self.steps_ctx: dict[str, dict[str, Any]] = {}
        self.ctx: dict[str, Any] = {
            "input": input,
            "workflow": {
                "name": workflow.name,
                "version": workflow.version,
                "execution_id": execution_id,
            },
            "steps": self.steps_ctx,
        }
        self.states: dict[str, StepState] = {s.id: StepState(s) for s in workflow.call_steps()}
        self.completed: list[StepState] = []
        """Succeeded steps that declare a compensation, in order of completion."""
        self.cause: ErrorInfo | None = None
        self.started_mono = clock.monotonic()
        self.started_wall = clock.wall()

    # -- state transitions -------------------------------------------------------------------

    def _publish(self, state: StepState) -> None:
        self.steps_ctx[state.step.id] = {
            "output": state.output,
            "status": state.status.value,
            "attempts": state.attempts,
            "error": state.error.as_value() if state.error is not None else None,
        }

    def step_running(self, state: StepState) -> None:
        """Mark ``state`` as running from now."""
        state.status = StepStatus.RUNNING
        state.started = self.clock.monotonic()

    def step_succeeded(self, state: StepState, output: Any) -> None:
        """Record a success: the output enters the context under the step's output name."""
        state.status = StepStatus.SUCCEEDED
        state.output = output
        state.duration = self.clock.monotonic() - state.started
        self.ctx[state.step.output] = output
        self._publish(state)
        if state.step.compensate is not None:
            self.completed.append(state)
        if self.sink is not None:
            self._emit_step_succeeded(state)

    def step_skipped(self, state: StepState, reason: str) -> None:
        """Record a skipped step: its output is null and only ``step_skipped`` is emitted."""
        state.status = StepStatus.SKIPPED
        self.ctx[state.step.output] = None
        self._publish(state)
        if self.sink is not None:
            self.emit(
                StepSkipped(
                    self.execution_id, self._next(), self.clock.wall(), state.step.id, reason
                )
            )

    def step_failed(
        self, state: StepState, error: ErrorInfo, status: StepStatus = StepStatus.FAILED
    ) -> None:
        """Record a failed (or interrupted) step; the first failure becomes the cause."""
        state.status = status
        state.error = error
        state.duration = self.clock.monotonic() - state.started if state.started else 0.0
        if self.cause is None and status is StepStatus.FAILED:
            self.cause = error
        self._publish(state)
        if self.sink is not None:
            self.emit(
                StepFailed(
                    self.execution_id,
                    self._next(),
                    self.clock.wall(),
                    state.step.id,
                    state.attempts,
                    error,
                )
            )

    def running(self) -> list[StepState]:
        """Steps interrupted while running, in declaration order."""
        return [s for s in self.states.values() if s.status is StepStatus.RUNNING]

    def result(self, status: Any, output: Any) -> ExecutionResult:
        """The immutable result of this execution with ``status`` and ``output``."""
        return ExecutionResult(
            execution_id=self.execution_id,
            workflow=self.workflow.name,
            status=status,
            output=output,
            error=self.cause,
            steps={sid: s.result() for sid, s in self.states.items()},
            started_at=self.started_wall,
            duration=self.clock.monotonic() - self.started_mono,
        )

    # -- events ----------------------------------------------------------------------------

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def emit(self, event: Event) -> None:
        """Hand ``event`` to the sink (callers check ``sink`` first to skip building events)."""
        assert self.sink is not None
        self.sink(event)

    def emit_started(self, labels: Mapping[str, str]) -> None:
        """Emit ``ExecutionStarted``."""
        if self.sink is not None:
            self.emit(
                ExecutionStarted(
                    self.execution_id, self._next(), self.clock.wall(), self.workflow.name, labels
                )
            )

    def emit_attempt(self, step_id: str, attempt: int, compensation: bool) -> None:
        """Emit ``StepStarted`` or ``CompensationStarted`` for one attempt."""
        if self.sink is not None:
            kind = CompensationStarted if compensation else StepStarted
            self.emit(kind(self.execution_id, self._next(), self.clock.wall(), step_id, attempt))

    def emit_retrying(self, step_id: str, attempt: int, error: ErrorInfo, delay: float) -> None:
        """Emit ``StepRetrying``: attempt ``attempt`` failed with ``error``; next in ``delay`` s."""
        if self.sink is not None:
            self.emit(
                StepRetrying(
                    self.execution_id,
                    self._next(),
                    self.clock.wall(),
                    step_id,
                    attempt,
                    error,
                    delay,
                )
            )

    def _emit_step_succeeded(self, state: StepState) -> None:
        self.emit(
            StepSucceeded(
                self.execution_id,
                self._next(),
                self.clock.wall(),
                state.step.id,
                state.attempts,
                state.output,
                state.duration,
            )
        )

    def emit_compensation_succeeded(self, state: StepState, duration: float) -> None:
        """Emit ``CompensationSucceeded``."""
        if self.sink is not None:
            self.emit(
                CompensationSucceeded(
                    self.execution_id,
                    self._next(),
                    self.clock.wall(),
                    state.step.id,
                    state.compensation_attempts,
                    duration,
                )
            )

    def emit_compensation_failed(self, state: StepState, error: ErrorInfo) -> None:
        """Emit ``CompensationFailed``."""
        if self.sink is not None:
            self.emit(
                CompensationFailed(
                    self.execution_id,
                    self._next(),
                    self.clock.wall(),
                    state.step.id,
                    state.compensation_attempts,
                    error,
                )
            )

    def emit_finished(self, result: ExecutionResult) -> None:
        """Emit ``ExecutionFinished``, always the last event."""
        if self.sink is not None:
            self.emit(ExecutionFinished(self.execution_id, self._next(), self.clock.wall(), result))
