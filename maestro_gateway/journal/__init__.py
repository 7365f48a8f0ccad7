"""The journal: the durable record of executions (DESIGN §10); see :mod:`.base` for the contract.

``PostgresJournal`` is imported on first use: its driver takes a while to import, and most
commands never need it.
"""

from typing import TYPE_CHECKING, Any

from maestro_gateway.journal.base import (
    Attempt,
    BadPageToken,
    CreateEntry,
    Entry,
    EventEntry,
    ExecutionFilter,
    ExecutionRecord,
    ExecutionState,
    IntentEntry,
    Journal,
    JournalError,
    LeaseLost,
    OutcomeEntry,
    Page,
    Replicas,
    SignalPage,
    SignalRecord,
    StateEntry,
    canonical_json,
    source_hash,
)
from maestro_gateway.journal.factory import open_journal
from maestro_gateway.journal.memory import MemoryJournal
from maestro_gateway.journal.sqlite import SqliteJournal

if TYPE_CHECKING:
    from maestro_gateway.journal.postgres import PostgresJournal

__all__ = [
    "Attempt",
    "BadPageToken",
    "CreateEntry",
    "Entry",
    "EventEntry",
    "ExecutionFilter",
    "ExecutionRecord",
    "ExecutionState",
    "IntentEntry",
    "Journal",
    "JournalError",
    "LeaseLost",
    "MemoryJournal",
    "OutcomeEntry",
    "Page",
    "PostgresJournal",
    "Replicas",
    "SignalPage",
    "SignalRecord",
    "SqliteJournal",
    "StateEntry",
    "canonical_json",
    "open_journal",
    "source_hash",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresJournal":
        from maestro_gateway.journal.postgres import PostgresJournal

        return PostgresJournal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
