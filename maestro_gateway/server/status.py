"""RPC errors with rich details: every error the gateway returns carries a google.rpc.ErrorInfo.

``domain`` is always ``maestro.v1``. For a failed execution ``reason`` is the failure's code name
(``DEADLINE_EXCEEDED``) and ``metadata`` holds ``execution_id``, ``workflow``, ``step_id`` and
``status``; errors raised before an execution exists use the stable reasons below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from maestro_gateway.codes import Code
from maestro_gateway.engine.events import ExecutionResult

DOMAIN = "maestro.v1"

REASON_NOT_FOUND = "WORKFLOW_NOT_FOUND"
REASON_INVALID_INPUT = "INVALID_INPUT"
REASON_OVERLOADED = "TOO_MANY_EXECUTIONS"
REASON_SHUTTING_DOWN = "SHUTTING_DOWN"
REASON_INTERNAL = "INTERNAL"
REASON_INVALID_REQUEST = "INVALID_REQUEST"
REASON_ALREADY_EXISTS = "EXECUTION_ALREADY_EXISTS"
REASON_EXECUTION_NOT_FOUND = "EXECUTION_NOT_FOUND"
REASON_SIGNAL_NOT_FOUND = "SIGNAL_NOT_FOUND"
REASON_FINISHED = "EXECUTION_FINISHED"
REASON_NOT_RUNNING_HERE = "EXECUTION_NOT_RUNNING_HERE"
REASON_JOURNAL_UNAVAILABLE = "JOURNAL_UNAVAILABLE"
REASON_HANDED_OVER = "EXECUTION_CONTINUES"


def rich_status(
    code: Code, message: str, reason: str, metadata: Mapping[str, str] | None = None
) -> grpc.Status:
    """Return a ``grpc.Status`` carrying ``code``, ``message`` and one ErrorInfo detail."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=dict(metadata or {}))
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(
        status_pb2.Status(code=int(code), message=message, details=[detail])
    )


def result_status(result: ExecutionResult) -> grpc.Status:
    """Return the RPC status that ends a call whose execution did not succeed."""
    error = result.error
    code = error.code if error is not None else Code.UNKNOWN
    if code == Code.OK:  # a failed execution never ends an RPC with OK
        code = Code.UNKNOWN
    message = error.message if error is not None else f"execution {result.status.value}"
    return rich_status(
        code,
        message,
        code.name,
        {
            "execution_id": result.execution_id,
            "workflow": result.workflow,
            "step_id": error.step_id if error is not None else "",
            "status": result.status.value,
        },
    )


async def abort(context: grpc.aio.ServicerContext, status: grpc.Status) -> NoReturn:
    """End the RPC handled in ``context`` with ``status`` (raises, as ``context.abort`` does)."""
    await context.abort_with_status(status)
    raise AssertionError("abort_with_status returned")  # pragma: no cover
