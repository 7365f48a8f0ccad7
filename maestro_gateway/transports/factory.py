"""The transport factory: one shared transport per distinct downstream.

Two workflows (or two service names) pointing at the same endpoint with the same connection
options share one transport, hence one gRPC channel pool or one HTTP connection pool. Options
that change the connection itself (TLS, pool size, where descriptors come from) give separate
transports, and so does the gRPC protocol (a transport chooses it once). Per-call options
(timeouts, retries, metadata, the breaker policy) are not part of the key: they travel with
each call.

Transport modules are imported on first use, so code that never calls a service (``maestro
validate``) loads neither grpc nor httpx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import DescriptorSource, Service, TLSConfig
from maestro_gateway.transports.base import Transport

if TYPE_CHECKING:
    from types import TracebackType

TransportKey = tuple[str, str, TLSConfig | None, int, DescriptorSource, str, int]
"""What makes two service definitions share a transport: (type, endpoint, tls, pool, descriptors,
protocol, max_response_bytes)."""

Constructor = Callable[[Service], Transport]
"""Builds the transport of a service definition."""


def transport_key(service: Service) -> TransportKey:
    """Return the sharing key of ``service``."""
    return (
        service.type,
        service.endpoint,
        service.tls,
        service.pool,
        service.descriptors,
        service.protocol,
        service.max_response_bytes,
    )


def _grpc_transport(service: Service) -> Transport:
    from maestro_gateway.transports.grpc import GrpcTransport

    return GrpcTransport(service)


def _http_transport(service: Service) -> Transport:
    from maestro_gateway.transports.http import HttpTransport

    return HttpTransport(service)


class Transports:
    """Builds and caches transports; implements ``TransportFactory``.

    Use as an async context manager, or call ``close()`` when done: it closes every transport
    made, after which ``transport_for`` refuses with UNAVAILABLE.

    Args:
        grpc: builds gRPC transports (default: ``GrpcTransport``).
        http: builds HTTP transports (default: ``HttpTransport``).
    """

    def __init__(self, *, grpc: Constructor | None = None, http: Constructor | None = None) -> None:
        self._constructors: dict[str, Constructor] = {
            "grpc": grpc or _grpc_transport,
            "http": http or _http_transport,
        }
        self._transports: dict[TransportKey, Transport] = {}
        self._closed = False

    def transport_for(self, service: Service) -> Transport:
        """Return the shared transport for ``service``, building it on first use.

        Raises:
            CallError: UNAVAILABLE (permanent) once the factory is closed.
            ValueError: the service type is unknown or its endpoint unusable.
        """
        key = transport_key(service)
        transport = self._transports.get(key)
        if transport is None:
            if self._closed:
                raise CallError(
                    Code.UNAVAILABLE, "transports are closed (shutting down)", permanent=True
                )
            constructor = self._constructors.get(service.type)
            if constructor is None:
                raise ValueError(f"unknown service type {service.type!r}")
            transport = self._transports[key] = constructor(service)
        return transport

    def __len__(self) -> int:
        return len(self._transports)

    async def close(self) -> None:
        """Close every transport made (all of them, even when one fails); idempotent.

        Raises:
            ExceptionGroup: one or more transports failed to close.
        """
        self._closed = True
        transports = list(self._transports.values())
        self._transports.clear()
        errors: list[Exception] = []
        for transport in transports:
            try:
                await transport.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise ExceptionGroup("closing transports", errors)

    async def __aenter__(self) -> Transports:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
