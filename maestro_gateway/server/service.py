"""The ``maestro.v1.Gateway`` servicer: admits executions, runs them, streams their events.

Executions run in tasks owned by :class:`~maestro_gateway.server.runs.Runs`, not by the RPCs
that start them (a caller cancel cancels the task, which still compensates; ``Start`` and
recovered executions have no RPC at all).

Admission, before anything runs (and before any event is sent): the gateway is not draining
(else UNAVAILABLE), the journal can be written (else UNAVAILABLE), fewer than
``max_concurrent`` executions are in flight (else RESOURCE_EXHAUSTED), the workflow exists (else
NOT_FOUND), the execution id is well formed, the input is within ``limits`` (size and nesting
depth, else INVALID_ARGUMENT naming the limit) and passes the workflow's schema (else
INVALID_ARGUMENT naming the field). Then the execution's record is committed to the journal; an
id already there for the same workflow and input *attaches* the call to that execution (a
watcher: its cancel or deadline does not cancel the execution), with another workflow or input
it is ALREADY_EXISTS (DESIGN §10).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from maestro_gateway.codes import Code
from maestro_gateway.engine import Engine
from maestro_gateway.engine.events import (
    EventSink,
    ExecutionFinished,
    ExecutionResult,
    ExecutionStatus,
)
from maestro_gateway.engine.executor import new_record
from maestro_gateway.engine.journaling import event_from_entry, result_from_data
from maestro_gateway.errors import Diagnostic, ExecutionError
from maestro_gateway.journal.base import (
    BadPageToken,
    CreateEntry,
    ExecutionFilter,
    ExecutionRecord,
    ExecutionState,
    Journal,
)
from maestro_gateway.model.types import SIGNAL_NAME, Workflow
from maestro_gateway.server import status as rpc
from maestro_gateway.server.convert import (
    STATE_OF_STATUS,
    event_to_proto,
    execution_to_proto,
    from_struct,
    result_to_proto,
    signal_to_proto,
)
from maestro_gateway.server.feed import DEFAULT_LIMIT as DEFAULT_STREAM_BUFFER
from maestro_gateway.server.feed import EventFeed
from maestro_gateway.server.limits import RequestLimits, value_depth
from maestro_gateway.server.logfmt import logfmt
from maestro_gateway.server.registry import WorkflowRegistry
from maestro_gateway.server.runs import Runs
from maestro_gateway.server.signals import Signals

log = logging.getLogger("maestro_gateway.server")

FORWARDED_HEADERS = frozenset({"traceparent", "tracestate", "baggage", "x-request-id", "b3"})
FORWARDED_PREFIXES = ("x-b3-",)
MAX_EXECUTION_ID = 128
"""Longest caller-chosen execution id (ids derived by the gateway may be longer)."""
MAX_LOOKUP_ID = 1024
"""Longest execution id accepted by the lookup RPCs."""
_EXECUTION_ID = re.compile(r"[A-Za-z0-9._:\[\]-]+")
_SIGNAL_NAME = re.compile(SIGNAL_NAME)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
WATCH_POLL = 1.0
"""Seconds a watcher waits for the next event before it looks at the journal again."""
CANCEL_SETTLE = 1.0
"""Seconds ``CancelExecution`` waits for the execution to react before answering."""


InputChecker = Callable[[Workflow, Any], None]
"""Raises ``ExecutionError(INVALID_ARGUMENT)`` naming the field when the input is invalid."""

SourceValidator = Callable[[str], list[Diagnostic]]
"""Returns every problem of a workflow definition given as text."""


def forwarded_metadata(metadata: Sequence[tuple[str, Any]] | None) -> tuple[tuple[str, str], ...]:
    """Return the trace and request headers of a call, in order, to forward downstream.

    They are kept in the execution's record. With tracing on, its ``traceparent`` and
    ``tracestate`` parent the execution's span, and each call sends its own attempt span's
    instead (``maestro_gateway.server.otel``).
    """
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
        runs: the executions of this process (its engine and journal).
        check_input: validates an input against a workflow's schema.
        validate_source: checks a workflow definition given as text.
        max_concurrent: executions allowed in flight at once (compensating ones included).
        limits: bounds on requests (input size and depth, headers, validations).
    """

    def __init__(
        self,
        registry: WorkflowRegistry,
        runs: Runs,
        *,
        check_input: InputChecker,
        validate_source: SourceValidator,
        max_concurrent: int = 1000,
        limits: RequestLimits | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.registry = registry
        self.runs = runs
        runs.capacity = max_concurrent  # replicas claim expired leases up to it (DESIGN §11)
        self._check_input = check_input
        self._validate_source = validate_source
        self.max_concurrent = max_concurrent
        self.limits = limits or RequestLimits()
        self.stream_buffer = DEFAULT_STREAM_BUFFER
        """Events an ``Execute`` stream buffers for a slow reader before reading the journal."""
        self._validations = 0
        self._draining = False
        self._closed = False
        self.signals = Signals(runs.journal, registry, runs, runs.engine.clock)

    @property
    def engine(self) -> Engine:
        """What runs the executions."""
        return self.runs.engine

    @property
    def journal(self) -> Journal:
        """Where the executions are recorded."""
        return self.runs.journal

    @property
    def in_flight(self) -> int:
        """Executions running now (including ones whose caller has gone and that compensate)."""
        return len(self.runs)

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` started: new executions are refused with UNAVAILABLE."""
        return self._draining

    async def drain(self, grace: float, cancel_budget: float) -> None:
        """Refuse new executions, let running ones finish, then hand over or cancel the rest.

        Args:
            grace: seconds running executions get to finish on their own.
            cancel_budget: seconds to wait, after cancelling the rest, for their compensations
                (with a journal that does not survive the process).
        """
        self._draining = True
        await self.runs.drain(grace, cancel_budget)
        self._closed = True  # watchers still open end now

    # -- running -----------------------------------------------------------------------------

    async def Execute(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> None:
        """Run a workflow, streaming one message per event, ``finished`` last."""
        # Bounded: a client that reads slowly gets what overflowed from the journal (issue 14).
        events = EventFeed(self.journal, limit=self.stream_buffer)
        record, task = await self._admit(request, context, events.put, method="Execute")
        events.execution_id = record.execution_id
        if task is None:
            finished = await self._follow(record.execution_id, 0, context)
            if finished is None:
                await self._abort_continues(record.execution_id, context)
            if finished.result.status is not ExecutionStatus.SUCCEEDED:
                await rpc.abort(context, rpc.result_status(finished.result))
            return
        task.add_done_callback(lambda _: events.close())
        finished = None
        sent = 0
        try:
            while (item := await events.get()) is not None:
                await context.write(event_to_proto(item))
                sent = item.sequence
                if isinstance(item, ExecutionFinished):
                    finished = item
        except asyncio.CancelledError:
            task.cancel()
            raise
        if finished is None and record.execution_id in self.runs.lost:
            # Another replica took it over (DESIGN §11): the rest of it comes from the journal.
            finished = await self._follow(record.execution_id, sent, context)
            if finished is None:
                await self._abort_continues(record.execution_id, context)
        if finished is None:
            await self._abort_broken(record.execution_id, task, context)
        elif finished.result.status is not ExecutionStatus.SUCCEEDED:
            await rpc.abort(context, rpc.result_status(finished.result))

    async def Run(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecutionResult:
        """Run a workflow and return its result, or fail with the execution's error."""
        record, task = await self._admit(request, context, None, method="Run")
        if task is None:
            result = await self._result_of(record.execution_id)
            if result is None:
                await self._abort_continues(record.execution_id, context)
        else:
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                raise
            if task.cancelled() and record.execution_id in self.runs.lost:
                # Another replica took it over (DESIGN §11): its result comes from the journal.
                result = await self._result_of(record.execution_id)
                if result is None:
                    await self._abort_continues(record.execution_id, context)
            elif task.cancelled():
                # Cancelled (CancelExecution, a shutdown): it ends with its journaled result, if any.
                current = await self.journal.get(record.execution_id)
                if current is None or current.result is None:
                    await self._abort_broken(record.execution_id, task, context)
                result = result_from_data(current.result)
            elif task.exception() is not None:
                await self._abort_broken(record.execution_id, task, context)
            else:
                result = task.result()
        if result.status is not ExecutionStatus.SUCCEEDED:
            await rpc.abort(context, rpc.result_status(result))
        return result_to_proto(result)

    async def Start(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> pb.Execution:
        """Start a workflow and return at once, once its record is durable."""
        record, _ = await self._admit(request, context, None, method="Start", detached=True)
        current = await self.journal.get(record.execution_id)
        return execution_to_proto(current or record)

    # -- looking at executions ---------------------------------------------------------------

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Execution:
        """One execution from the journal."""
        record = await self._lookup(request.execution_id, context)
        return execution_to_proto(record)

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExecutionsResponse:
        """Executions newest first, filtered by workflow AND any of the statuses, paged."""
        states = []
        for number in request.statuses:
            state = STATE_OF_STATUS.get(number)
            if state is None:
                await _invalid(
                    context, "statuses", f"statuses: {number} is not an execution status"
                )
            states.append(state)
        size = request.page_size or DEFAULT_PAGE_SIZE
        where = ExecutionFilter(request.workflow, frozenset(states))
        try:
            page = await self.journal.list_executions(
                where, min(size, MAX_PAGE_SIZE), request.page_token
            )
        except BadPageToken as exc:
            await _invalid(context, "page_token", str(exc))
        return pb.ListExecutionsResponse(
            executions=[execution_to_proto(r) for r in page.executions],
            next_page_token=page.next_token,
        )

    async def WatchExecution(
        self, request: pb.WatchExecutionRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """The journaled events above ``after_sequence``, then the live ones, up to ``finished``."""
        record = await self._lookup(request.execution_id, context)
        if record.state.finished and request.after_sequence >= record.last_sequence:
            return  # the caller has seen every event, ``finished`` included
        finished = await self._follow(record.execution_id, request.after_sequence, context)
        if finished is None:
            await self._abort_continues(record.execution_id, context)

    async def CancelExecution(
        self, request: pb.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Execution:
        """Cancel a running execution (it compensates); answer with its state."""
        record = await self._lookup(request.execution_id, context)
        execution_id = record.execution_id
        if record.state.finished:
            await rpc.abort(context, _finished(record))
        replicas = self.journal.replicas
        # Recorded first on a shared journal (DESIGN §11): whichever replica runs it, or takes
        # it over, carries it out.
        if replicas is not None and not await replicas.request_cancel(execution_id, request.reason):
            record = await self._lookup(execution_id, context)
            await rpc.abort(context, _finished(record))
        if await self.runs.cancel(execution_id, request.reason):
            task = self.runs.task(execution_id)
            if task is not None:
                await asyncio.wait({task}, timeout=CANCEL_SETTLE)
        elif replicas is not None:
            await self._settle(record)  # another replica runs it: told by the journal
        else:
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.FAILED_PRECONDITION,
                    f"execution '{execution_id}' is not running on this gateway (its definition "
                    "could not be loaded at recovery; see the gateway's log)",
                    rpc.REASON_NOT_RUNNING_HERE,
                    {"execution_id": execution_id},
                ),
            )
        current = await self.journal.get(execution_id)
        return execution_to_proto(current or record)

    async def _settle(self, record: ExecutionRecord) -> None:
        """Wait (at most ``CANCEL_SETTLE``) for a cancel sent to another replica to show."""
        journal = self.journal
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_SETTLE):
                current: ExecutionRecord | None = record
                while current is not None and current.state is ExecutionState.RUNNING:
                    await journal.wait_events(
                        record.execution_id, current.last_sequence, CANCEL_SETTLE
                    )
                    current = await journal.get(record.execution_id)

    # -- workflows ---------------------------------------------------------------------------

    async def ValidateWorkflow(
        self, request: pb.ValidateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateWorkflowResponse:
        """Check a workflow definition given as text, within the validation limits.

        More than ``limits.max_validations`` at once: RESOURCE_EXHAUSTED. Longer than
        ``limits.validate_timeout``: DEADLINE_EXCEEDED (the thread doing it keeps its slot until
        it ends, so slow validations cannot pile up).
        """
        limits = self.limits
        if self._validations >= limits.max_validations:
            log.warning(logfmt("validation_refused", reason="too_many_validations"))
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.RESOURCE_EXHAUSTED,
                    f"too many validations in progress (limit {limits.max_validations}, "
                    "max_validations); retry later",
                    rpc.REASON_OVERLOADED,
                    {"limit": str(limits.max_validations)},
                ),
            )
        self._validations += 1
        checking = asyncio.ensure_future(asyncio.to_thread(self._validate_source, request.source))
        checking.add_done_callback(self._validation_done)
        try:
            problems = await asyncio.wait_for(asyncio.shield(checking), limits.validate_timeout)
        except TimeoutError:
            log.warning(logfmt("validation_refused", reason="timeout"))
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.DEADLINE_EXCEEDED,
                    f"validation took longer than {limits.validate_timeout:g}s (validate_timeout)",
                    rpc.REASON_INVALID_REQUEST,
                    {"limit": f"{limits.validate_timeout:g}s"},
                ),
            )
        return pb.ValidateWorkflowResponse(
            valid=not problems,
            diagnostics=[
                pb.Diagnostic(line=max(0, d.line), column=max(0, d.column), message=d.message)
                for d in problems
            ],
        )

    def _validation_done(self, checking: asyncio.Future[list[Diagnostic]]) -> None:
        self._validations -= 1
        if not checking.cancelled():
            checking.exception()  # retrieved: a validator failure is the caller's INTERNAL

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

    # -- signals (DESIGN §13) ----------------------------------------------------------------

    async def SendSignal(
        self, request: pb.SendSignalRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendSignalResponse:
        """Receive a signal once: journaled, then its triggers; a duplicate changes nothing."""
        if not request.name or not _SIGNAL_NAME.fullmatch(request.name):
            await _invalid(
                context, "name", "name is required: letters, digits and '_', '.', '-', '/'"
            )
        signal_id = request.signal_id
        if signal_id and not _well_formed(signal_id, MAX_EXECUTION_ID):
            await _invalid(
                context,
                "signal_id",
                f"signal_id must be at most {MAX_EXECUTION_ID} letters, digits or ._:-[]",
            )
        params = _within_limits("params", request.params, self.limits)
        if isinstance(params, _OverLimit):
            await _invalid(context, "params", params.message)
        if not self.journal.writable:
            await rpc.abort(context, _journal_unavailable(self.journal))
        signal, duplicate = await self.signals.send(request.name, params, signal_id)
        return pb.SendSignalResponse(signal=signal_to_proto(signal), duplicate=duplicate)

    async def GetSignal(
        self, request: pb.GetSignalRequest, context: grpc.aio.ServicerContext
    ) -> pb.Signal:
        """One signal with its lineage; NOT_FOUND when unknown."""
        signal_id = request.signal_id
        await _check_lookup_id(context, "signal_id", signal_id)
        signal = await self.journal.get_signal(signal_id)
        if signal is None:
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.NOT_FOUND,
                    f"no signal '{signal_id}'",
                    rpc.REASON_SIGNAL_NOT_FOUND,
                    {"signal_id": signal_id},
                ),
            )
        return signal_to_proto(signal)

    async def ListSignals(
        self, request: pb.ListSignalsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSignalsResponse:
        """Signals newest first, by name and/or producing execution, paged."""
        if request.page_size < 0:
            await _invalid(context, "page_size", "page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            page = await self.journal.list_signals(
                name=request.name,
                producer_execution=request.producer_execution_id,
                page_size=size,
                page_token=request.page_token,
            )
        except BadPageToken as exc:
            await _invalid(context, "page_token", str(exc))
        return pb.ListSignalsResponse(
            signals=[signal_to_proto(s) for s in page.signals], next_page_token=page.next_token
        )

    # -- helpers -----------------------------------------------------------------------------

    async def _admit(
        self,
        request: pb.ExecuteRequest,
        context: grpc.aio.ServicerContext,
        on_event: EventSink | None,
        *,
        method: str,
        detached: bool = False,
    ) -> tuple[ExecutionRecord, asyncio.Task[ExecutionResult] | None]:
        """Check the request, then start its execution or find the one it attaches to.

        ``method`` is the RPC asking (``Execute``, ``Run``, ``Start``), for the execution's span.

        Returns the execution's record and its task, or None for the task when the call
        attaches to an execution that already exists. Aborts the RPC when it is refused.
        """
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
        journal = self.journal
        if not journal.writable:
            log.warning(logfmt("execution_refused", workflow=name, reason="journal_unavailable"))
            await rpc.abort(context, _journal_unavailable(journal))
        if len(self.runs) >= self.max_concurrent:
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
        if execution_id and not _well_formed(execution_id, MAX_EXECUTION_ID):
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.INVALID_ARGUMENT,
                    f"execution_id must be at most {MAX_EXECUTION_ID} letters, digits or ._:-[]",
                    rpc.REASON_INVALID_INPUT,
                    {"workflow": name, "field": "execution_id"},
                ),
            )
        value = _within_limits("input", request.input, self.limits)
        if isinstance(value, _OverLimit):
            log.warning(logfmt("execution_refused", workflow=name, reason=value.limit))
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.INVALID_ARGUMENT,
                    value.message,
                    rpc.REASON_INVALID_INPUT,
                    {"workflow": name, "field": "input", "limit": str(value.bound)},
                ),
            )
        try:
            self._check_input(workflow, value)
        except ExecutionError as exc:
            await rpc.abort(
                context,
                rpc.rich_status(
                    exc.code, exc.message, rpc.REASON_INVALID_INPUT, {"workflow": name}
                ),
            )
        record = new_record(
            workflow,
            value,
            execution_id or str(uuid.uuid4()),
            clock=self.engine.clock,
            timeout=None if detached else context.time_remaining(),
            metadata=forwarded_metadata(context.invocation_metadata()),
            labels=dict(request.labels),
        )
        if not execution_id and not detached:
            # A generated id cannot be taken: the record is committed with the execution's first
            # entries (its `started` event, its first intent), a commit less. A Start answers
            # with the id, so its record must be durable first; a chosen id may attach.
            journal.submit((CreateEntry(record),))
            return record, self.runs.start(workflow, record, on_event, rpc=method)
        creating = asyncio.ensure_future(journal.create(record))
        try:
            existing = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # The caller left while the record waited for the journal (a full disk): once
            # committed, it runs without a caller, bounded by its deadlines, as recovery would.
            creating.add_done_callback(
                functools.partial(self._start_late, workflow, record, method)
            )
            raise
        if existing is None:
            return record, self.runs.start(workflow, record, on_event, rpc=method)
        if not existing.same_request(name, value):
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.ALREADY_EXISTS,
                    f"execution '{record.execution_id}' already exists with another workflow or "
                    "input; choose another execution_id",
                    rpc.REASON_ALREADY_EXISTS,
                    {"execution_id": record.execution_id, "workflow": existing.workflow},
                ),
            )
        return existing, None

    def _start_late(
        self,
        workflow: Workflow,
        record: ExecutionRecord,
        method: str,
        creating: asyncio.Future[ExecutionRecord | None],
    ) -> None:
        """Run the execution of a record committed after its caller had gone."""
        if creating.cancelled() or creating.exception() is not None:
            return  # never committed: the journal closed first
        if creating.result() is None:
            self.runs.start(workflow, record, None, rpc=method)

    async def _lookup(
        self, execution_id: str, context: grpc.aio.ServicerContext
    ) -> ExecutionRecord:
        """The record of ``execution_id``, or abort with INVALID_ARGUMENT or NOT_FOUND."""
        await _check_lookup_id(context, "execution_id", execution_id)
        record = await self.journal.get(execution_id)
        if record is None:
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.NOT_FOUND,
                    f"no execution '{execution_id}' (unknown, or past its retention)",
                    rpc.REASON_EXECUTION_NOT_FOUND,
                    {"execution_id": execution_id},
                ),
            )
        return record

    async def _follow(
        self, execution_id: str, after: int, context: grpc.aio.ServicerContext
    ) -> ExecutionFinished | None:
        """Stream the journaled events above ``after``, then live ones, until ``finished``.

        Returns the ``finished`` event, or None when the gateway shut down first.
        """
        journal = self.journal
        while not self._closed:
            for entry in await journal.events(execution_id, after):
                event = event_from_entry(entry)
                await context.write(event_to_proto(event))
                after = entry.sequence
                if isinstance(event, ExecutionFinished):
                    return event
            await journal.wait_events(execution_id, after, WATCH_POLL)
        return None

    async def _result_of(self, execution_id: str) -> ExecutionResult | None:
        """Wait for the result of an execution; None when the gateway shut down first."""
        journal = self.journal
        while not self._closed:
            record = await journal.get(execution_id)
            if record is None:
                return None
            if record.result is not None:
                return result_from_data(record.result)
            await journal.wait_events(execution_id, record.last_sequence, WATCH_POLL)
        return None

    async def _abort_continues(
        self, execution_id: str, context: grpc.aio.ServicerContext
    ) -> NoReturn:
        await rpc.abort(
            context,
            rpc.rich_status(
                Code.UNAVAILABLE,
                f"gateway shutting down; execution {execution_id} continues",
                rpc.REASON_HANDED_OVER,
                {"execution_id": execution_id},
            ),
        )

    async def _abort_broken(
        self,
        execution_id: str,
        task: asyncio.Task[ExecutionResult],
        context: grpc.aio.ServicerContext,
    ) -> NoReturn:
        """End the RPC of an execution that produced no result (a shutdown, or a bug)."""
        if task.cancelled():
            if execution_id in self.runs.handed_over:
                await self._abort_continues(execution_id, context)
            await rpc.abort(
                context,
                rpc.rich_status(
                    Code.CANCELLED,
                    "the gateway shut down before the execution finished; it was cancelled",
                    rpc.REASON_SHUTTING_DOWN,
                ),
            )
        # Retrieve the exception (already logged with its traceback) so that asyncio does not
        # log it a second time as "never retrieved".
        task.exception()
        await rpc.abort(
            context,
            rpc.rich_status(Code.INTERNAL, "the execution ended unexpectedly", rpc.REASON_INTERNAL),
        )


@dataclass(frozen=True, slots=True)
class _OverLimit:
    """Why a ``Struct`` field was refused: the message, and the limit's name and value."""

    message: str
    limit: str
    bound: int


def _within_limits(
    field: str, struct: struct_pb2.Struct, limits: RequestLimits
) -> dict[str, Any] | _OverLimit:
    """``struct`` as a plain dict, or the size or depth limit of ``limits`` it is over."""
    size = struct.ByteSize()
    if size > limits.max_input_bytes:
        return _OverLimit(
            f"{field} is {size} bytes, over the limit of {limits.max_input_bytes} bytes "
            "(max_input_bytes)",
            "max_input_bytes",
            limits.max_input_bytes,
        )
    value = from_struct(struct)
    if value_depth(value, limits.max_input_depth) > limits.max_input_depth:
        return _OverLimit(
            f"{field} nests deeper than {limits.max_input_depth} levels (max_input_depth)",
            "max_input_depth",
            limits.max_input_depth,
        )
    return value


def _well_formed(identifier: str, longest: int) -> bool:
    """Whether an execution or signal id is at most ``longest`` characters of ``._:-[]``,
    letters and digits."""
    return len(identifier) <= longest and _EXECUTION_ID.fullmatch(identifier) is not None


async def _check_lookup_id(context: grpc.aio.ServicerContext, field: str, identifier: str) -> None:
    """Abort with INVALID_ARGUMENT unless ``identifier`` can name something to look up."""
    if not identifier:
        await _invalid(context, field, f"{field} is required")
    if not _well_formed(identifier, MAX_LOOKUP_ID):
        await _invalid(context, field, f"{field} may only hold letters, digits or ._:-[]")


async def _invalid(context: grpc.aio.ServicerContext, field: str, message: str) -> NoReturn:
    await rpc.abort(
        context,
        rpc.rich_status(
            Code.INVALID_ARGUMENT, message, rpc.REASON_INVALID_REQUEST, {"field": field}
        ),
    )


def _finished(record: ExecutionRecord) -> grpc.Status:
    execution_id = record.execution_id
    return rpc.rich_status(
        Code.FAILED_PRECONDITION,
        f"execution '{execution_id}' has finished ({record.state.value})",
        rpc.REASON_FINISHED,
        {"execution_id": execution_id, "status": record.state.value},
    )


def _journal_unavailable(journal: Journal) -> grpc.Status:
    return rpc.rich_status(
        Code.UNAVAILABLE,
        f"the journal ({journal.description}) cannot be written; retry later",
        rpc.REASON_JOURNAL_UNAVAILABLE,
    )


def _not_found(name: str) -> grpc.Status:
    return rpc.rich_status(
        Code.NOT_FOUND, f"no workflow named '{name}'", rpc.REASON_NOT_FOUND, {"workflow": name}
    )
