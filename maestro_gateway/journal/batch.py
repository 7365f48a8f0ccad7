"""What the event loop submitted between two hand-offs, already as SQL parameters.

Shared by the SQLite and PostgreSQL journals: both encode entries once, on the event loop, into
the same parameter tuples (:mod:`.sqlite_schema`), and commit a group of batches in one
transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from maestro_gateway.journal.base import Entry, EventEntry, IntentEntry, OutcomeEntry, StateEntry
from maestro_gateway.journal.sqlite_schema import (
    event_params,
    intent_params,
    outcome_params,
    state_params,
)

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

    __slots__ = ("attempt_runs", "events", "last_sequence", "rows", "states", "thens")

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.states: list[tuple[Any, ...]] = []
        # Intents and outcomes of one attempt must apply in order: runs of (is_intent, rows).
        self.attempt_runs: list[tuple[bool, list[tuple[Any, ...]]]] = []
        self.last_sequence: dict[str, int] = {}
        self.thens: list[Then] = []
        self.rows = 0

    def add(self, entries: Sequence[Entry]) -> None:
        """Encode ``entries`` and append them; one that is not JSON-ready appends none of them.

        Raises:
            TypeError: a value in an entry is not JSON-ready.
        """
        events: list[tuple[Any, ...]] = []
        attempts: list[tuple[bool, tuple[Any, ...]]] = []
        states: list[tuple[Any, ...]] = []
        for entry in entries:
            match entry:
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
        self.states.extend(states)
        self.rows += len(entries)

    def add_attempt(self, is_intent: bool, params: tuple[Any, ...]) -> None:
        """Append one intent's or outcome's parameters, keeping the order of the two kinds."""
        runs = self.attempt_runs
        if runs and runs[-1][0] is is_intent:
            runs[-1][1].append(params)
        else:
            runs.append((is_intent, [params]))
