"""What the event loop submitted between two hand-offs, already as SQL parameters.

Shared by the SQLite and PostgreSQL journals: both encode entries once, on the event loop, into
the same parameter tuples (:mod:`.sqlite_schema`), and commit a group of batches in one
transaction. :class:`GroupCommit` is their common event-loop half: the pending batch, its
hand-off to the writer, ``submit`` and ``flush``, running the ``then`` callbacks, and the
``writable`` bookkeeping of a writer retrying a failed group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from maestro_gateway.journal.base import (
    CreateEntry,
    Entry,
    EventEntry,
    ExecutionRecord,
    IntentEntry,
    JournalError,
    OutcomeEntry,
    StateEntry,
)
from maestro_gateway.journal.sqlite_schema import (
    event_params,
    intent_params,
    outcome_params,
    record_params,
    state_params,
)

logger = logging.getLogger("maestro_gateway.journal")

LAZY_COMMIT = 0.002
"""Seconds entries that nobody awaits may wait for company before they are committed."""

Then = Callable[[], None] | asyncio.Future[None]
"""A ``then`` callback, or the future of a ``flush``."""

CommitObserver = Callable[[float], None]
"""Told the seconds each group commit took (its transaction, fsync included): the metrics."""


@runtime_checkable
class CommitTimed(Protocol):
    """A journal that reports the duration of its commits (SQLite, PostgreSQL).

    ``on_commit`` is called once per group commit that wrote anything, from the thread that
    committed (the SQLite journal's writer thread): it must be quick and thread-safe.
    """

    on_commit: CommitObserver | None


def writes_anything(group: Sequence[object]) -> bool:
    """Whether a group holds an operation or a batch with rows (else it commits nothing)."""
    return any(not isinstance(item, Batch) or item.rows for item in group)


class Batch:
    """The entries of one stretch of the event loop, and who waits for them."""

    __slots__ = (
        "attempt_runs",
        "creates",
        "events",
        "ids",
        "last_sequence",
        "rows",
        "states",
        "thens",
    )

    def __init__(self) -> None:
        # New executions (CreateEntry), written before anything else of the batch.
        self.creates: list[tuple[ExecutionRecord, tuple[Any, ...]]] = []
        self.events: list[tuple[Any, ...]] = []
        self.states: list[tuple[Any, ...]] = []
        # Intents and outcomes of one attempt must apply in order: runs of (is_intent, rows).
        self.attempt_runs: list[tuple[bool, list[tuple[Any, ...]]]] = []
        self.last_sequence: dict[str, int] = {}
        self.thens: list[Then] = []
        self.rows = 0
        self.ids: set[str] = set()
        """The executions the entries are about."""

    def add(self, entries: Sequence[Entry]) -> None:
        """Encode ``entries`` and append them; one that is not JSON-ready appends none of them.

        Raises:
            TypeError: a value in an entry is not JSON-ready.
        """
        creates: list[tuple[ExecutionRecord, tuple[Any, ...]]] = []
        events: list[tuple[Any, ...]] = []
        attempts: list[tuple[bool, tuple[Any, ...]]] = []
        states: list[tuple[Any, ...]] = []
        for entry in entries:
            match entry:
                case CreateEntry():
                    creates.append((entry.record, record_params(entry.record)))
                case EventEntry():
                    events.append(event_params(entry))
                case IntentEntry():
                    attempts.append((True, intent_params(entry)))
                case OutcomeEntry():
                    attempts.append((False, outcome_params(entry)))
                case StateEntry():
                    states.append(state_params(entry))
        if events:
            self.events.extend(events)
            last = self.last_sequence
            for execution_id, sequence, *_ in events:
                if last.get(execution_id, 0) < sequence:
                    last[execution_id] = sequence
        for is_intent, params in attempts:
            self.add_attempt(is_intent, params)
        self.creates.extend(creates)
        self.states.extend(states)
        self.rows += len(entries)
        self.ids.update(entry.execution_id for entry in entries)

    def add_attempt(self, is_intent: bool, params: tuple[Any, ...]) -> None:
        """Append one intent's or outcome's parameters, keeping the order of the two kinds."""
        runs = self.attempt_runs
        if runs and runs[-1][0] is is_intent:
            runs[-1][1].append(params)
        else:
            runs.append((is_intent, [params]))


class Awaited(Protocol):
    """A queued operation: its caller awaits ``future``."""

    future: asyncio.Future[Any]


def merge_last_sequences(batches: Iterable[Batch], into: dict[str, int]) -> None:
    """Raise each execution's sequence in ``into`` to the last event of ``batches`` about it."""
    for batch in batches:
        for execution_id, sequence in batch.last_sequence.items():
            if into.get(execution_id, 0) < sequence:
                into[execution_id] = sequence


def holds_event(group: Iterable[object], sequence: int) -> bool:
    """Whether a batch of ``group`` holds an event with this sequence (the fault injections)."""
    return any(
        row[1] == sequence for item in group if isinstance(item, Batch) for row in item.events
    )


def fail_all(items: Iterable[Batch | Awaited], error: BaseException) -> int:
    """Fail every caller awaiting ``items`` with ``error``; return how many entries and
    operations they held."""
    count = 0
    for item in items:
        if isinstance(item, Batch):
            count += item.rows
            futures: list[Then] = item.thens
        else:
            count += 1
            futures = [item.future]
        for future in futures:
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_exception(error)
    return count


class GroupCommit:
    """The event-loop half of group commit, shared by the SQLite and PostgreSQL journals.

    Everything submitted in one stretch of the event loop is one :class:`Batch`: the first
    ``submit`` with a ``then`` (or a ``flush``) schedules (``call_soon``) its hand-off to the
    writer, through ``_enqueue``; entries without ``then`` wait up to ``LAZY_COMMIT`` for company.
    The journal sets the attributes below in ``__init__`` (``_pending`` once open, None once
    closed) and provides ``_label`` (its name in messages) and ``_enqueue``.
    """

    on_commit: CommitObserver | None
    _loop: asyncio.AbstractEventLoop | None
    _pending: Batch | None
    _handoff_scheduled: bool
    _lazy: asyncio.TimerHandle | None
    _closed: bool
    _writable: bool
    _last_error: str

    @property
    def _label(self) -> str:
        raise NotImplementedError

    def _enqueue(self, batch: Batch) -> None:
        """Queue ``batch`` for the writer and wake it."""
        raise NotImplementedError

    def submit(self, entries: Sequence[Entry], then: Callable[[], None] | None = None) -> None:
        """Queue ``entries`` for the next group commit; run ``then`` once they are durable.

        Raises:
            JournalError: the journal is not open.
            TypeError: a value in an entry is not JSON-ready.
        """
        batch = self._batch()
        batch.add(entries)
        if then is not None:
            batch.thens.append(then)
            self._schedule_handoff()
        else:
            self._schedule_lazy()

    async def flush(self) -> None:
        """Return once everything submitted so far is durable."""
        loop = self._running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._batch().thens.append(done)
        self._schedule_handoff()
        await done

    def _batch(self) -> Batch:
        batch = self._pending
        if batch is None:
            raise JournalError(
                f"journal {self._label} is {'closed' if self._closed else 'not open'}"
            )
        return batch

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        self._batch()
        assert self._loop is not None
        return self._loop

    def _schedule_handoff(self) -> None:
        if not self._handoff_scheduled:
            self._handoff_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._handoff)

    def _schedule_lazy(self) -> None:
        """Entries nobody waits for commit within ``LAZY_COMMIT`` s, with whatever comes next.

        The engine submits an attempt's outcome and its event, and soon the next attempt's
        intent, which it does wait for: one commit instead of two. Readers (watchers) see such
        entries at most a couple of milliseconds later.
        """
        if not self._handoff_scheduled and self._lazy is None:
            assert self._loop is not None
            self._lazy = self._loop.call_later(LAZY_COMMIT, self._handoff)

    def _handoff(self) -> None:
        self._handoff_scheduled = False
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        batch = self._pending
        if batch is None or not (batch.rows or batch.thens):
            return
        self._pending = Batch()
        self._enqueue(batch)

    def _run_thens(self, thens: Iterable[Then]) -> None:
        """Resolve the futures and call the callbacks of a committed batch, in order."""
        for then in thens:
            if isinstance(then, asyncio.Future):
                if not then.done():
                    then.set_result(None)
                continue
            try:
                then()
            except Exception as exc:
                assert self._loop is not None
                self._loop.call_exception_handler(
                    {"message": "a journal then-callback failed", "exception": exc}
                )

    def _commit_failed(self, error: str) -> None:
        """A group commit failed with ``error`` and will be retried: log it once per error."""
        self._writable = False
        if error != self._last_error:
            self._last_error = error
            logger.warning(
                "journal %s: commit failed (%s); retrying until it succeeds", self._label, error
            )

    def _commit_succeeded(self, group: Sequence[object], seconds: float) -> None:
        """A group commit took ``seconds``: writable again, and the metrics told."""
        if not self._writable:
            self._writable = True
            self._last_error = ""
            logger.info("journal %s: commits succeed again", self._label)
        observe = self.on_commit
        if observe is not None and writes_anything(group):
            observe(seconds)
