"""The live view on the admin port (DESIGN §14): a read-only page, its JSON API and event streams.

Everything here reads the journal through the same calls as ``ListExecutions`` and
``WatchExecution`` (``list_executions``, ``get``, ``events``, ``wait_events``), never the engine,
so the view of any replica shows every execution of a shared journal.

Paths (anything else on the admin port is 404)::

    /                                  the page (index.html)
    /static/NAME                       its files, from a fixed list read at start (no file-system
                                       lookup per request: no path can reach another file)
    /api/executions                    ?workflow=W &status=S (repeatable, or comma-separated,
                                       case-insensitive) &page_size=N (1..1000) &page_token=T
    /api/executions/{id}               one execution
    /api/executions/{id}/events        server-sent events: the journaled events above
                                       ``Last-Event-ID`` (the header; the query parameter
                                       ``last_event_id`` for a first connection), then the live
                                       ones, up to and including ``finished``

Each event is sent with ``id:`` its journal sequence, so a reconnecting ``EventSource`` resumes
with nothing lost and nothing twice; once ``finished`` was sent, a reconnect gets 204 (which
tells ``EventSource`` to stop). A comment line every :data:`KEEPALIVE` seconds keeps proxies from
closing an idle stream. At most ``max_streams`` streams are open at once (default
:data:`MAX_STREAMS`); one more is 503. A stream ends when its client goes (the handler is
cancelled: nothing of it is left waiting on the journal) or when the gateway starts draining.

Bad input is 400 with ``{"error": …, "parameter": NAME}``; an unknown execution is 404 with
``{"error": …, "execution_id": ID}``. With ``view_payloads`` False (``maestro serve
--view-payloads false``) inputs, outputs and step outputs are left out of every answer here, not
merely hidden by the page.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from aiohttp import web

from maestro_gateway.journal.base import (
    BadPageToken,
    EventEntry,
    ExecutionFilter,
    ExecutionRecord,
    ExecutionState,
    Journal,
)
from maestro_gateway.server.app import GatewayServer
from maestro_gateway.server.logfmt import logfmt
from maestro_gateway.server.service import DEFAULT_PAGE_SIZE, MAX_LOOKUP_ID, MAX_PAGE_SIZE

log = logging.getLogger("maestro_gateway.admin")

MAX_STREAMS = 32
"""Event streams (``/api/executions/{id}/events``) open at once, over every client."""
KEEPALIVE = 15.0
"""Seconds of silence after which a stream sends a comment line."""
POLL = 1.0
"""Seconds a stream waits for the next event before it looks at the journal again."""
RETRY_MS = 2000
"""The reconnect delay the streams advise ``EventSource`` (``retry:``)."""
MAX_WORKFLOW_NAME = 256
"""Longest ``workflow`` filter accepted."""

STATIC_FILES: dict[str, str] = {
    "app.css": "text/css",
    "app.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
"""Every file under ``/static/`` and its media type (``index.html`` is served at ``/``)."""

PAGE_HEADERS = {
    # Defence in depth: the page never builds HTML from data (textContent only), and this
    # forbids any script, style or handler that is not one of its own files anyway.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_EXECUTION_ID = re.compile(r"[A-Za-z0-9._:\[\]-]+")
_STATES = {state.value.lower(): state for state in ExecutionState}
_LIST_PARAMETERS = frozenset({"workflow", "status", "page_size", "page_token"})


class BadRequest(Exception):
    """A request parameter that cannot be used: the message names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_filter(query: Sequence[tuple[str, str]]) -> tuple[ExecutionFilter, int, str]:
    """The filter, page size and page token of ``/api/executions``.

    Args:
        query: every (name, value) pair of the query string, in order (``status`` may repeat;
            of the others the last one counts).

    Raises:
        BadRequest: an unknown parameter, an unknown status, a page size out of range or a
            workflow name too long; the message names the parameter.
    """
    last = dict(query)
    for name, _ in query:
        if name not in _LIST_PARAMETERS:
            known = ", ".join(sorted(_LIST_PARAMETERS))
            raise BadRequest(name[:64], f"unknown parameter '{name[:64]}' (known: {known})")
    workflow = last.get("workflow", "")
    if len(workflow) > MAX_WORKFLOW_NAME:
        raise BadRequest("workflow", f"workflow is longer than {MAX_WORKFLOW_NAME} characters")
    states: set[ExecutionState] = set()
    for name, value in query:
        if name != "status":
            continue
        for word in value.split(","):
            word = word.strip()
            if not word:
                continue
            state = _STATES.get(word.lower())
            if state is None:
                known = ", ".join(_STATES)
                raise BadRequest(
                    "status", f"status: '{word[:64]}' is not an execution status (one of {known})"
                )
            states.add(state)
    size_text = last.get("page_size", "")
    size = DEFAULT_PAGE_SIZE
    if size_text:
        if not _whole(size_text, 4) or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
            raise BadRequest(
                "page_size", f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}"
            )
        size = int(size_text)
    return ExecutionFilter(workflow, frozenset(states)), size, last.get("page_token", "")


def parse_after(header: str | None, parameter: str | None) -> int:
    """The sequence to resume after: the ``Last-Event-ID`` header, else ``last_event_id``.

    Raises:
        BadRequest: the value is not a whole number (naming which of the two it was).
    """
    for name, value in (("Last-Event-ID", header), ("last_event_id", parameter)):
        if value is None or value == "":
            continue
        if not _whole(value, 18):
            raise BadRequest(name, f"{name} must be an event sequence number (a whole number)")
        return int(value)
    return 0


def _whole(text: str, digits: int) -> bool:
    """Whether ``text`` is a whole number of at most ``digits`` ASCII digits."""
    return 0 < len(text) <= digits and text.isascii() and text.isdigit()


def execution_json(record: ExecutionRecord, *, payloads: bool) -> dict[str, Any]:
    """One execution as the view's API answers it (times as seconds since the epoch)."""
    out: dict[str, Any] = {
        "execution_id": record.execution_id,
        "workflow": record.workflow,
        "status": record.state.value,
        "labels": dict(record.labels),
        "start_time": record.started_at,
        "end_time": record.ended_at,
        "last_sequence": record.last_sequence,
        "triggered_by": record.triggered_by,
        "result": None if record.result is None else result_json(record.result, payloads=payloads),
    }
    if payloads:
        out["input"] = record.input
    return out


def result_json(result: Mapping[str, Any], *, payloads: bool) -> dict[str, Any]:
    """An execution result (the journal's form) with its outputs only when ``payloads``."""
    out = dict(result)
    steps = [dict(step) for step in result.get("steps") or ()]
    if not payloads:
        out.pop("output", None)
        for step in steps:
            step.pop("output", None)
    out["steps"] = steps
    return out


def event_json(entry: EventEntry, *, payloads: bool) -> dict[str, Any]:
    """One journaled event: ``sequence``, ``time``, ``kind`` and its fields (outputs only when
    ``payloads``)."""
    data = dict(entry.data)
    if entry.kind == "finished" and isinstance(data.get("result"), Mapping):
        data["result"] = result_json(data["result"], payloads=payloads)
    elif not payloads:
        data.pop("output", None)
    return {"sequence": entry.sequence, "time": entry.time, "kind": entry.kind, **data}


def sse_event(entry: EventEntry, *, payloads: bool) -> bytes:
    """One event as a server-sent-events message (``id:`` the journal sequence)."""
    data = json.dumps(event_json(entry, payloads=payloads), separators=(",", ":"))
    return f"id: {entry.sequence}\nevent: {entry.kind}\ndata: {data}\n\n".encode()


def _error(status: int, message: str, **fields: str) -> web.Response:
    return web.json_response({"error": message, **fields}, status=status)


def _unreadable(exc: Exception) -> web.Response:
    """503 for a journal read that failed (a database gone, a journal closed): the page retries."""
    log.warning(logfmt("view_journal_unreadable", error=type(exc).__name__))
    return _error(503, "the journal cannot be read right now; retry later")


def _static_files() -> dict[str, bytes]:
    folder = resources.files("maestro_gateway.admin") / "static"
    files = {name: (folder / name).read_bytes() for name in STATIC_FILES}
    files["index.html"] = (folder / "index.html").read_bytes()
    return files


class LiveView:
    """The live view's handlers for one gateway (see the module docstring).

    Args:
        gateway: whose journal it reads (and whose draining ends its streams).
        view_payloads: whether inputs and outputs are shown.
        max_streams: event streams allowed open at once; one more is 503.
        keepalive: seconds of silence before a stream sends a comment.
    """

    def __init__(
        self,
        gateway: GatewayServer,
        *,
        view_payloads: bool = True,
        max_streams: int = MAX_STREAMS,
        keepalive: float = KEEPALIVE,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        self.gateway = gateway
        self.view_payloads = view_payloads
        self.max_streams = max_streams
        self.keepalive = keepalive
        self.streams = 0
        """Event streams open now."""
        self._files = _static_files()

    @property
    def journal(self) -> Journal:
        return self.gateway.journal

    def add_routes(self, app: web.Application) -> None:
        """Add the page, its files and the API to ``app`` (GET only)."""
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/executions", self._list)
        app.router.add_get("/api/executions/{execution_id}", self._get)
        app.router.add_get("/api/executions/{execution_id}/events", self._events)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._files["index.html"],
            content_type="text/html",
            charset="utf-8",
            headers=PAGE_HEADERS,
        )

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(
            body=self._files[name],
            content_type=STATIC_FILES[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    async def _list(self, request: web.Request) -> web.Response:
        try:
            where, size, token = parse_filter(list(request.query.items()))
            page = await self.journal.list_executions(where, size, token)
        except BadRequest as exc:
            return _error(400, str(exc), parameter=exc.parameter)
        except BadPageToken as exc:
            return _error(400, f"page_token: {exc}", parameter="page_token")
        except Exception as exc:  # the journal's errors and its driver's
            return _unreadable(exc)
        return web.json_response(
            {
                "executions": [
                    execution_json(r, payloads=self.view_payloads) for r in page.executions
                ],
                "next_page_token": page.next_token,
                "view_payloads": self.view_payloads,
                "time": time.time(),
            }
        )

    async def _lookup(self, request: web.Request) -> ExecutionRecord | web.Response:
        execution_id = request.match_info["execution_id"]
        if len(execution_id) > MAX_LOOKUP_ID or not _EXECUTION_ID.fullmatch(execution_id):
            return _error(
                400,
                "execution_id may only hold letters, digits or ._:-[] "
                f"(at most {MAX_LOOKUP_ID} characters)",
                parameter="execution_id",
            )
        try:
            record = await self.journal.get(execution_id)
        except Exception as exc:  # the journal's errors and its driver's
            return _unreadable(exc)
        if record is None:
            return _error(
                404,
                f"no execution '{execution_id}' (unknown, or past its retention)",
                execution_id=execution_id,
            )
        return record

    async def _get(self, request: web.Request) -> web.Response:
        found = await self._lookup(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(
            {
                **execution_json(found, payloads=self.view_payloads),
                "view_payloads": self.view_payloads,
                "time": time.time(),
            }
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        try:
            after = parse_after(
                request.headers.get("Last-Event-ID"), request.query.get("last_event_id")
            )
        except BadRequest as exc:
            return _error(400, str(exc), parameter=exc.parameter)
        found = await self._lookup(request)
        if isinstance(found, web.Response):
            return found
        if found.state.finished and after >= found.last_sequence:
            return web.Response(status=204)  # everything was sent: EventSource stops here
        if self.gateway.service.draining:
            return _error(503, "the gateway is shutting down; reconnect to another replica")
        if self.streams >= self.max_streams:
            return _error(
                503,
                f"too many live event streams open (the limit is {self.max_streams}); "
                "close a tab or retry later",
            )
        self.streams += 1
        try:
            return await self._stream(request, found.execution_id, after)
        finally:
            self.streams -= 1

    async def _stream(
        self, request: web.Request, execution_id: str, after: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass events through at once
            }
        )
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        journal = self.journal
        quiet_since = time.monotonic()
        try:
            while not self.gateway.service.draining:
                entries = await journal.events(execution_id, after)
                for entry in entries:
                    await response.write(sse_event(entry, payloads=self.view_payloads))
                    after = entry.sequence
                    if entry.kind == "finished":
                        return response
                if entries:
                    quiet_since = time.monotonic()
                elif await journal.get(execution_id) is None:
                    return response  # deleted (retention) while watched
                elif time.monotonic() - quiet_since >= self.keepalive:
                    await response.write(b": keep-alive\n\n")
                    quiet_since = time.monotonic()
                await journal.wait_events(execution_id, after, min(POLL, self.keepalive))
        except ConnectionError:
            pass  # the client went while we wrote
        except Exception as exc:  # a journal read failed (it is closing): end; the client retries
            log.warning(logfmt("view_stream_ended", execution_id=execution_id, error=repr(exc)))
        return response
