"""Translation of grpcio errors and metadata into maestro-gateway's terms, in one place."""

from __future__ import annotations

import re
from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError

_KEY = re.compile(r"^[0-9a-z_.\-]+$")


def retry_after(err: grpc.aio.AioRpcError) -> float | None:
    """Return the delay of a ``google.rpc.RetryInfo`` detail of the error, if it has one."""
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        # The rich status disagrees with the call status: it cannot be trusted.
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay
            return max(0.0, float(delay.seconds) + float(delay.nanos) / 1e9)
    return None


def call_error(err: grpc.RpcError, *, what: str = "") -> CallError:
    """Map a grpcio error to ``CallError`` with the same code and the server's message.

    Args:
        err: the error raised by a call.
        what: names the method, prefixed to errors that carry no message of their own.
    """
    if isinstance(err, grpc.aio.AioRpcError):
        code = Code(err.code().value[0])
        details = err.details() or ""
        return CallError(
            code,
            details or f"{what + ' ' if what else ''}failed with {code.name}",
            retry_after=retry_after(err),
        )
    return CallError(Code.UNKNOWN, f"{what + ': ' if what else ''}{err}")


def outgoing_metadata(
    metadata: Sequence[tuple[str, str]],
) -> tuple[tuple[str, str | bytes], ...]:
    """Validate and normalise request metadata before anything is sent.

    Keys are lower-cased (HTTP and gRPC header names are case-insensitive); values of ``-bin``
    keys are sent as UTF-8 bytes unless already bytes.

    Raises:
        CallError: INVALID_ARGUMENT (permanent) naming the bad key; values are never echoed,
            they may be secrets.
    """
    out: list[tuple[str, str | bytes]] = []
    for raw_key, value in metadata:
        key = raw_key.strip().lower()
        if not _KEY.match(key) or key.startswith("grpc-"):
            raise CallError(
                Code.INVALID_ARGUMENT,
                f"invalid metadata key {raw_key!r}: use lower-case letters, digits, '-', '_', "
                "'.' (not reserved grpc- keys)",
                permanent=True,
            )
        if key.endswith("-bin"):
            out.append((key, value if isinstance(value, bytes) else str(value).encode()))
            continue
        text = value if isinstance(value, str) else str(value)
        if not text.isascii() or not text.isprintable():
            raise CallError(
                Code.INVALID_ARGUMENT,
                f"invalid value for metadata key {key!r}: only printable ASCII is allowed "
                "(use a -bin key for binary values)",
                permanent=True,
            )
        out.append((key, text))
    return tuple(out)
