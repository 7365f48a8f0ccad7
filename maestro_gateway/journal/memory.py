"""The in-memory journal (``--journal none``): every API works, nothing survives the process.

Entries are applied as they are submitted, so ``then`` runs at once and ``flush`` never waits:
the engine pays nothing for durability it does not get. It is also the reference the SQLite and
PostgreSQL journals are held to by the shared test suite.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import time
from collections.abc import Callable, Sequence

from maestro_gateway.journal.base import (
    Attempt,
    CreateEntry,
    Entry,
    EventEntry,
    ExecutionFilter,
    ExecutionRecord,
    IntentEntry,
    OutcomeEntry,
    Page,
    SignalPage,
    SignalRecord,
    StateEntry,
    check_claim_limit,
)
from maestro_gateway.journal.paging import (
    check_page_size,
    decode_signal_token,
    decode_token,
    execution_page,
    newest_first,
    signal_page,
)
from maestro_gateway.journal.signals import as_stored, noted, params_json


class _Stored:
    """One execution: its record as created, and what changes on it, kept apart.

    Events arrive far more often than anything reads the record, so the record is rebuilt on
    read (:attr:`record`) rather than copied at every event.
    """

    __slots__ = ("_record", "_stale", "attempts", "events")

    def __init__(self, record: ExecutionRecord) -> None:
        self._record = record
        self._stale = False
        self.events: list[EventEntry] = []
        self.attempts: dict[tuple[str, bool, int], Attempt] = {}

    @property
    def record(self) -> ExecutionRecord:
        if self._stale:
            last = self.events[-1].sequence if self.events else 0
            self._record = dataclasses.replace(self._record, last_sequence=last)
            self._stale = False
        return self._record

    @record.setter
    def record(self, record: ExecutionRecord) -> None:
        self._record = record
        self._stale = False

    def appended(self) -> None:
        """An event was appended: ``last_sequence`` is refreshed on the next read."""
        self._stale = True

    @property
    def last_sequence(self) -> int:
        return self.events[-1].sequence if self.events else 0


class MemoryJournal:
    """A journal held in this process's memory.

    Signals are kept in the order they were received (a dict keeps insertion order, and each
    new one gets the next ``sequence``), each beside its params as canonical JSON: reads decode
    them afresh, so no caller can change what another reads.
    """

    description = "none (in memory)"
    durable = False
    writable = True
    replicas = None
    """One process holds it: nothing can take an execution away (no fencing, no lease loops)."""

    def __init__(self, keep_finished: int | None = None) -> None:
        """
        Args:
            keep_finished: how many finished executions, and how many signals, are kept at
                most (the oldest go first, retention or not; running executions always stay);
                None keeps them all until retention deletes them. ``--journal none`` bounds
                them (``MEMORY_KEEP``), so a gateway without a journal runs in flat memory.

        Raises:
            ValueError: ``keep_finished`` is below 1.
        """
        if keep_finished is not None and keep_finished < 1:
            raise ValueError("keep_finished must be at least 1")
        self._keep = keep_finished
        self._executions: dict[str, _Stored] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._signals: dict[str, tuple[SignalRecord, str]] = {}
        self._last_signal = 0  # never reused, even once retention has deleted every signal

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release."""

    async def create(self, record: ExecutionRecord) -> ExecutionRecord | None:
        stored = self._executions.get(record.execution_id)
        if stored is not None:
            return stored.record
        self._executions[record.execution_id] = _Stored(record)
        return None

    def submit(self, entries: Sequence[Entry], then: Callable[[], None] | None = None) -> None:
        for entry in entries:
            self._apply(entry)
        if then is not None:
            then()

    async def flush(self) -> None:
        return None

    def _apply(self, entry: Entry) -> None:
        if isinstance(entry, CreateEntry):
            self._executions.setdefault(entry.execution_id, _Stored(entry.record))
            return
        stored = self._executions.get(entry.execution_id)
        if stored is None:
            return  # deleted by retention while a late entry was in flight
        match entry:
            case EventEntry():
                stored.events.append(entry)
                stored.appended()
                for waiter in self._waiters.pop(entry.execution_id, ()):
                    if not waiter.done():
                        waiter.set_result(None)
            case IntentEntry():
                key = (entry.step, entry.compensation, entry.attempt)
                stored.attempts[key] = Attempt(
                    entry.step, entry.compensation, entry.attempt, entry.time, entry.request
                )
            case OutcomeEntry():
                key = (entry.step, entry.compensation, entry.attempt)
                intent = stored.attempts.get(key)
                if intent is not None:
                    stored.attempts[key] = dataclasses.replace(
                        intent, ended_at=entry.time, response=entry.response, error=entry.error
                    )
            case StateEntry():
                finished = entry.state.finished
                if finished and not stored.record.state.finished and self._keep is not None:
                    self._forget_beyond(self._keep, entry.execution_id)
                stored.record = dataclasses.replace(
                    stored.record,
                    state=entry.state,
                    ended_at=entry.time if finished else None,
                    result=entry.result if finished else stored.record.result,
                    owner="" if finished else stored.record.owner,
                    lease_until=0.0 if finished else stored.record.lease_until,
                )

    def _forget_beyond(self, keep: int, finishing: str) -> None:
        """Note that ``finishing`` finished; delete the oldest finished beyond ``keep``."""
        self._finished.append(finishing)
        while len(self._finished) > keep:
            oldest = self._finished.popleft()
            stored = self._executions.get(oldest)
            if stored is not None and stored.record.state.finished:
                del self._executions[oldest]

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        stored = self._executions.get(execution_id)
        return stored.record if stored is not None else None

    async def list_executions(
        self, where: ExecutionFilter, page_size: int, page_token: str = ""
    ) -> Page:
        after = decode_token(page_token)
        check_page_size(page_size)
        matching = [
            s.record
            for s in self._executions.values()
            if (not where.workflow or s.record.workflow == where.workflow)
            and (not where.states or s.record.state in where.states)
        ]
        return execution_page(newest_first(matching, after), page_size)

    async def events(self, execution_id: str, after: int = 0) -> list[EventEntry]:
        stored = self._executions.get(execution_id)
        if stored is None:
            return []
        return stored.events[after:] if after >= 0 else list(stored.events)

    async def attempts(self, execution_id: str) -> list[Attempt]:
        stored = self._executions.get(execution_id)
        return list(stored.attempts.values()) if stored is not None else []

    async def wait_events(self, execution_id: str, after: int, timeout: float) -> None:  # noqa: ASYNC109
        stored = self._executions.get(execution_id)
        if stored is None or stored.last_sequence > after:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(execution_id, []).append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(execution_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)

    async def claim(
        self, owner: str, lease: float, limit: int | None = None
    ) -> list[ExecutionRecord]:
        check_claim_limit(limit)
        now = time.time()
        free = [
            stored
            for stored in self._executions.values()
            if not stored.record.state.finished
            and not (stored.record.owner and stored.record.lease_until > now)
        ]
        free.sort(key=lambda stored: (stored.record.started_at, stored.record.execution_id))
        claimed: list[ExecutionRecord] = []
        for stored in free[:limit]:
            stored.record = dataclasses.replace(stored.record, owner=owner, lease_until=now + lease)
            claimed.append(stored.record)
        return claimed

    async def renew(self, owner: str, execution_ids: Sequence[str], lease: float) -> set[str]:
        now = time.time()
        lost: set[str] = set()
        for execution_id in execution_ids:
            stored = self._executions.get(execution_id)
            if stored is None or stored.record.owner != owner:
                lost.add(execution_id)
                continue
            stored.record = dataclasses.replace(stored.record, lease_until=now + lease)
        return lost

    async def delete_finished(self, before: float) -> int:
        old = [
            execution_id
            for execution_id, stored in self._executions.items()
            if stored.record.ended_at is not None and stored.record.ended_at < before
        ]
        for execution_id in old:
            del self._executions[execution_id]
        expired = [key for key, (signal, _) in self._signals.items() if signal.time < before]
        for signal_id in expired:
            del self._signals[signal_id]
        return len(old)

    # -- signals ---------------------------------------------------------------------------

    async def add_signal(self, signal: SignalRecord) -> SignalRecord | None:
        params = params_json(signal.params)  # a value it cannot store fails even a duplicate
        found = self._signals.get(signal.signal_id)
        if found is not None:
            return _read(found)
        self._last_signal += 1
        kept = dataclasses.replace(as_stored(signal, self._last_signal), params={})
        self._signals[signal.signal_id] = (kept, params)
        if self._keep is not None and len(self._signals) > self._keep:
            # The oldest dispatched one goes (a dict keeps the order they were received in).
            for signal_id, (stored, _) in self._signals.items():
                if stored.dispatched:
                    del self._signals[signal_id]
                    break
        return None

    async def get_signal(self, signal_id: str) -> SignalRecord | None:
        found = self._signals.get(signal_id)
        return _read(found) if found is not None else None

    async def list_signals(
        self,
        *,
        name: str = "",
        producer_execution: str = "",
        page_size: int = 50,
        page_token: str = "",
    ) -> SignalPage:
        below = decode_signal_token(page_token)
        check_page_size(page_size)
        found: list[tuple[SignalRecord, str]] = []
        for entry in reversed(self._signals.values()):
            signal = entry[0]
            if below is not None and signal.sequence >= below:
                continue
            if (not name or signal.name == name) and (
                not producer_execution or signal.producer_execution == producer_execution
            ):
                found.append(entry)
                if len(found) > page_size:
                    break
        return signal_page([_read(entry) for entry in found], page_size)

    async def signals_since(self, name: str, since: float, after: int = 0) -> list[SignalRecord]:
        return [
            _read(entry)
            for entry in self._signals.values()
            if entry[0].name == name and entry[0].time >= since and entry[0].sequence > after
        ]

    async def note_signal(
        self,
        signal_id: str,
        *,
        triggered: Sequence[str] = (),
        woke: Sequence[str] = (),
        not_matched: Sequence[str] = (),
        dispatched: bool = False,
        by: str = "",
    ) -> None:
        found = self._signals.get(signal_id)
        if found is None:
            return
        signal, params = found
        changed = noted(
            signal, triggered=triggered, woke=woke, not_matched=not_matched, dispatched=dispatched
        )
        self._signals[signal_id] = (changed, params)

    async def undispatched_signals(self) -> list[SignalRecord]:
        return [_read(entry) for entry in self._signals.values() if not entry[0].dispatched]


def _read(entry: tuple[SignalRecord, str]) -> SignalRecord:
    """A kept signal as read: with its params decoded afresh from their canonical JSON."""
    signal, params = entry
    return dataclasses.replace(signal, params=json.loads(params))
