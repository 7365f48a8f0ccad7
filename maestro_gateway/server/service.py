"""The ``maestro.v1.Gateway`` servicer: admits executions, runs them, streams their events.

Every execution runs in its own task, owned by the servicer rather than by the RPC: when a caller
cancels, the RPC handler is cancelled and cancels the task, but the task keeps running until the
engine has finished compensating. The same set of tasks is what a graceful shutdown waits for.

Admission, before anything runs (and before any event is sent): the gateway is not draining
(else UNAVAILABLE), fewer than ``max_concurrent`` executions are in flight (else
RESOURCE_EXHAUSTED), the workflow exists (else NOT_FOUND), the input passes the workflow's schema
(else INVALID_ARGUMENT naming the field).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import grpc
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from maestro_gateway.codes import Code
from maestro_gateway.engine.events import (
    Event,
    EventSink,
    ExecutionFinished,
    ExecutionResult,
    ExecutionStatus,
)
from maestro_gateway.errors import Diagnostic, ExecutionError
from maestro_gateway.model.types import Workflow
from maestro_gateway.server import status as rpc
from maestro_gateway.server.convert import event_to_proto, from_struct, result_to_proto
from maestro_gateway.server.logfmt import logfmt
from maestro_gateway.server.registry import WorkflowRegistry

log = logging.getLogger("maestro_gateway.server")

FORWARDED_HEADERS = frozenset({"traceparent", "tracestate", "baggage", "x-request-id", "b3"})
FORWARDED_PREFIXES = ("x-b3-",)
MAX_EXECUTION_ID = 128
_EXECUTION_ID = re.compile(r"[A-Za-z0-9._:-]+")
_DONE = object()


class Executor(Protocol):
    """What the servicer needs of ``maestro_gateway.engine.Engine``."""

    async def execute(
        self,
        workflow: Workflow,
        input: Any,
        *,
        execution_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (the engine's contract: a budget, not a wait)
        metadata: Sequence[tuple[str, str]] = (),
        labels: Mapping[str, str] | None = None,
        on_event: EventSink | None = None,
    ) -> ExecutionResult:
        """Run ``workflow`` on ``input``; see ``Engine.execute``."""
        ...

    def prepare(self, workflow: Workflow) -> None:
        """Make ready what executing ``workflow`` needs; see ``Engine.prepare``."""
        ...


InputChecker = Callable[[Workflow, Any], None]
"""Raises ``ExecutionError(INVALID_ARGUMENT)`` naming the field when the input is invalid."""

SourceValidator = Callable[[str], list[Diagnostic]]
"""Returns every problem of a workflow definition given as text."""


def forwarded_metadata(metadata: Sequence[tuple[str, Any]] | None) -> tuple[tuple[str, str], ...]:
    """Return the trace and request headers of a call, in order, to forward downstream."""
    out: list[tuple[str, str]] = []
    for key, value in metadata or ():
        name = key.lower()
        if (name in FORWARDED_HEADERS or name.startswith(FORWARDED_PREFIXES)) and isinstance(
            value, str
        ):
            out.append((name, value))
    return tuple(out)


class GatewayService(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    """Implements ``maestro.v1.Gateway`` on ``grpc.aio``.

    Args:
        registry: the workflows served.
        executor: runs executions (a ``maestro_gateway.engine.Engine``).
        check_input: validates an input against a workflow's schema.
        validate_source: checks a workflow definition given as text.
        max_concurrent: executions allowed in flight at once (compensating ones included).
    """

    def __init__(
        self,
        registry: WorkflowRegistry,
        executor: Executor,
        *,
        check_input: InputChecker,
        validate_source: SourceValidator,
        max_concurrent: int = 1000,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.registry = registry
        self._executor = executor
        self._check_input = check_input
        self._validate_source = validate_source
        self.max_concurrent = max_concurrent
        self._tasks: set[asyncio.Task[ExecutionResult]] = set()
        self._draining = False

    @property
    def executor(self) -> Executor:
        """What runs the executions."""
        return self._executor

    @property
    def in_flight(self) -> int:
        """Executions running now (including ones whose caller has gone and that compensate)."""
        return len(self._tasks)

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` started: new executions are refused with UNAVAILABLE."""
        return self._draining

    async def drain(self, grace: float, cancel_budget: float) -> None:
        """Refuse new executions, let running ones finish, then cancel what is left.

        Args:
            grace: seconds running executions get to finish on their own.
            cancel_budget: seconds to wait, after cancelling the rest, for their compensations.
        """
        self._draining = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            if pending:
                log.warning(logfmt("drain_cancel", executions=len(pending), grace_s=grace))
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=cancel_budget)

    async def Execute(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> None:
        """Run a workflow, streaming one message per event, ``finished`` last."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = await self._admit(request, context, queue.put_nowait)
        task.add_done_callback(lambda _: queue.put_nowait(_DONE))
        finished: ExecutionFinished | None = None
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                await context.write(event_to_proto(item))
                if isinstance(item, ExecutionFinished):
                    finished = item
        except asyncio.CancelledError:
            task.cancel()
            raise
        if finished is None:
            await self._abort_broken(task, context)
        elif finished.result.status is not ExecutionStatus.SUCCEEDED:
            await rpc.abort(context, rpc.result_status(finished.result))

    async def Run(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecutionResult:
        """Run a workflow and return its result, or fail with the execution's error."""
        task = await self._admit(request, context, None)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.cancelled() or task.exception() is not None:
            await self._abort_broken(task, context)
        result = task.result()
        if result.status is not ExecutionStatus.SUCCEEDED:
            await rpc.abort(context, rpc.result_status(result))
        return result_to_proto(result)

    async def ValidateWorkflow(
        self, request: pb.ValidateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateWorkflowResponse:
        """Check a workflow definition given as text."""
        problems = await asyncio.to_thread(self._validate_source, request.source)
        return pb.ValidateWorkflowResponse(
            valid=not problems,
            diagnostics=[
                pb.Diagnostic(line=max(0, d.line), column=max(0, d.column), message=d.message)
                for d in problems
            ],
        )

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkflowsResponse:
        """List the served workflows, without source and graph."""
        return pb.ListWorkflowsResponse(
            workflows=[
                pb.Workflow(name=w.name, version=w.version, description=w.description)
                for w in self.registry.all()
            ]
        )

    async def GetWorkflow(
        self, request: pb.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workflow:
        """Return one served workflow with its source and Mermaid graph."""
        workflow = self.registry.get(request.name)
        if workflow is None:
            await rpc.abort(context, _not_found(request.name))
        return pb.Workflow(
            name=workflow.name,
            version=workflow.version,
            description=workflow.description,
            source=workflow.source,
            graph=self.registry.graph(workflow),
        )

    async def _admit(
        self,
        request: pb.ExecuteRequest,
        context: grpc.aio.ServicerContext,
        on_event: EventSink | None,
    ) -> asyncio.Task[ExecutionResult]:
        """Check the request and start its execution; abort the RPC when it is refused."""
        name = request.workflow
        if self._draining:
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.UNAVAILABLE,
                    "the gateway is shutting down; retry on another instance",
                    rpc.REASON_SHUTTING_DOWN,
                ),
            )
        if len(self._tasks) >= self.max_concurrent:
            log.warning(logfmt("execution_refused", workflow=name, reason="overloaded"))
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.RESOURCE_EXHAUSTED,
                    f"too many executions in flight (limit {self.max_concurrent})",
                    rpc.REASON_OVERLOADED,
                    {"limit": str(self.max_concurrent)},
                ),
            )
        workflow = self.registry.get(name)
        if workflow is None:
            await rpc.abort(context, _not_found(name))
        execution_id = request.execution_id
        if execution_id and (
            len(execution_id) > MAX_EXECUTION_ID or not _EXECUTION_ID.fullmatch(execution_id)
        ):
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.INVALID_ARGUMENT,
                    f"execution_id must be at most {MAX_EXECUTION_ID} letters, digits or ._:-",
                    rpc.REASON_INVALID_INPUT,
                    {"workflow": name, "field": "execution_id"},
                ),
            )
        value = from_struct(request.input)
        try:
            self._check_input(workflow, value)
        except ExecutionError as exc:
            await rpc.abort(
                context,
                rpc.rich_status(
                    exc.code, exc.message, rpc.REASON_INVALID_INPUT, {"workflow": name}
                ),
            )
        task = asyncio.get_running_loop().create_task(
            self._execute(
                workflow,
                value,
                execution_id=execution_id or str(uuid.uuid4()),
                budget=context.time_remaining(),
                metadata=forwarded_metadata(context.invocation_metadata()),
                labels=dict(request.labels),
                on_event=on_event,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _execute(
        self,
        workflow: Workflow,
        value: Any,
        *,
        execution_id: str,
        budget: float | None,
        metadata: tuple[tuple[str, str], ...],
        labels: dict[str, str],
        on_event: EventSink | None,
    ) -> ExecutionResult:
        started = time.monotonic()
        finished: list[ExecutionResult] = []
        sink = on_event
        if on_event is not None:
            forward = on_event

            def sink(event: Event) -> None:
                if isinstance(event, ExecutionFinished):
                    finished.append(event.result)
                forward(event)

        try:
            result = await self._executor.execute(
                workflow,
                value,
                execution_id=execution_id,
                timeout=budget,
                metadata=metadata,
                labels=labels,
                on_event=sink,
            )
        except asyncio.CancelledError:
            # With events the engine reported the cancelled run's outcome; without, it is unknown.
            if finished:
                _log_result(finished[0])
                raise
            log.info(
                logfmt(
                    "execution",
                    id=execution_id,
                    workflow=workflow.name,
                    status="CANCELLED",
                    duration_ms=_ms(time.monotonic() - started),
                )
            )
            raise
        except Exception:
            log.exception(logfmt("execution_crashed", id=execution_id, workflow=workflow.name))
            raise
        _log_result(result)
        return result

    async def _abort_broken(
        self, task: asyncio.Task[ExecutionResult], context: grpc.aio.ServicerContext
    ) -> None:
        """End the RPC of an execution that produced no result (cancelled by a shutdown, or a bug)."""
        if task.cancelled():
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.CANCELLED,
                    "the gateway shut down before the execution finished; it was cancelled",
                    rpc.REASON_SHUTTING_DOWN,
                ),
            )
        # Retrieve the exception (already logged with its traceback by _execute) so that asyncio
        # does not log it a second time as "never retrieved".
        task.exception()
        await rpc.abort(
            context,
            rpc.rich_status(Code.INTERNAL, "the execution ended unexpectedly", rpc.REASON_INTERNAL),
        )


def _not_found(name: str) -> grpc.Status:
    return rpc.rich_status(
        Code.NOT_FOUND, f"no workflow named '{name}'", rpc.REASON_NOT_FOUND, {"workflow": name}
    )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _log_result(result: ExecutionResult) -> None:
    log.info(
        logfmt(
            "execution",
            id=result.execution_id,
            workflow=result.workflow,
            status=result.status.value,
            duration_ms=_ms(result.duration),
        )
    )
    error = result.error
    if error is not None:
        log.warning(
            logfmt(
                "execution_failed",
                id=result.execution_id,
                workflow=result.workflow,
                status=result.status.value,
                step=error.step_id,
                code=error.code.name,
            )
        )
        # Messages can quote downstream data: only at debug level.
        log.debug(logfmt("execution_error", id=result.execution_id, message=error.message))
        for step in result.steps.values():
            if step.compensation_error is not None:
                log.warning(
                    logfmt(
                        "compensation_failed",
                        id=result.execution_id,
                        workflow=result.workflow,
                        step=step.step_id,
                        code=step.compensation_error.code.name,
                    )
                )
