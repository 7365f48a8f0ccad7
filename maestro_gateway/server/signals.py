"""Signals: received once, journaled, then dispatched to the triggers that match (DESIGN §13).

A signal is committed to the journal before anything happens because of it, under its id (the
producer's, or a hash of its name and canonical params), and the journal takes an id once:
of several deliveries of one signal, concurrent or repeated, one is processed and the others
are answered with the stored signal (``duplicate``). Then every served workflow with a trigger
on its name is considered: a trigger whose ``when`` is false records the workflow under the
signal's ``not_matched``; one that matches starts an execution (detached, as ``Start``) whose
id is derived from the signal, ``<workflow>:<signal_id>`` or ``<workflow>:<dedup value>``, so a
second start of it is the existing execution (idempotent ids, DESIGN §10) and the signal lists
it under ``triggered`` all the same. Once every trigger is processed the signal is marked
dispatched; a gateway that stopped before that dispatches it again when it starts (the derived
ids make it start nothing twice).

It is also the engine's :class:`~maestro_gateway.engine.signals.SignalPort`: an ``emit`` step
sends through :meth:`Signals.send` with its execution and step as the producer, and a ``wait``
step looks through the journal for a matching signal received since its execution started
(so none is lost to the race between sending and reaching the wait, nor to a restart), then
registers to be offered each new one as it is dispatched, looking at the journal again every
``poll`` seconds for signals received by other gateways on the same journal. A signal taken by
a wait is added to its execution's consumed set in the same step of the event loop as it is
accepted, so within one execution it satisfies one wait only; the execution is listed under
the signal's ``woke`` (for a wait on this gateway, before the dispatch ends, so SendSignal's
answer shows it).

What is written on behalf of an execution (the signal its emit step sends, the note that lists
it under ``woke``, and the note that ends the dispatch of its emitted signal) is fenced on a
journal replicas share: a replica that lost the execution's lease writes none of it (the journal
refuses with ``LeaseLost`` and the execution stops here), and the replica that took it over
does it when the step runs again. An emit step that finds its own signal stored but not
dispatched (its earlier run stopped in between) dispatches it: completing, not a second signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from maestro_gateway.engine.executor import new_record
from maestro_gateway.engine.signals import SignalValue
from maestro_gateway.errors import EvaluationError, ExecutionError
from maestro_gateway.journal.base import Journal, SignalRecord, canonical_json
from maestro_gateway.model.schema import check_input
from maestro_gateway.model.types import Trigger, Workflow
from maestro_gateway.resilience.clock import Clock
from maestro_gateway.server.convert import rfc3339
from maestro_gateway.server.logfmt import logfmt
from maestro_gateway.server.registry import WorkflowRegistry
from maestro_gateway.server.runs import Runs

log = logging.getLogger("maestro_gateway.server")


def derived_signal_id(name: str, params: Mapping[str, Any]) -> str:
    """The id of a signal sent without one: SHA-256 of its name and canonical params (hex)."""
    text = f"{name}\n{canonical_json(params)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def signal_value(signal: SignalRecord) -> dict[str, Any]:
    """``signal`` as templates see it: ``{signal_id, name, params, time}`` (time RFC 3339)."""
    return {
        "signal_id": signal.signal_id,
        "name": signal.name,
        "params": dict(signal.params),
        "time": rfc3339(datetime.datetime.fromtimestamp(signal.time, datetime.UTC)),
    }


@dataclass(eq=False)
class _Waiter:
    """A wait step offered each new signal of its name until one matches."""

    matches: Callable[[SignalValue], bool]
    consumed: set[str]
    since: float
    found: asyncio.Future[SignalValue] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the wait is over: the signal it took listed under ``woke``, or given up."""

    def offer(self, signal: SignalRecord) -> bool:
        """Take ``signal`` if it matches and its execution has not taken it yet; whether it did."""
        if self.found.done() or signal.signal_id in self.consumed or signal.time < self.since:
            return False
        value = signal_value(signal)
        try:
            if not self.matches(value):
                return False
        except EvaluationError as exc:
            self.found.set_exception(exc)
            return False
        self.consumed.add(signal.signal_id)
        self.found.set_result(value)
        return True


POLL = 1.0
"""Seconds between two looks at the journal by a waiting step (signals of other gateways)."""
WOKE_WITHIN = 5.0
"""Seconds a dispatch waits at most for the waits it satisfied to list themselves under ``woke``
(one journal commit each), so that SendSignal's answer shows them."""


class Signals:
    """Receives and dispatches signals for one gateway; sends and waits for its executions.

    Args:
        journal: where signals and the executions they start are recorded.
        registry: the served workflows (their triggers).
        runs: starts the executions triggers derive.
        clock: the wall-clock time of a received signal.
        poll: seconds between two looks at the journal by a waiting step.
    """

    on_received: Callable[[str, bool], None] | None = None
    """Told the name of every signal received, and whether it was a duplicate (the metrics)."""

    def __init__(
        self,
        journal: Journal,
        registry: WorkflowRegistry,
        runs: Runs,
        clock: Clock,
        *,
        poll: float = POLL,
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.runs = runs
        self.clock = clock
        self.poll = poll
        self._waiters: dict[str, set[_Waiter]] = {}

    # -- the engine's port -------------------------------------------------------------------

    async def emit(
        self, name: str, params: Mapping[str, Any], signal_id: str, producer: tuple[str, str]
    ) -> SignalValue:
        """Send a signal from an emit step; the stored one as templates see it."""
        stored, _ = await self.send(name, params, signal_id, producer=producer)
        return signal_value(stored)

    async def wait(
        self,
        execution_id: str,
        name: str,
        matches: Callable[[SignalValue], bool],
        since: float,
        consumed: set[str],
    ) -> SignalValue:
        """The first matching signal received since ``since`` (see the module docstring)."""
        waiter = _Waiter(matches, consumed, since)
        waiters = self._waiters.setdefault(name, set())
        waiters.add(waiter)
        try:
            after = 0
            while not waiter.found.done():
                for signal in await self.journal.signals_since(name, since, after):
                    after = max(after, signal.sequence)
                    waiter.offer(signal)
                    if waiter.found.done():
                        break
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(waiter.found), self.poll)
            value = waiter.found.result()
            await self.journal.note_signal(value["signal_id"], woke=[execution_id], by=execution_id)
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._waiters.pop(name, None)
            if not waiter.found.done():
                waiter.found.cancel()
            waiter.done.set()
        return value

    # -- receiving ---------------------------------------------------------------------------

    async def send(
        self,
        name: str,
        params: Mapping[str, Any],
        signal_id: str = "",
        *,
        producer: tuple[str, str] = ("", ""),
    ) -> tuple[SignalRecord, bool]:
        """Receive a signal; return the stored signal (with its lineage) and whether it was a
        duplicate (then nothing was done)."""
        signal = SignalRecord(
            signal_id=signal_id or derived_signal_id(name, params),
            name=name,
            params=dict(params),
            time=self.clock.wall(),
            producer_execution=producer[0],
            producer_step=producer[1],
        )
        existing = await self.journal.add_signal(signal)
        if self.on_received is not None:
            self.on_received(name, existing is not None)
        if existing is not None:
            ours = (existing.producer_execution, existing.producer_step) == producer
            if not (producer[0] and ours and not existing.dispatched):
                return existing, True
            # This emit step's own signal, whose dispatch an earlier run of the step did not
            # finish (it stopped, or lost the execution to this replica): finish it.
            signal = existing
        else:
            log.info(logfmt("signal_received", id=signal.signal_id, name=name))
        await self.dispatch(signal, by=producer[0])
        stored = await self.journal.get_signal(signal.signal_id)
        return stored or signal, existing is not None

    async def dispatch(self, signal: SignalRecord, *, by: str = "") -> None:
        """Offer ``signal`` to the waiting steps, process every trigger on its name, mark it
        dispatched, then wait (bounded) until the waits it satisfied are listed under ``woke``.

        ``by``: the execution whose emit step sent it (the note marking it dispatched is
        fenced on that execution's lease)."""
        took = [w for w in list(self._waiters.get(signal.name, ())) if w.offer(signal)]
        triggered: list[str] = []
        not_matched: list[str] = []
        value = {"signal": signal_value(signal)}
        for workflow in self.registry.all():
            for trigger in workflow.triggers:
                if trigger.signal != signal.name:
                    continue
                execution_id = await self._fire(workflow, trigger, signal, value)
                if execution_id is None:
                    if workflow.name not in not_matched:
                        not_matched.append(workflow.name)
                elif execution_id not in triggered:
                    triggered.append(execution_id)
        await self.journal.note_signal(
            signal.signal_id, triggered=triggered, not_matched=not_matched, dispatched=True, by=by
        )
        if took:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WOKE_WITHIN):
                    for waiter in took:
                        await waiter.done.wait()

    async def redispatch(self) -> int:
        """Dispatch the signals a stopped gateway had not finished dispatching; how many."""
        pending = await self.journal.undispatched_signals()
        for signal in pending:
            await self.dispatch(signal)
        return len(pending)

    async def _fire(
        self,
        workflow: Workflow,
        trigger: Trigger,
        signal: SignalRecord,
        value: dict[str, Any],
    ) -> str | None:
        """Start (or find) the execution ``trigger`` derives; None when it does not match."""
        try:
            if trigger.when is not None and not trigger.when.evaluate(value):
                return None
            input = trigger.input.render(value) if trigger.input is not None else signal.params
            key = signal.signal_id
            if trigger.dedup is not None:
                key = trigger.dedup.render_text(value)
            check_input(workflow, input)
        except (EvaluationError, ExecutionError) as exc:
            log.warning(
                logfmt(
                    "trigger_failed",
                    workflow=workflow.name,
                    signal=signal.signal_id,
                    problem=exc.message if isinstance(exc, ExecutionError) else str(exc),
                )
            )
            return None
        record = new_record(
            workflow,
            input,
            f"{workflow.name}:{key}",
            clock=self.clock,
            triggered_by=signal.signal_id,
        )
        existing = await self.journal.create(record)
        if existing is None:
            self.runs.start(workflow, record, None)
            log.info(
                logfmt(
                    "execution_triggered",
                    id=record.execution_id,
                    workflow=workflow.name,
                    signal=signal.signal_id,
                )
            )
        return record.execution_id
