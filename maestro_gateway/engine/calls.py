"""One call with its retries: render, breaker, per-attempt deadline, backoff (DESIGN §4).

Shared by steps and compensations. An attempt's timeout is ``min(call timeout, what is left of
the bounding deadline)``; it goes to the transport and is also enforced here, so a transport that
ignores it still cannot hang the execution. A backoff sleep that would outlive the deadline is not
started: the call fails with its last error (DEADLINE_EXCEEDED when the deadline itself passed).
With tracing on (``Execution.trace``), each attempt sent is a client span
(``maestro_gateway.engine.tracing``) whose context the downstream receives as ``traceparent``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from maestro_gateway.codes import Code
from maestro_gateway.engine.context import Execution, Resume, StepState
from maestro_gateway.engine.events import ErrorInfo
from maestro_gateway.engine.paths import StepPath
from maestro_gateway.engine.tracing import AttemptSpan
from maestro_gateway.errors import CallError, CircuitOpenError, EvaluationError, ExecutionError
from maestro_gateway.journal.base import IntentEntry, OutcomeEntry
from maestro_gateway.model.types import Call, HttpMethod
from maestro_gateway.resilience.breaker import BreakerRegistry
from maestro_gateway.resilience.clock import Clock
from maestro_gateway.resilience.deadline import Deadline, attempt_timeout
from maestro_gateway.resilience.retry import retry_delay, should_retry
from maestro_gateway.transports.base import CallInfo, Metadata, TransportFactory

_CANCELLED = CallError(Code.CANCELLED, "attempt cancelled")
"""How the span of an attempt cut short by a cancel ends."""


class CallFailed(Exception):
    """A call failed for good (after its retries); ``error`` names the step, code and message."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


def evaluation_failure(step_id: StepPath, exc: EvaluationError, field: str) -> ErrorInfo:
    """An INVALID_ARGUMENT failure naming the step (its path), the field and the expression."""
    named = exc.within(field)
    return ErrorInfo(step_id, Code.INVALID_ARGUMENT, f"step '{step_id}': {named.message}")


class CallRunner:
    """Runs calls for an engine: shared transports, breakers, clock and randomness.

    Args:
        transports: builds the transport of each service.
        breakers: the process-wide breaker registry.
        clock: time for deadlines and backoff sleeps.
        rng: randomness for jitter.
    """

    __slots__ = ("_breakers", "_clock", "_rng", "_transports", "may_send")

    def __init__(
        self,
        transports: TransportFactory,
        breakers: BreakerRegistry,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._transports = transports
        self._breakers = breakers
        self._clock = clock
        self._rng = rng
        self.may_send: Callable[[str], Awaitable[bool]] | None = None
        """Asked before each call, once its intent is durable (``Engine.guard_calls``)."""

    def _render(
        self, call: Call, ctx: dict[str, Any], step_id: str, label: str, caller: Metadata
    ) -> tuple[str, Any, list[tuple[str, str]]]:
        field = label
        try:
            method = call.method
            if isinstance(method, HttpMethod):
                field = f"{label}method"
                name = f"{method.verb} {method.path.render_text(ctx)}"
            else:
                name = method.text
            field = f"{label}input"
            request = call.input.render(ctx)
            metadata = list(caller)
            for key, template in call.metadata.items():
                field = f"{label}metadata.{key}"
                metadata.append((key, template.render_text(ctx)))
        except EvaluationError as exc:
            raise CallFailed(evaluation_failure(step_id, exc, field)) from exc
        return name, request, metadata

    async def run(
        self,
        execution: Execution,
        state: StepState,
        call: Call,
        *,
        deadline: Deadline | None,
        metadata: Metadata,
        compensation: bool = False,
        resume: Resume | None = None,
    ) -> Any:
        """Call ``call`` with its retry policy and return the response value.

        Attempts are counted on ``state`` (``attempts``, or ``compensation_attempts``) and each
        one is announced with ``step_started``/``compensation_started``; each retry with
        ``step_retrying`` (compensation retries are silent between their started events).
        Events, errors and journal entries name the step by its path, ``state.path``.
        With a journal, each attempt's intent (the rendered request) is durable before the call
        is sent, and its outcome is submitted together with the event that reports it.
        ``resume`` continues a call interrupted by a gateway restart.

        Raises:
            CallFailed: the call failed for good; the error names the step.
        """
        step_id = state.path
        name, request, md = self._render(
            call, state.ctx, step_id, "compensate." if compensation else "", metadata
        )
        service = call.service
        try:
            transport = self._transports.transport_for(service)
        except ExecutionError as exc:
            raise CallFailed(_info(step_id, exc)) from exc
        except ValueError as exc:
            message = f"service '{service.name}' is unusable: {exc}"
            raise CallFailed(ErrorInfo(step_id, Code.FAILED_PRECONDITION, message)) from exc
        info = CallInfo(execution.execution_id, step_id, compensation)
        journal = execution.journal
        policy = call.retry
        bpolicy = service.circuit_breaker
        breaker = self._breakers.get(service.endpoint, bpolicy) if bpolicy is not None else None
        attempt = 0
        error: ExecutionError | None = None
        wait = 0.0
        if resume is not None:
            attempt, error, wait = resume.attempt, resume.error, resume.wait
            if error is not None and journal is not None:
                journal.submit((self._outcome(info, attempt, error=error),))
        while True:
            if error is not None:
                if not should_retry(policy, error, attempt):
                    raise CallFailed(_info(step_id, error))
                delay = retry_delay(policy, error, attempt, self._rng)
                if deadline is not None and not deadline.allows(delay):
                    if deadline.expired:
                        raise CallFailed(
                            ErrorInfo(step_id, Code.DEADLINE_EXCEEDED, _expired(compensation))
                        )
                    raise CallFailed(_info(step_id, error))
                if not compensation:
                    execution.emit_retrying(step_id, attempt, _info(step_id, error), delay)
                await self._clock.sleep(delay)
                error = None
            elif wait > 0:
                await self._clock.sleep(wait)
                wait = 0.0
            attempt += 1
            if compensation:
                state.compensation_attempts = attempt
            else:
                state.attempts = attempt
            execution.emit_attempt(step_id, attempt, compensation)
            if deadline is not None and deadline.expired:
                raise CallFailed(ErrorInfo(step_id, Code.DEADLINE_EXCEEDED, _expired(compensation)))
            if journal is not None:
                intent = IntentEntry(
                    info.execution_id, step_id, compensation, attempt, self._clock.wall(), request
                )
                journal.submit((intent,))
                await journal.flush()
                if self.may_send is not None and not await self.may_send(info.execution_id):
                    raise asyncio.CancelledError  # handed over: another replica holds it now
            timeout = attempt_timeout(call.timeout, deadline)
            span: AttemptSpan | None = None
            sent_md: Metadata = md
            sent_info = info
            if execution.trace is not None:
                span = execution.trace.attempt(
                    execution.span_of(state), service, name, attempt, compensation
                )
                sent_md = span.headers(md)
                sent_info = CallInfo(info.execution_id, step_id, compensation, span)
            try:
                if breaker is not None:
                    breaker.acquire(bpolicy)
                try:
                    async with asyncio.timeout(timeout):
                        return_value = await transport.call(
                            name, request, timeout=timeout, metadata=sent_md, info=sent_info
                        )
                except TimeoutError as exc:
                    raise CallError(
                        Code.DEADLINE_EXCEEDED, f"attempt timed out after {timeout or 0:.3g}s"
                    ) from exc
                except asyncio.CancelledError:
                    if breaker is not None:
                        breaker.release()
                    if span is not None:
                        span.end(_CANCELLED)
                    raise
                except ExecutionError:
                    raise
                except Exception as exc:
                    # A transport broke its contract; report the type only (messages may hold payloads).
                    raise ExecutionError(
                        Code.INTERNAL, f"transport error: {type(exc).__name__}", permanent=True
                    ) from exc
            except ExecutionError as exc:
                error = exc
                if span is not None:
                    span.end(exc)
                if breaker is not None and not isinstance(exc, CircuitOpenError):
                    breaker.record_failure(exc.code, bpolicy)
                if journal is not None:
                    journal.submit((self._outcome(info, attempt, error=error),))
            else:
                if span is not None:
                    span.end()
                if breaker is not None:
                    breaker.record_success()
                if journal is not None:
                    journal.submit((self._outcome(info, attempt, response=return_value),))
                return return_value

    def _outcome(
        self,
        info: CallInfo,
        attempt: int,
        *,
        response: Any = None,
        error: ExecutionError | None = None,
    ) -> OutcomeEntry:
        """How attempt ``attempt`` of the call ``info`` names ended, for the journal."""
        return OutcomeEntry(
            info.execution_id,
            info.step_id,
            info.compensation,
            attempt,
            self._clock.wall(),
            response=response,
            error=None if error is None else _info(info.step_id, error).as_value(),
        )


def _info(step_id: str, error: ExecutionError) -> ErrorInfo:
    return ErrorInfo(step_id, error.code, error.message)


def _expired(compensation: bool) -> str:
    return "compensation budget exhausted" if compensation else "deadline exceeded"
