"""HttpTransport against a real aiohttp server on 127.0.0.1 that records what it received."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service
from maestro_gateway.transports.http import HttpTransport


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class Server:
    """A recording server: ``replies`` maps a path to a response factory; others echo JSON."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: dict[str, Callable[[], web.StreamResponse]] = field(default_factory=dict)
    hang_started: asyncio.Event = field(default_factory=asyncio.Event)
    hang_disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(
                request.method,
                request.path_qs.split("?", 1)[0],
                list(request.query.items()),
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
                peer[1] if peer else 0,
            )
        )
        if request.path == "/hang":
            self.hang_started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                self.hang_disconnected.set()
                raise
            return web.Response(status=500, text="hang outlived its test")
        reply = self.replies.get(request.path)
        if reply is not None:
            return reply()
        return web.json_response({"ok": True, "path": request.path})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A recording HTTP server on 127.0.0.1:0, stopped after the test."""
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    # handler_cancellation: a client disconnect cancels the handler, so tests can observe it.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.url = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def http_service(endpoint: str) -> Service:
    return Service(name="svc", type="http", endpoint=endpoint)


@pytest.fixture
async def transport(server: Server) -> AsyncIterator[HttpTransport]:
    """An HttpTransport on the recording server, closed after the test."""
    async with HttpTransport(http_service(server.url)) as t:
        yield t


async def call(t: HttpTransport, method: str, request: Any = None, **kw: Any) -> Any:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("metadata", ())
    return await t.call(method, request, **kw)


# --- requests: verbs, paths, query, body, headers -----------------------------------------------


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
async def test_query_verbs_encode_the_request_as_query_parameters(
    server: Server, transport: HttpTransport, verb: str
) -> None:
    """GET/DELETE send the object as query params: repeated lists, true/false, 2.0 as 2, JSON objects, nulls omitted."""
    request = {
        "s": "a b&c",
        "n": 2.0,
        "f": 2.5,
        "b": True,
        "l": [1, "x", False, None],
        "o": {"k": [1, 2.0]},
        "z": None,
    }
    await call(transport, f"{verb} /items", request)
    seen = server.seen[-1]
    assert (seen.method, seen.path, seen.body) == (verb, "/items", b"")
    assert seen.query == [
        ("s", "a b&c"),
        ("n", "2"),
        ("f", "2.5"),
        ("b", "true"),
        ("l", "1"),
        ("l", "x"),
        ("l", "false"),
        ("o", '{"k":[1,2]}'),
    ]
    assert "content-type" not in seen.headers


async def test_query_merges_with_a_query_already_in_the_path(
    server: Server, transport: HttpTransport
) -> None:
    """A query string written in the method path is kept and the request's parameters are added."""
    await call(transport, "GET /search?sort=asc", {"q": "x"})
    assert server.seen[-1].query == [("sort", "asc"), ("q", "x")]


async def test_query_verb_rejects_a_non_object_request_without_sending(
    server: Server, transport: HttpTransport
) -> None:
    """A list as a GET request is INVALID_ARGUMENT, permanent, and nothing reaches the server."""
    with pytest.raises(CallError) as info:
        await call(transport, "GET /items", [1, 2])
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.permanent
    assert server.seen == []


@pytest.mark.parametrize("verb", ["POST", "PUT", "PATCH"])
async def test_body_verbs_send_json(server: Server, transport: HttpTransport, verb: str) -> None:
    """Other verbs send the value as a JSON body with content-type application/json; 2.0 goes as 2."""
    await call(transport, f"{verb} /orders", {"n": 2.0, "nested": {"a": [1.0, 1.5]}, "s": "é"})
    seen = server.seen[-1]
    assert seen.method == verb
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"n": 2, "nested": {"a": [1, 1.5]}, "s": "é"}
    assert b'"n":2,' in seen.body


async def test_bare_path_means_post(server: Server, transport: HttpTransport) -> None:
    """A method that is only a path is a POST."""
    await call(transport, "/orders/7/mail", {"to": "x"})
    assert (server.seen[-1].method, server.seen[-1].path) == ("POST", "/orders/7/mail")


async def test_body_verb_with_no_request_sends_no_body(
    server: Server, transport: HttpTransport
) -> None:
    """A None request on a body verb sends an empty body, not a JSON null."""
    await call(transport, "POST /ping", None)
    seen = server.seen[-1]
    assert seen.body == b""
    assert seen.headers.get("content-length", "0") == "0"
    assert seen.headers.get("content-type") != "application/json"


async def test_unencodable_body_is_invalid_argument(
    server: Server, transport: HttpTransport
) -> None:
    """NaN has no JSON form: INVALID_ARGUMENT before anything is sent."""
    with pytest.raises(CallError) as info:
        await call(transport, "POST /x", {"v": float("nan")})
    assert info.value.code is Code.INVALID_ARGUMENT
    assert server.seen == []


async def test_metadata_becomes_lower_case_headers(
    server: Server, transport: HttpTransport
) -> None:
    """Metadata pairs are sent as headers with lower-case names; a given content-type is kept."""
    metadata = [
        ("X-Team", "shop"),
        ("authorization", "Bearer t0k"),
        ("content-type", "application/merge-patch+json"),
    ]
    await call(transport, "PATCH /o/1", {"a": 1}, metadata=metadata)
    headers = server.seen[-1].headers
    assert headers["x-team"] == "shop"
    assert headers["authorization"] == "Bearer t0k"
    assert headers["content-type"] == "application/merge-patch+json"


async def test_header_value_with_newline_is_rejected_without_naming_the_value(
    server: Server, transport: HttpTransport
) -> None:
    """A header value holding a newline is INVALID_ARGUMENT naming the header, never the value."""
    with pytest.raises(CallError) as info:
        await call(transport, "GET /x", metadata=[("x-token", "s3cret\r\nx-evil: 1")])
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "x-token" in info.value.message
    assert "s3cret" not in info.value.message
    assert server.seen == []


@pytest.mark.parametrize(
    ("base", "method", "expected"),
    [
        ("", "GET /orders/1", "/orders/1"),
        ("/", "GET /orders/1", "/orders/1"),
        ("/api/v1", "GET /orders/1", "/api/v1/orders/1"),
        ("/api/v1/", "GET /orders/1", "/api/v1/orders/1"),
        ("/api/v1/", "GET orders", "/api/v1/orders"),
        ("/api", "GET //evil.example/x", "/api/evil.example/x"),
        ("/api", "GET /", "/api/"),
    ],
)
async def test_paths_join_the_endpoint_base_path(
    server: Server, base: str, method: str, expected: str
) -> None:
    """The method path is appended to the endpoint's base path with exactly one slash; the host never changes."""
    async with HttpTransport(http_service(server.url + base)) as t:
        await call(t, method, {})
    assert server.seen[-1].path == expected


async def test_connections_are_pooled_and_cookies_not_kept(
    server: Server, transport: HttpTransport
) -> None:
    """Sequential calls reuse one connection, and a cookie set by one response is never sent back."""
    server.replies["/login"] = lambda: _cookie_response()
    await call(transport, "POST /login", {})
    await call(transport, "GET /after")
    first, second = server.seen
    assert first.client_port == second.client_port
    assert "cookie" not in second.headers


def _cookie_response() -> web.Response:
    response = web.json_response({})
    response.set_cookie("session", "abc")
    return response


# --- responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (lambda: web.json_response({"id": 7, "tags": ["a"]}), {"id": 7, "tags": ["a"]}),
        (lambda: web.Response(text="hello world"), "hello world"),
        (lambda: web.Response(text='{"a": 1}', content_type="text/plain"), {"a": 1}),
        (lambda: web.Response(text="{broken", content_type="application/json"), "{broken"),
        (lambda: web.Response(status=204), None),
        (lambda: web.Response(body=b"", status=200), None),
        (
            lambda: web.Response(
                body="é".encode("latin-1"), content_type="text/plain", charset="latin-1"
            ),
            "é",
        ),
    ],
    ids=["json", "text", "json-as-text", "bad-json", "no-content", "empty", "charset"],
)
async def test_response_bodies_decode(
    server: Server,
    transport: HttpTransport,
    reply: Callable[[], web.Response],
    expected: Any,
) -> None:
    """A JSON body (by type or parseable) is a value, an empty body None, any other body a string."""
    server.replies["/r"] = reply
    assert await call(transport, "GET /r") == expected


async def test_oversized_response_is_resource_exhausted(server: Server) -> None:
    """A body over max_response_bytes fails with RESOURCE_EXHAUSTED, never retried."""
    server.replies["/big"] = lambda: web.Response(text="x" * 5000)
    async with HttpTransport(http_service(server.url), max_response_bytes=1000) as t:
        with pytest.raises(CallError) as info:
            await call(t, "GET /big")
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    assert info.value.permanent


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, Code.INVALID_ARGUMENT),
        (401, Code.UNAUTHENTICATED),
        (403, Code.PERMISSION_DENIED),
        (404, Code.NOT_FOUND),
        (409, Code.ABORTED),
        (429, Code.RESOURCE_EXHAUSTED),
        (501, Code.UNIMPLEMENTED),
        (502, Code.UNAVAILABLE),
        (503, Code.UNAVAILABLE),
        (504, Code.DEADLINE_EXCEEDED),
        (405, Code.FAILED_PRECONDITION),
        (418, Code.FAILED_PRECONDITION),
        (422, Code.FAILED_PRECONDITION),
        (500, Code.INTERNAL),
        (507, Code.INTERNAL),
        (302, Code.FAILED_PRECONDITION),
    ],
)
async def test_status_maps_to_grpc_code(
    server: Server, transport: HttpTransport, status: int, code: Code
) -> None:
    """Each non-2xx status maps to its gRPC code; the message has the status and body, never headers."""

    def reply() -> web.Response:
        headers = {"x-secret": "hdr-s3cret", "location": "http://127.0.0.1:1/elsewhere"}
        return web.Response(status=status, text=f"reason-{status}", headers=headers)

    server.replies["/fail"] = reply
    with pytest.raises(CallError) as info:
        await call(transport, "POST /fail", {"a": 1})
    err = info.value
    assert err.code is code
    assert str(status) in err.message
    assert f"reason-{status}" in err.message
    assert "hdr-s3cret" not in err.message
    assert err.retry_after is None
    assert len(server.seen) == 1


async def test_error_body_excerpt_is_bounded(server: Server, transport: HttpTransport) -> None:
    """A huge error body appears only as a short excerpt in the message."""
    server.replies["/fail"] = lambda: web.Response(status=500, text="boom " * 5000)
    with pytest.raises(CallError) as info:
        await call(transport, "GET /fail")
    assert "boom" in info.value.message
    assert len(info.value.message) < 400


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds(server: Server, transport: HttpTransport, status: int) -> None:
    """Retry-After in seconds becomes retry_after."""
    server.replies["/busy"] = lambda: web.Response(status=status, headers={"Retry-After": "7"})
    with pytest.raises(CallError) as info:
        await call(transport, "GET /busy")
    assert info.value.retry_after == 7.0


async def test_retry_after_http_date(server: Server, transport: HttpTransport) -> None:
    """Retry-After as an HTTP date becomes the seconds until that date."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    server.replies["/busy"] = lambda: web.Response(status=503, headers={"Retry-After": when})
    with pytest.raises(CallError) as info:
        await call(transport, "GET /busy")
    assert info.value.retry_after is not None
    assert 60 < info.value.retry_after <= 121


async def test_timeout_is_deadline_exceeded_and_the_server_sees_the_abort(
    server: Server, transport: HttpTransport
) -> None:
    """A server slower than the timeout gives DEADLINE_EXCEEDED and the request is aborted."""
    with pytest.raises(CallError) as info:
        await call(transport, "GET /hang", timeout=0.3)
    assert info.value.code is Code.DEADLINE_EXCEEDED
    async with asyncio.timeout(5):
        await server.hang_disconnected.wait()


async def test_cancellation_aborts_the_request(server: Server, transport: HttpTransport) -> None:
    """Cancelling the awaiting task raises CancelledError and the server's handler sees the disconnect."""
    task = asyncio.create_task(call(transport, "POST /hang", {"a": 1}, timeout=None))
    async with asyncio.timeout(5):
        await server.hang_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await server.hang_disconnected.wait()
    # The transport stays usable after an aborted request.
    assert await call(transport, "GET /ok") == {"ok": True, "path": "/ok"}


async def test_connection_refused_is_unavailable() -> None:
    """Nothing listening on the port: UNAVAILABLE, retryable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with HttpTransport(http_service(f"http://127.0.0.1:{port}")) as t:
        with pytest.raises(CallError) as info:
            await call(t, "GET /x")
    assert info.value.code is Code.UNAVAILABLE
    assert not info.value.permanent


async def test_server_dropping_the_connection_is_unavailable() -> None:
    """A connection closed before any response is UNAVAILABLE, not a timeout."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    dropper = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = dropper.sockets[0].getsockname()[1]
    try:
        async with HttpTransport(http_service(f"http://127.0.0.1:{port}")) as t:
            with pytest.raises(CallError) as info:
                await call(t, "GET /x")
    finally:
        dropper.close()
        await dropper.wait_closed()
    assert info.value.code is Code.UNAVAILABLE


async def test_closed_transport_refuses_calls(server: Server) -> None:
    """After close() a call fails with UNAVAILABLE (permanent) and close() can be repeated."""
    t = HttpTransport(http_service(server.url))
    await call(t, "GET /x")
    await t.close()
    await t.close()
    with pytest.raises(CallError) as info:
        await call(t, "GET /x")
    assert info.value.code is Code.UNAVAILABLE
    assert info.value.permanent


def test_endpoint_must_be_an_http_url() -> None:
    """A non-HTTP endpoint is refused when the transport is built."""
    with pytest.raises(ValueError, match="http"):
        HttpTransport(http_service("inventory:50051"))
