"""Which journal ``--journal`` names: ``none``, ``sqlite:PATH`` or a path, or ``postgresql://…``."""

from __future__ import annotations

import re
from typing import Literal

from maestro_gateway.journal.base import Journal, JournalError
from maestro_gateway.journal.memory import MemoryJournal
from maestro_gateway.journal.sqlite import SqliteJournal

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


DEFAULT_CONNECT_TIMEOUT = 30.0
MEMORY_KEEP = 10_000
"""Finished executions, and signals, ``--journal none`` keeps at most (the newest)."""


def open_journal(
    spec: str, *, sync: str = "normal", connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> Journal:
    """The journal ``spec`` names, not opened yet (the caller awaits its ``open()``).

    Args:
        spec: ``none`` (in memory), ``sqlite:PATH`` or a plain file path, or a PostgreSQL URL
            (``postgresql://`` or ``postgres://``, libpq's form; DESIGN §11).
        sync: ``normal`` or ``full`` (SQLite: an fsync per commit; PostgreSQL commits as the
            server's ``synchronous_commit`` says).
        connect_timeout: how long opening a PostgreSQL journal retries an unreachable server.

    Raises:
        JournalError: the spec is empty, names an unsupported store, or ``sync`` is unknown.
    """
    text = spec.strip()
    if not text:
        raise JournalError("the journal is empty: give a file path, sqlite:PATH or none")
    if sync not in ("normal", "full"):
        raise JournalError(f"journal sync must be 'normal' or 'full', not {sync!r}")
    if text.lower() == "none":
        return MemoryJournal(keep_finished=MEMORY_KEEP)
    scheme = _URL_SCHEME.match(text)
    if scheme is not None and scheme.group(1).lower() in ("postgresql", "postgres"):
        from maestro_gateway.journal.postgres import PostgresJournal

        return PostgresJournal(text, connect_timeout=connect_timeout)
    mode: Literal["normal", "full"] = "full" if sync == "full" else "normal"
    if text.lower().startswith("sqlite:"):
        path = text[len("sqlite:") :]
        if path.startswith("//"):  # the URL form, sqlite:///var/lib/journal.db
            path = path[2:]
        if not path:
            raise JournalError(f"journal {spec!r} names no file: give sqlite:PATH")
        return SqliteJournal(path, sync=mode)
    if scheme is not None:
        # Only the scheme is repeated: the rest of a URL may hold a password.
        raise JournalError(
            f"journal scheme {scheme.group(1)}:// is not supported: give a file path,"
            " sqlite:PATH or none"
        )
    return SqliteJournal(text, sync=mode)
