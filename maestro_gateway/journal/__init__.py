"""The journal: the durable record of executions (DESIGN §10); see :mod:`.base` for the contract."""

from maestro_gateway.journal.base import (
    Attempt,
    BadPageToken,
    Entry,
    EventEntry,
    ExecutionFilter,
    ExecutionRecord,
    ExecutionState,
    IntentEntry,
    Journal,
    JournalError,
    OutcomeEntry,
    Page,
    StateEntry,
    canonical_json,
    source_hash,
)
from maestro_gateway.journal.factory import open_journal
from maestro_gateway.journal.memory import MemoryJournal
from maestro_gateway.journal.sqlite import SqliteJournal

__all__ = [
    "Attempt",
    "BadPageToken",
    "Entry",
    "EventEntry",
    "ExecutionFilter",
    "ExecutionRecord",
    "ExecutionState",
    "IntentEntry",
    "Journal",
    "JournalError",
    "MemoryJournal",
    "OutcomeEntry",
    "Page",
    "SqliteJournal",
    "StateEntry",
    "canonical_json",
    "open_journal",
    "source_hash",
]
