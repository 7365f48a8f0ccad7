"""Calls to plain HTTP/JSON services (DESIGN §3).

``method`` is the rendered ``"VERB /path"`` (a bare ``/path`` means POST), joined to the
service's endpoint. GET, HEAD and DELETE send the request object as query parameters; every
other verb sends it as a JSON body. A response body that parses as JSON becomes the output, an
empty body ``None``, any other body a string. Non-2xx statuses and transport failures become a
``CallError`` with the gRPC code of the table in DESIGN §3; ``Retry-After`` (seconds or an HTTP
date) becomes ``retry_after``.

The httpx API is kept, but requests run on ``httpx_aiohttp.AiohttpTransport``: httpx's default
transport spends several milliseconds of CPU per request under concurrency on a small machine
(``bench/http_transport.py`` measures both).

Decisions beyond the table: ``None`` members of a query object are omitted (list items too); a
``None`` request to a body verb sends no body; redirects are not followed (a 3xx is
FAILED_PRECONDITION: the endpoint is misconfigured); responses set no cookies for later calls;
proxy settings from the environment are ignored; bodies larger than ``max_response_bytes`` fail
with RESOURCE_EXHAUSTED and are never retried.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.expr import to_text
from maestro_gateway.model.types import Service, TLSConfig
from maestro_gateway.transports.base import CallInfo, Metadata

USER_AGENT = "maestro-gateway"
QUERY_VERBS = frozenset({"GET", "HEAD", "DELETE"})
EXCERPT_CHARS = 200
"""At most this many characters of an error response's body appear in the error message."""

_STATUS_CODES: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    429: Code.RESOURCE_EXHAUSTED,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}
_VERB = re.compile(r"[A-Z]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_HEADER_VALUE = re.compile(r"[\r\n\x00]")
_MAX_EXACT_INT = 2**63
_URL_CACHE_SIZE = 512


def status_code(status: int) -> Code:
    """Return the gRPC code of a non-2xx HTTP status (DESIGN §3).

    Statuses the table does not name map by class: other 4xx (and 3xx, since redirects are not
    followed) to FAILED_PRECONDITION, other 5xx to INTERNAL, anything else to UNKNOWN.
    """
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    if 300 <= status < 500:
        return Code.FAILED_PRECONDITION
    if 500 <= status < 600:
        return Code.INTERNAL
    return Code.UNKNOWN


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the delay in seconds a ``Retry-After`` header asks for, or None if it is invalid.

    Args:
        value: the header value: delta-seconds (``120``) or an HTTP date.
        now: the current Unix time (defaults to ``time.time()``), for dates.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _plain(value: Any) -> Any:
    """Integral floats become ints (input numbers arrive as doubles: 2.0 means 2), recursively."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _MAX_EXACT_INT:
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def query_params(request: Any) -> list[tuple[str, str | int | float | bool | None]]:
    """Encode a request object as query parameters, in order.

    Lists repeat the parameter; ``None`` values are omitted; other values render as text
    (``true``, ``2``, nested objects as JSON).

    Raises:
        CallError: INVALID_ARGUMENT when the request is neither an object nor ``None``.
    """
    if request is None:
        return []
    if not isinstance(request, Mapping):
        raise CallError(
            Code.INVALID_ARGUMENT,
            f"query parameters need an object, got {type(request).__name__}",
            permanent=True,
        )
    params: list[tuple[str, str | int | float | bool | None]] = []
    try:
        for key, value in request.items():
            items = value if isinstance(value, list | tuple) else (value,)
            params.extend((str(key), to_text(_plain(item))) for item in items if item is not None)
    except (TypeError, ValueError) as exc:
        raise CallError(
            Code.INVALID_ARGUMENT, f"cannot encode query: {exc}", permanent=True
        ) from exc
    return params


def json_body(request: Any) -> bytes | None:
    """Encode a request value as a JSON body (``None``: no body).

    Raises:
        CallError: INVALID_ARGUMENT when the value has no JSON form (NaN, bytes, ...).
    """
    if request is None:
        return None
    try:
        return _dumps(request).encode()
    except (TypeError, ValueError) as exc:
        raise CallError(
            Code.INVALID_ARGUMENT, f"cannot encode body as JSON: {exc}", permanent=True
        ) from exc


def decode_body(response: httpx.Response, body: bytes) -> Any:
    """Return the output of a 2xx response: parsed JSON, ``None`` when empty, else the text."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return _text(response, body)


def _text(response: httpx.Response, body: bytes) -> str:
    # The declared charset, else UTF-8; undecodable bytes become U+FFFD rather than failing.
    return body.decode(response.encoding or "utf-8", errors="replace")


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "…"


def _ssl_context(tls: TLSConfig | None) -> ssl.SSLContext | bool:
    if tls is None or (tls.ca is None and tls.cert is None):
        return True
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that never stores cookies.

    Executions share the client, so a cookie set in answer to one must never reach another
    (skipping the cookie jar also saves about a tenth of the CPU of a request).
    """

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("this client keeps no cookies")


class HttpTransport:
    """Calls ``"VERB /path"`` methods of one HTTP service over one pooled client.

    The client is created on the first call and closed by ``close()``. Cancelling the awaiting
    task aborts the request (the connection is dropped, so the server sees the disconnect).

    Args:
        service: the service definition; ``endpoint`` is the base URL (it may carry a base path),
            ``tls`` optionally sets a CA, a client certificate and an SNI name for HTTPS.
        max_connections: the connection pool's bound.
        max_response_bytes: larger response bodies fail with RESOURCE_EXHAUSTED (default: the
            service's ``max_response_bytes``).
    """

    def __init__(
        self,
        service: Service,
        *,
        max_connections: int = 100,
        max_response_bytes: int | None = None,
    ) -> None:
        self.service = service
        url = httpx.URL(service.endpoint)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"HTTP endpoint must be an http(s):// URL, got {service.endpoint!r}")
        self._base = str(url.copy_with(query=None, fragment=None)).rstrip("/")
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes or service.max_response_bytes
        self._extensions: dict[str, Any] = {}
        if service.tls is not None and service.tls.server_name:
            self._extensions["sni_hostname"] = service.tls.server_name
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._urls: dict[str, httpx.URL] = {}

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the Transport protocol passes the deadline
        metadata: Metadata,
        info: CallInfo | None = None,
    ) -> Any:
        """Send one request and return the decoded response (see the module docstring).

        ``info`` is not sent: HTTP services get nothing the workflow did not ask for.

        Raises:
            CallError: the request could not be built, sent or answered with a 2xx status.
        """
        verb, path = _split_method(method)
        url = self._url(path)
        trace = info.trace if info is not None else None
        if trace is not None:
            # A query string (or credentials in the endpoint) may carry secrets: never in a span.
            trace.http_request(str(url.copy_with(query=None, fragment=None, userinfo=b"")))
        headers = _headers(metadata)
        params: httpx.QueryParams | None = None
        content: bytes | None = None
        if verb in QUERY_VERBS:
            pairs = query_params(request)
            if pairs:
                # httpx replaces a URL's query with ``params``: merge with one written in the path.
                params = url.params.merge(pairs) if url.query else httpx.QueryParams(pairs)
        else:
            content = json_body(request)
            if content is not None and not any(k == "content-type" for k, _ in headers):
                headers.append(("content-type", "application/json"))
        client = self._get_client()
        where = (
            f"{verb} {path.split('?', 1)[0]}"  # a query string may carry secrets: not in messages
        )
        try:
            async with asyncio.timeout(timeout):
                outgoing = client.build_request(
                    verb,
                    url,
                    params=params,
                    content=content,
                    headers=headers,
                    extensions=self._extensions,
                )
                response = await client.send(outgoing, stream=True)
                try:
                    body = await self._read(response, where)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            within = "" if timeout is None else f" within {timeout:g}s"
            raise CallError(Code.DEADLINE_EXCEEDED, f"{where}: no response{within}") from exc
        except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
            raise _transport_error(where, exc, self.service.name) from exc
        if trace is not None:
            trace.http_status(response.status_code)
        if 200 <= response.status_code < 300:
            return decode_body(response, body)
        raise _status_error(where, response, body)

    async def close(self) -> None:
        """Close the pooled client; later calls fail with UNAVAILABLE."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> HttpTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            # Joined by text so a rendered path can never change the host: "//evil" stays a path.
            try:
                url = httpx.URL(self._base + "/" + path.lstrip("/"))
            except httpx.InvalidURL as exc:
                raise CallError(
                    # The query string may carry secrets: quote only the path part.
                    Code.INVALID_ARGUMENT,
                    f"invalid HTTP path {path.split('?', 1)[0]!r}: {exc}",
                    permanent=True,
                ) from exc
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[path] = url
        return url

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            if self._closed:
                raise CallError(
                    Code.UNAVAILABLE,
                    f"HTTP transport for {self.service.endpoint} is closed",
                    permanent=True,
                )
            self._client = _CookielessClient(
                # The session builds its own TLS context: verify=False only stops the adapter
                # from building a default one (~18 ms, blocking the loop) that it would not use.
                transport=AiohttpTransport(client=self._new_session, verify=False),
                timeout=httpx.Timeout(None),
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": USER_AGENT},
            )
        return self._client

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, ssl=_ssl_context(self.service.tls)
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def _read(self, response: httpx.Response, where: str) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_response_bytes:
            raise self._too_large(where)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_response_bytes:
                raise self._too_large(where)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, where: str) -> CallError:
        return CallError(
            Code.RESOURCE_EXHAUSTED,
            f"{where}: response body larger than {self._max_response_bytes} bytes "
            f"(max_response_bytes of service '{self.service.name}')",
            permanent=True,
        )


def _split_method(method: str) -> tuple[str, str]:
    parts = method.strip().split(None, 1)
    if len(parts) == 1 and parts[0].startswith("/"):
        return "POST", parts[0]
    if len(parts) == 2 and _VERB.fullmatch(parts[0].upper()):
        return parts[0].upper(), parts[1].strip()
    raise CallError(
        Code.INVALID_ARGUMENT,
        f"HTTP method must be 'VERB /path' or '/path', got {method!r}",
        permanent=True,
    )


def _headers(metadata: Metadata) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for key, value in metadata:
        name = key.strip().lower()
        if (
            not _HEADER_NAME.fullmatch(name)
            or not value.isascii()
            or _BAD_HEADER_VALUE.search(value)
        ):
            # The value may be a secret: name the header only.
            raise CallError(
                Code.INVALID_ARGUMENT, f"header {name!r} is not a valid HTTP header", permanent=True
            )
        headers.append((name, value))
    return headers


def _status_error(where: str, response: httpx.Response, body: bytes) -> CallError:
    status = response.status_code
    message = f"{where}: HTTP {status} {response.reason_phrase}".rstrip()
    if body:
        message += f": {_excerpt(_text(response, body))}"
    return CallError(
        status_code(status),
        message,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _transport_error(where: str, exc: BaseException, service: str) -> CallError:
    """Map a failure to get a response at all; the aiohttp cause decides when there is one."""
    # httpx_aiohttp reports every aiohttp connection error as a ConnectTimeout: look underneath.
    cause: BaseException | None = exc
    for _ in range(4):
        if cause is None:
            break
        if isinstance(cause, TimeoutError | aiohttp.ServerTimeoutError):
            return CallError(Code.DEADLINE_EXCEEDED, f"{where}: timed out ({cause})")
        if isinstance(cause, aiohttp.ClientConnectionError | ConnectionError):
            return CallError(
                Code.UNAVAILABLE, f"{where}: connection to service '{service}' failed ({cause})"
            )
        if isinstance(
            cause, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | httpx.UnsupportedProtocol
        ):
            return CallError(
                Code.FAILED_PRECONDITION, f"{where}: bad URL ({cause})", permanent=True
            )
        cause = cause.__cause__
    if isinstance(exc, httpx.TimeoutException):
        return CallError(Code.DEADLINE_EXCEEDED, f"{where}: timed out ({exc})")
    return CallError(Code.UNAVAILABLE, f"{where}: {type(exc).__name__}: {exc}")
