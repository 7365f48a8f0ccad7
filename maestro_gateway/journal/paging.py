"""Page tokens: opaque cursors, newest first, of ``list_executions`` and ``list_signals``.

An executions token is ``base64url("m1:" + JSON [started_at, execution_id])`` of the last
execution of the previous page; a signals token is ``base64url("s1:" + JSON sequence)`` of the
last signal. Anything else (one kind's token given to the other listing too) is refused with
:class:`BadPageToken`, so a client cannot confuse our tokens with another system's or forge a
query through them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence

from maestro_gateway.journal.base import (
    BadPageToken,
    ExecutionRecord,
    Page,
    SignalPage,
    SignalRecord,
)

_PREFIX = "m1:"
_SIGNAL_PREFIX = "s1:"

Cursor = tuple[float, str]


def encode_token(last: ExecutionRecord) -> str:
    """The token of the page that follows ``last``."""
    text = _PREFIX + json.dumps([last.started_at, last.execution_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_token(token: str) -> Cursor | None:
    """The cursor in ``token`` (None for the first page).

    Raises:
        BadPageToken: the token was not produced by :func:`encode_token`.
    """
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
        if not text.startswith(_PREFIX):
            raise ValueError(text)
        started, execution_id = json.loads(text[len(_PREFIX) :])
        if not isinstance(started, int | float) or not isinstance(execution_id, str):
            raise ValueError(text)
    except (ValueError, UnicodeError, binascii.Error, TypeError) as exc:
        raise BadPageToken("page_token is not a token returned by ListExecutions") from exc
    return float(started), execution_id


def check_page_size(page_size: int) -> None:
    """Raise ValueError when ``page_size`` is below 1."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")


def execution_page(found: Sequence[ExecutionRecord], page_size: int) -> Page:
    """The first ``page_size`` of ``found`` (read one past it), with the next page's token."""
    page = tuple(found[:page_size])
    return Page(page, encode_token(page[-1]) if len(found) > page_size else "")


def signal_page(found: Sequence[SignalRecord], page_size: int) -> SignalPage:
    """The first ``page_size`` of ``found`` (read one past it), with the next page's token."""
    page = tuple(found[:page_size])
    return SignalPage(page, encode_signal_token(page[-1]) if len(found) > page_size else "")


def newest_first(records: Iterable[ExecutionRecord], after: Cursor | None) -> list[ExecutionRecord]:
    """``records`` newest first (start time, then id, both descending), past the cursor."""
    ordered = sorted(records, key=lambda r: (r.started_at, r.execution_id), reverse=True)
    if after is None:
        return ordered
    return [r for r in ordered if (r.started_at, r.execution_id) < after]


def encode_signal_token(last: SignalRecord) -> str:
    """The token of the page of signals that follows ``last``."""
    text = f"{_SIGNAL_PREFIX}{last.sequence}"
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_signal_token(token: str) -> int | None:
    """The sequence in ``token``: the page holds the signals below it (None for the first page).

    Raises:
        BadPageToken: the token was not produced by :func:`encode_signal_token`.
    """
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
        if not text.startswith(_SIGNAL_PREFIX):
            raise ValueError(text)
        sequence = json.loads(text[len(_SIGNAL_PREFIX) :])
        # Exactly an integer (not a bool, a float or a number beyond SQL's 64 bits).
        if type(sequence) is not int or not 0 <= sequence < 2**63:
            raise ValueError(text)
    except (ValueError, UnicodeError, binascii.Error, TypeError) as exc:
        raise BadPageToken("page_token is not a token returned by ListSignals") from exc
    return sequence
