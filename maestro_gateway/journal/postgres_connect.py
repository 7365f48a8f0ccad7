"""Connecting to PostgreSQL: naming a URL without its password, and telling failures apart.

Which failures are worth another try is data here, decided once, not string matching at every
call site: a server that cannot be reached yet (at start), a connection that broke (while
running), a request the server refuses for good (a bad value: no retry helps).
"""

from __future__ import annotations

import urllib.parse

import asyncpg


def connect_delay(attempt: int) -> float:
    """Seconds to wait before connection attempt ``attempt + 1`` at start: 0.1 s doubling to 2 s."""
    return min(0.1 * 2.0**attempt, 2.0)


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (in the user part or a ``password=`` parameter)."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return dsn.split("://", 1)[0] + "://…"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hosts}" if user else hosts
    kept = [(key, value) for key, value in query if key.lower() != "password"]
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(kept), "")
    )


def dsn_password(dsn: str) -> str:
    try:
        parts = urllib.parse.urlsplit(dsn)
        query = dict(urllib.parse.parse_qsl(parts.query))
    except ValueError:
        return ""
    return parts.password or query.get("password", "")


def environmental(exc: BaseException) -> bool:
    """Whether ``exc`` is the database or the network failing (retry) rather than a bad request."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        # Data exceptions, constraint violations and mistakes in the SQL: retrying cannot mend
        # them. A missing privilege or table is the database being broken: it may be mended.
        return not (
            state[:2] in ("22", "23") or (state[:2] == "42" and state not in ("42501", "42P01"))
        )
    if isinstance(exc, ValueError | TypeError):  # asyncpg's own DataError: a value it cannot send
        return False
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError)


def retry_at_start(exc: BaseException) -> bool:
    """Whether a failed connection at start is worth another try (the server may come)."""
    if isinstance(
        exc,
        asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.PostgresConnectionError,
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError | asyncpg.ClientConfigurationError | ValueError):
        return False  # a refused login, a missing database, a malformed URL
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself is gone (not the statement refused)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] == "08" or state in ("57P01", "57P02", "57P03")
    return isinstance(exc, OSError | asyncpg.InterfaceError) and not isinstance(exc, ValueError)
