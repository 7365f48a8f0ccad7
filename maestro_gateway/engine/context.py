"""The mutable state of one execution: the expression context, step states and event emission.

The context is one dict, mutated in place as steps finish (never copied per step): ``input``,
``workflow`` (``name``, ``version``, ``execution_id``), ``steps`` (``{id: {output, status,
attempts, error}}``), each finished step's output under its output name, and ``error`` once a
rollback starts. Parallel siblings cannot reference each other (a load-time rule), so sharing the
dict between concurrent children is safe. Step states are keyed by step path
(``maestro_gateway.engine.paths``), which is also the ``step_id`` of every event and error they
produce.

Events are built only when someone listens: every ``emit_*`` method returns at once when the
execution has neither a sink nor a journal. With a journal every event is submitted to it and
reaches the sink only once it is durable (DESIGN §10: committed before it is streamed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from maestro_gateway.codes import Code
from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    EventSink,
    ExecutionFinished,
    ExecutionRecovered,
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
from maestro_gateway.engine.journaling import event_entry
from maestro_gateway.engine.paths import StepPath, step_path
from maestro_gateway.engine.signals import SignalPort
from maestro_gateway.engine.tracing import ExecutionTrace, Span
from maestro_gateway.errors import ExecutionError
from maestro_gateway.journal.base import Journal
from maestro_gateway.model.types import CallStep, StatefulStep, Step, Workflow, walk
from maestro_gateway.resilience.clock import Clock


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a call stood when the gateway stopped, so that a recovered execution continues it.

    Attributes:
        attempt: the number of the last attempt made.
        error: how that attempt is counted: it failed with this error (an attempt in flight
            counts as UNAVAILABLE), and the retry policy decides what comes next; None when
            its failure was already handled and the call was waiting to retry.
        wait: seconds still to wait before the next attempt (when ``error`` is None).
    """

    attempt: int
    error: ExecutionError | None = None
    wait: float = 0.0


class StepState:
    """What is known about one run of a step during an execution, at ``path``.

    ``ctx`` is the context the step runs in and publishes its output to (the execution's own at
    the top level, an iteration's or a sub-workflow's inside those kinds); ``parent`` is the
    state of the foreach, loop or workflow step whose body it belongs to (None at the top level).
    """

    __slots__ = (
        "attempts",
        "compensation_attempts",
        "compensation_error",
        "ctx",
        "duration",
        "error",
        "output",
        "parent",
        "path",
        "resume",
        "span",
        "started",
        "status",
        "step",
    )

    def __init__(
        self,
        step: StatefulStep,
        path: StepPath,
        ctx: dict[str, Any],
        parent: StepState | None = None,
    ) -> None:
        self.step = step
        self.path = path
        self.ctx = ctx
        self.parent = parent
        self.status = StepStatus.PENDING
        self.attempts = 0
        self.compensation_attempts = 0
        self.output: Any = None
        self.error: ErrorInfo | None = None
        self.compensation_error: ErrorInfo | None = None
        self.started = 0.0
        self.duration = 0.0
        self.resume: Resume | None = None
        """Set on recovery for the step's (or its compensation's) interrupted call."""
        self.span: Span | None = None
        """With tracing on, the open span of the step while it runs, then of its compensation
        while that runs."""

    def contained(self) -> bool:
        """Whether a failure here lets the execution go on (``continue_on_error`` on the step or
        on an enclosing foreach or workflow step)."""
        state: StepState | None = self
        while state is not None:
            if getattr(state.step, "continue_on_error", False):
                return True
            state = state.parent
        return False

    def result(self) -> StepResult:
        """The immutable result of this step."""
        return StepResult(
            step_id=self.path,
            status=self.status,
            attempts=self.attempts,
            output=self.output,
            error=self.error,
            duration=self.duration,
            compensation_error=self.compensation_error,
        )


def first_call(states: list[StepState]) -> StepState | None:
    """The first of ``states`` that is a call (rather than a kind around one), or None."""
    return next((s for s in states if isinstance(s.step, CallStep)), None)


class Execution:
    """One run of a workflow: context, step states, completion order and the event sequence.

    Args:
        workflow: the workflow being run.
        execution_id: its id.
        input: the execution input (already checked against the schema by the caller).
        clock: time for durations and event timestamps.
        sink: receives events synchronously, or None when nobody listens.
        journal: records every event (and the calls' intents and outcomes), or None.
    """

    __slots__ = (
        "cause",
        "clock",
        "completed",
        "consumed_signals",
        "ctx",
        "execution_id",
        "frames",
        "journal",
        "listening",
        "sequence",
        "signals",
        "sink",
        "started_mono",
        "started_wall",
        "states",
        "steps_ctx",
        "trace",
        "workflow",
    )

    def __init__(
        self,
        workflow: Workflow,
        execution_id: str,
        input: Any,
        clock: Clock,
        sink: EventSink | None,
        journal: Journal | None = None,
    ) -> None:
        self.workflow = workflow
        self.execution_id = execution_id
        self.clock = clock
        self.sink = sink
        self.journal = journal
        self.listening = sink is not None or journal is not None
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
        self.states: dict[StepPath, StepState] = {}
        """By path. Every step whose path is known before the run (that is, outside any kind that
        prefixes paths) has its state from the start, in file order; the others get theirs when
        they first run (:meth:`state`)."""
        ctx = self.ctx
        for step in workflow.top_steps():
            path = step_path("", step.id)
            self.states[path] = StepState(step, path, ctx)
        self.frames: dict[str, Any] = {}
        """What kinds remember of their runs while an execution is rebuilt from its journal
        (``maestro_gateway.engine.frames``): iteration contexts by prefix, item lists by path."""
        self.completed: list[StepState] = []
        """Succeeded steps that declare a compensation, in order of completion."""
        self.cause: ErrorInfo | None = None
        self.signals: SignalPort | None = None
        """Sends and waits for signals (DESIGN §13), or None outside a gateway."""
        self.consumed_signals: set[str] = set()
        """The ids of the signals its wait steps took: a signal satisfies one wait at most."""
        self.started_mono = clock.monotonic()
        self.started_wall = clock.wall()
        self.trace: ExecutionTrace | None = None
        """Its spans when tracing is on (``maestro_gateway.engine.tracing``), else None."""

    # -- state transitions -------------------------------------------------------------------

    def state(
        self,
        step: StatefulStep,
        path: StepPath,
        ctx: dict[str, Any],
        parent: StepState | None,
    ) -> StepState:
        """The state of the run of ``step`` at ``path`` in context ``ctx``, made on first use.

        A state rebuilt from the journal moves to ``ctx`` (the context of the run that reaches
        it again), and what it had published is published there.
        """
        state = self.states.get(path)
        if state is None:
            state = StepState(step, path, ctx, parent)
            self.states[path] = state
        elif state.ctx is not ctx:
            state.ctx = ctx
            state.parent = parent
            if state.status is not StepStatus.PENDING:
                self.publish(state)
                output = step.output
                if output is not None and state.status is StepStatus.SUCCEEDED:
                    ctx[output] = state.output
                elif output is not None and state.status is not StepStatus.RUNNING:
                    ctx[output] = None
        return state

    def publish(self, state: StepState) -> None:
        """Refresh ``steps.<id>`` in the step's context from ``state``."""
        state.ctx["steps"][state.step.id] = {
            "output": state.output,
            "status": state.status.value,
            "attempts": state.attempts,
            "error": state.error.as_value() if state.error is not None else None,
        }

    def step_running(self, state: StepState) -> None:
        """Mark ``state`` as running from now."""
        state.status = StepStatus.RUNNING
        state.started = self.clock.monotonic()
        trace = self.trace
        if trace is not None:
            state.span = trace.step(self.enclosing_span(state), state.path)

    def span_of(self, state: StepState) -> Span | None:
        """The open span of ``state`` (tracing on), or None for the execution's own span.

        A step that was running when the gateway stopped gets its span here, when the
        resumed execution first needs it (it does not start running a second time).
        """
        span = state.span
        if span is None and state.status is StepStatus.RUNNING and self.trace is not None:
            span = state.span = self.trace.step(self.enclosing_span(state), state.path)
        return span

    def enclosing_span(self, state: StepState) -> Span | None:
        """The span of the foreach, loop or workflow step running ``state``'s body, if any."""
        parent = state.parent
        while parent is not None:
            if parent.status is StepStatus.RUNNING:
                return self.span_of(parent)
            parent = parent.parent
        return None

    @staticmethod
    def end_span(state: StepState, error: ErrorInfo | None = None) -> None:
        """End the open span of ``state`` (its step's or its compensation's), if it has one."""
        span = state.span
        if span is not None:
            state.span = None
            span.end(error)

    def step_succeeded(self, state: StepState, output: Any, *, emit: bool = True) -> None:
        """Record a success: the output enters the context under the step's output name.

        ``emit=False`` when recovery replays a success that was already reported.
        """
        state.status = StepStatus.SUCCEEDED
        state.output = output
        state.duration = self.clock.monotonic() - state.started
        if state.span is not None:
            self.end_span(state)
        step = state.step
        if step.output is not None:
            state.ctx[step.output] = output
        self.publish(state)
        if getattr(step, "compensate", None) is not None:
            self.completed.append(state)
        if emit and self.listening:
            self._emit_step_succeeded(state)

    def step_skipped(self, state: StepState, reason: str, *, emit: bool = True) -> None:
        """Record a skipped step: its output is null and only ``step_skipped`` is emitted.

        ``emit=False`` when recovery replays a skip that was already reported.
        """
        state.status = StepStatus.SKIPPED
        if state.step.output is not None:
            state.ctx[state.step.output] = None
        self.publish(state)
        if emit and self.listening:
            self.emit(
                StepSkipped(self.execution_id, self._next(), self.clock.wall(), state.path, reason)
            )

    def step_failed(
        self, state: StepState, error: ErrorInfo, status: StepStatus = StepStatus.FAILED
    ) -> None:
        """Record a failed (or interrupted) step; its output is null.

        The cause of the execution is set where a failure ends it (the engine), not here: a
        failure under ``continue_on_error`` is no cause.
        """
        state.status = status
        state.error = error
        state.duration = self.clock.monotonic() - state.started if state.started else 0.0
        if state.span is not None:
            self.end_span(state, error)
        if state.step.output is not None:
            state.ctx[state.step.output] = None
        self.publish(state)
        if self.listening:
            self.emit(
                StepFailed(
                    self.execution_id,
                    self._next(),
                    self.clock.wall(),
                    state.path,
                    state.attempts,
                    error,
                    status,
                )
            )

    def cancel_running(
        self,
        failed: ErrorInfo | None,
        prefix: str = "",
        within: Step | None = None,
    ) -> None:
        """Report the steps still running as CANCELLED by the failure ``failed`` (never compensated).

        Only those whose path starts with ``prefix`` and, with ``within``, that ``within`` (a
        parallel group, a foreach …) nests: the ones the failure cut short.
        """
        reason = f"cancelled: step '{failed.step_id}' failed" if failed else "cancelled"
        running = self.running(prefix)
        if within is not None:
            nested = {id(s) for s in walk(within.children())}
            running = [s for s in running if id(s.step) in nested]
        self.interrupt(running, Code.CANCELLED, reason, StepStatus.CANCELLED)

    def interrupt(
        self,
        running: list[StepState],
        code: Code,
        message: str,
        status: StepStatus = StepStatus.FAILED,
    ) -> None:
        """Record each of ``running`` as ended by ``code`` and ``message``, with ``status``."""
        for state in running:
            self.step_failed(state, ErrorInfo(state.path, code, message), status)

    def running(self, prefix: str = "") -> list[StepState]:
        """Steps interrupted while running (whose path starts with ``prefix``), in the order
        their states were made: file order at the top level, first run below it."""
        return [
            s
            for s in self.states.values()
            if s.status is StepStatus.RUNNING and s.path.startswith(prefix)
        ]

    def result(self, status: Any, output: Any) -> ExecutionResult:
        """The immutable result of this execution with ``status`` and ``output``."""
        return ExecutionResult(
            execution_id=self.execution_id,
            workflow=self.workflow.name,
            status=status,
            output=output,
            error=self.cause,
            steps={path: s.result() for path, s in self.states.items()},
            started_at=self.started_wall,
            duration=self.clock.monotonic() - self.started_mono,
        )

    # -- events ----------------------------------------------------------------------------

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def emit(self, event: Event) -> None:
        """Journal ``event`` and hand it to the sink once durable (callers check ``listening``)."""
        sink = self.sink
        journal = self.journal
        if journal is None:
            assert sink is not None
            sink(event)
        else:
            journal.submit((event_entry(event),), None if sink is None else partial(sink, event))

    def emit_started(self, labels: Mapping[str, str]) -> None:
        """Emit ``ExecutionStarted``."""
        if self.listening:
            self.emit(
                ExecutionStarted(
                    self.execution_id, self._next(), self.clock.wall(), self.workflow.name, labels
                )
            )

    def emit_recovered(self, reason: str) -> None:
        """Emit ``ExecutionRecovered``: the execution resumes from the journal."""
        if self.listening:
            self.emit(
                ExecutionRecovered(self.execution_id, self._next(), self.clock.wall(), reason)
            )

    def emit_attempt(self, step_id: StepPath, attempt: int, compensation: bool) -> None:
        """Emit ``StepStarted`` or ``CompensationStarted`` for one attempt."""
        if self.listening:
            kind = CompensationStarted if compensation else StepStarted
            self.emit(kind(self.execution_id, self._next(), self.clock.wall(), step_id, attempt))

    def emit_retrying(
        self, step_id: StepPath, attempt: int, error: ErrorInfo, delay: float
    ) -> None:
        """Emit ``StepRetrying``: attempt ``attempt`` failed with ``error``; next in ``delay`` s."""
        if self.listening:
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
                state.path,
                state.attempts,
                state.output,
                state.duration,
            )
        )

    def emit_compensation_succeeded(self, state: StepState, duration: float) -> None:
        """Emit ``CompensationSucceeded``."""
        if self.listening:
            self.emit(
                CompensationSucceeded(
                    self.execution_id,
                    self._next(),
                    self.clock.wall(),
                    state.path,
                    state.compensation_attempts,
                    duration,
                )
            )

    def emit_compensation_failed(self, state: StepState, error: ErrorInfo) -> None:
        """Emit ``CompensationFailed``."""
        if self.listening:
            self.emit(
                CompensationFailed(
                    self.execution_id,
                    self._next(),
                    self.clock.wall(),
                    state.path,
                    state.compensation_attempts,
                    error,
                )
            )

    def emit_finished(self, result: ExecutionResult) -> None:
        """Emit ``ExecutionFinished``, always the last event."""
        if self.listening:
            self.emit(ExecutionFinished(self.execution_id, self._next(), self.clock.wall(), result))
