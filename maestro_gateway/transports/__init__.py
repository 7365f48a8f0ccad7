"""Transports: how the engine reaches downstream services (gRPC and HTTP).

``Transport`` and ``TransportFactory`` are the seam the engine calls; ``Transports`` is the
factory. ``GrpcTransport`` and ``HttpTransport`` are imported on first access, so importing this
package (for the factory or the protocols) loads neither grpc nor httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from maestro_gateway.transports.base import (
    CallInfo,
    CallTrace,
    Metadata,
    Transport,
    TransportFactory,
)
from maestro_gateway.transports.factory import Transports, transport_key

if TYPE_CHECKING:
    from maestro_gateway.transports.grpc import GrpcTransport
    from maestro_gateway.transports.http import HttpTransport

__all__ = [
    "CallInfo",
    "CallTrace",
    "GrpcTransport",
    "HttpTransport",
    "Metadata",
    "Transport",
    "TransportFactory",
    "Transports",
    "transport_key",
]

_LAZY = {
    "GrpcTransport": "maestro_gateway.transports.grpc",
    "HttpTransport": "maestro_gateway.transports.http",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
