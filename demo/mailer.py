"""Demo mailer service: HTTP/JSON on aiohttp.web.

Run it with ``python -m demo.mailer [--host H] [--port N]`` (default 127.0.0.1:8081).

Routes (the method names used by fault rules and call records in brackets):

- ``POST /orders/{order_id}/mail`` [``SendMail``] — JSON body ``{"to": "...", "template":
  "..."}`` (``to`` required) → 200 ``{"message_id": "mail-<n>", "order_id": ..., "to": ...,
  "template": ..., "status": "SENT"}``.
- ``DELETE /orders/{order_id}/mail/{message_id}`` [``RecallMail``] — the compensation →
  200 ``{"message_id": ..., "order_id": ..., "status": "RECALLED"}``; an unknown message (or one
  sent for another order) is 404; recalling twice is fine.
- ``GET /health`` → ``{"status": "SERVING"}`` (not recorded).
- Control plane as JSON: ``POST /_control/faults`` (a ``shop.control.v1.Fault`` as JSON; ``code``
  may also be an HTTP status as text, e.g. ``"503"``), ``POST /_control/reset``, ``GET
  /_control/calls`` → ``{"calls": [...]}`` (``shop.control.v1.Call`` as JSON).

Errors are ``{"error": {"code": <gRPC code name>, "message": ...}}`` with the HTTP status of
:data:`HTTP_STATUS` (or the exact status a fault asked for). A fault's ``retry_after_ms`` becomes
a ``Retry-After`` header in whole seconds, rounded up. A recorded call's ``request_json`` holds
the path parameters and the JSON body fields in one object; its outcome is the gRPC code name
(a status number in a fault is recorded as the code the gateway maps it to).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from demo.control import ControlPlane, DemoError, make_rule, select_metadata
from demo.process import announce_ready, parse_args, wait_for_stop_signal

DEFAULT_PORT = 8081

HTTP_STATUS: dict[str, int] = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 412,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
"""The HTTP status of each gRPC code (close to google.rpc's mapping)."""


def code_of_http_status(status: int) -> str:
    """The gRPC code name the gateway maps an HTTP error status to (DESIGN §3)."""
    exact = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ABORTED",
        429: "RESOURCE_EXHAUSTED",
        501: "UNIMPLEMENTED",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
    if status in exact:
        return exact[status]
    return "FAILED_PRECONDITION" if status < 500 else "INTERNAL"


def error_response(error: DemoError) -> web.Response:
    """The JSON error response for ``error``, with ``Retry-After`` for a retry hint."""
    headers = {}
    if error.retry_after_ms > 0:
        headers["Retry-After"] = str(math.ceil(error.retry_after_ms / 1000))
    return web.json_response(
        {"error": {"code": error.code, "message": error.message}},
        status=error.http_status or HTTP_STATUS.get(error.code, 500),
        headers=headers,
    )


class Mailer:
    """The mail routes and the control plane of one mailer process."""

    def __init__(self) -> None:
        """Start with no mail sent, no rules and no calls."""
        self.control = ControlPlane()
        self._ids = itertools.count(1)
        self._sent: dict[str, dict[str, Any]] = {}

    async def _json_object(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DemoError("INVALID_ARGUMENT", f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise DemoError("INVALID_ARGUMENT", "body must be a JSON object")
        return body

    async def _handle(
        self,
        method: str,
        request: web.Request,
        call: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> web.Response:
        try:
            body = await self._json_object(request)
        except DemoError as exc:
            return error_response(exc)
        fields = {**request.query, **body, **request.match_info}
        request_json = json.dumps(fields, separators=(",", ":"))
        metadata = select_metadata(request.headers.items())
        try:
            result = await self.control.handle(method, request_json, metadata, lambda: call(fields))
        except DemoError as exc:
            return error_response(exc)
        return web.json_response(result)

    async def send(self, request: web.Request) -> web.Response:
        """``POST /orders/{order_id}/mail``."""

        async def business(fields: dict[str, Any]) -> dict[str, Any]:
            to = fields.get("to")
            if not isinstance(to, str) or not to:
                raise DemoError("INVALID_ARGUMENT", "field 'to' must be a non-empty string")
            message = {
                "message_id": f"mail-{next(self._ids)}",
                "order_id": fields["order_id"],
                "to": to,
                "template": str(fields.get("template", "")),
                "status": "SENT",
            }
            self._sent[message["message_id"]] = message
            return message

        return await self._handle("SendMail", request, business)

    async def recall(self, request: web.Request) -> web.Response:
        """``DELETE /orders/{order_id}/mail/{message_id}``."""

        async def business(fields: dict[str, Any]) -> dict[str, Any]:
            message = self._sent.get(fields["message_id"])
            if message is None or message["order_id"] != fields["order_id"]:
                raise DemoError(
                    "NOT_FOUND",
                    f"no message {fields['message_id']!r} for order {fields['order_id']!r}",
                )
            message["status"] = "RECALLED"
            return {k: message[k] for k in ("message_id", "order_id", "status")}

        return await self._handle("RecallMail", request, business)

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``."""
        return web.json_response({"status": "SERVING"})

    async def add_fault(self, request: web.Request) -> web.Response:
        """``POST /_control/faults``: append a fault rule."""
        try:
            fault = await self._json_object(request)
            unknown = set(fault) - {
                "method",
                "code",
                "message",
                "times",
                "delay_ms",
                "retry_after_ms",
            }
            if unknown:
                raise DemoError("INVALID_ARGUMENT", f"unknown fault fields: {sorted(unknown)}")
            strings = {k: fault.get(k, "") for k in ("method", "code", "message")}
            numbers = {k: fault.get(k, 0) for k in ("times", "delay_ms", "retry_after_ms")}
            if not all(isinstance(v, str) for v in strings.values()) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in numbers.values()
            ):
                raise DemoError("INVALID_ARGUMENT", "fault fields have the wrong types")
            rule = make_rule(**strings, **numbers, code_of_http_status=code_of_http_status)
        except DemoError as exc:
            return error_response(exc)
        self.control.add_fault(rule)
        return web.json_response({})

    async def reset(self, request: web.Request) -> web.Response:
        """``POST /_control/reset``: forget rules, calls and sent mail."""
        self.control.reset()
        self._sent.clear()
        return web.json_response({})

    async def calls(self, request: web.Request) -> web.Response:
        """``GET /_control/calls``: the calls received so far, oldest first."""
        return web.json_response(
            {
                "calls": [
                    {
                        "method": c.method,
                        "request_json": c.request_json,
                        "metadata": c.metadata,
                        "outcome": c.outcome,
                        "started_unix_ms": c.started_unix_ms,
                        "ended_unix_ms": c.ended_unix_ms,
                    }
                    for c in self.control.calls()
                ]
            }
        )


def make_app() -> web.Application:
    """The aiohttp application of one mailer."""
    mailer = Mailer()
    app = web.Application()
    app.add_routes(
        [
            web.post("/orders/{order_id}/mail", mailer.send),
            web.delete("/orders/{order_id}/mail/{message_id}", mailer.recall),
            web.get("/health", mailer.health),
            web.post("/_control/faults", mailer.add_fault),
            web.post("/_control/reset", mailer.reset),
            web.get("/_control/calls", mailer.calls),
        ]
    )
    return app


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, announcing the bound port on stdout."""
    # handler_cancellation: a caller that goes away cancels the handler, so the call is
    # recorded as CANCELLED like on the gRPC services.
    runner = web.AppRunner(
        make_app(),
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=0.5,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = runner.addresses
    bound = sockets[0][1] if sockets else port
    announce_ready("mailer", host, bound)
    try:
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m demo.mailer``."""
    args = parse_args("mailer", DEFAULT_PORT, argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
