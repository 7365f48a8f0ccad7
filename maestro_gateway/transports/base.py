"""The one seam between the engine and the wire.

A transport calls one method of one downstream service with a plain request value (dicts, lists,
str, int, float, bool, None) and returns a plain response value, or raises ``CallError`` carrying
a gRPC code. Foreign exceptions (grpc, httpx, aiohttp) never cross this boundary. The engine
also says which execution and step a call belongs to (``CallInfo``), for the protocols that carry
it (Maestro.go's envelope); every other transport ignores it. When tracing is on, ``CallInfo``
also carries the attempt's span (``CallTrace``), for the transport to add what only it knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from maestro_gateway.model.types import Service

Metadata = Sequence[tuple[str, str]]
"""Request metadata/headers as (lower-case key, value) pairs, in order."""


class CallTrace(Protocol):
    """The span of one attempt, as a transport sees it: what it may add (DESIGN §14)."""

    def grpc_method(self, service: str, method: str) -> None:
        """The gRPC method called (``rpc.service``, ``rpc.method``), once resolved."""
        ...

    def http_request(self, url: str) -> None:
        """The URL of the HTTP request, without its query string (``url.full``)."""
        ...

    def http_status(self, status: int) -> None:
        """The HTTP status of the response (``http.response.status_code``)."""
        ...


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a call belongs to, as the engine knows it.

    Attributes:
        execution_id: the execution's id.
        step_id: the step called, or the step being undone for a compensation.
        compensation: true when the call undoes ``step_id``.
        trace: the attempt's span when tracing is on, else None.
    """

    execution_id: str
    step_id: str
    compensation: bool = False
    trace: CallTrace | None = None


class Transport(Protocol):
    """Calls methods of one downstream service. One instance is shared by every execution."""

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - a deadline handed to grpc/httpx, not a wait
        metadata: Metadata,
        info: CallInfo | None = None,
    ) -> Any:
        """Call ``method`` and return the response as a plain value.

        Args:
            method: for gRPC the method as written (``Name``, ``pkg.Svc/Method``,
                ``pkg.Svc.Method``); for HTTP the rendered ``VERB /path`` (or ``/path``: POST).
            request: the request value; a list for client-streaming methods.
            timeout: the attempt's deadline in seconds (None: unbounded by this call).
            metadata: gRPC metadata or HTTP headers to send.
            info: the execution and step the call belongs to (None outside an execution).

        Returns:
            The response as a plain value (a list of messages for server-streaming methods).

        Raises:
            CallError: the call failed; ``code`` says how, ``retry_after`` carries the service's
                requested delay (RetryInfo, Retry-After) when it gave one.
        """
        ...

    async def close(self) -> None:
        """Release channels and connections."""
        ...


class TransportFactory(Protocol):
    """Builds (and caches) the transport of a service definition."""

    def transport_for(self, service: Service) -> Transport:
        """Return the shared transport for ``service`` (same endpoint and options, same object)."""
        ...

    async def close(self) -> None:
        """Close every transport made."""
        ...
