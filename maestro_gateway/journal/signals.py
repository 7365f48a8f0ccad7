"""Signals as every journal stores them (DESIGN §13): their params, and how lineage grows.

Params are stored as canonical JSON (:func:`~maestro_gateway.journal.base.canonical_json`:
sorted keys, no spaces, UTF-8 kept) and read back as a fresh dict, whichever the journal.
Lineage (``triggered``, ``woke``, ``not_matched``) only grows: :func:`noted` appends the ids
not listed yet, in order, and ``dispatched`` once set stays set, so a note applied twice (a
retried commit, a redispatch after a restart) changes nothing the second time.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from maestro_gateway.journal.base import SignalRecord, canonical_json
from maestro_gateway.journal.sqlite_schema import jsonable


def params_json(params: Mapping[str, Any]) -> str:
    """``params`` as the canonical JSON text a journal stores.

    A value that expressions can produce but JSON cannot hold (bytes, a timestamp) is stored as
    every other journaled value is (:func:`~maestro_gateway.journal.sqlite_schema.jsonable`). A
    lone surrogate (valid in a Python str, not in UTF-8) stays an ASCII escape: the one case in
    which the text differs from :func:`canonical_json`'s, which could not be stored at all.

    Raises:
        TypeError: a value cannot be stored (as for any entry holding such a value).
    """
    try:
        text = canonical_json(params)
    except TypeError:
        text = json.dumps(
            params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=jsonable
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=jsonable)
    return text


def merged(listed: Iterable[str], added: Iterable[str] = ()) -> tuple[str, ...]:
    """``listed``, then the ids of ``added`` not in it yet: each id once, in first-seen order."""
    return tuple(dict.fromkeys((*listed, *added)))


def noted(
    signal: SignalRecord,
    *,
    triggered: Iterable[str] = (),
    woke: Iterable[str] = (),
    not_matched: Iterable[str] = (),
    dispatched: bool = False,
) -> SignalRecord:
    """``signal`` with one ``note_signal`` applied (the same record when it adds nothing)."""
    return dataclasses.replace(
        signal,
        triggered=merged(signal.triggered, triggered),
        woke=merged(signal.woke, woke),
        not_matched=merged(signal.not_matched, not_matched),
        dispatched=signal.dispatched or dispatched,
    )


def as_stored(signal: SignalRecord, sequence: int) -> SignalRecord:
    """``signal`` as ``add_signal`` keeps it: under ``sequence``, its lineage without duplicates."""
    return dataclasses.replace(
        signal,
        triggered=merged(signal.triggered),
        woke=merged(signal.woke),
        not_matched=merged(signal.not_matched),
        sequence=sequence,
    )
