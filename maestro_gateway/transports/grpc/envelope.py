"""Maestro.go's envelope: every method of a service through ``maestro.v1.MaestroService``.

A service written for Maestro.go offers one ``Execute`` (and one ``Compensate``) and dispatches
on ``ServiceRequest.method`` (DESIGN §9). The messages are our copy of Maestro.go's, with its
field numbers (``proto/maestro/v1/maestro_go.proto``), so they are encoded with the gateway's
compiled classes whether or not the service describes them over reflection; when it does, its
description is checked against ours first (``envelope_problem``).

* Request: ``method`` the step's method as written, ``payload`` the rendered input packed as a
  ``google.protobuf.Struct``, ``headers`` the call's metadata, ``correlation_id``
  ``<execution_id>:<step_id>``, ``workflow_id`` the execution id, ``step_id`` the step (the step
  being undone, for a compensation). The same three ids also travel as the metadata keys
  ``workflow-id``, ``correlation-id`` and ``step-id``.
* Response: ``success: false`` is FAILED_PRECONDITION with the response's ``error`` as message,
  permanent (and not an infrastructure failure, so no breaker counts it). ``data`` becomes the
  output: nothing is ``None``; a ``Struct`` (or ``Value``, ``ListValue``) is its JSON value, with
  whole numbers as integers as a JSON body would give them; another message type the gateway
  knows (the well-known types, and every type in the service's own descriptors) is converted as
  a gRPC response is; any other type is ``{"@type": <type URL>, "value": <base64 of the
  bytes>}``. Its ``metadata`` is not used.
* Detection (``answers_envelope``): a service that serves no reflection is asked, once, whether
  it answers ``Execute`` by sending bytes that no protobuf parser accepts. Standard gRPC servers
  (grpc-go, grpc-java, grpc-js, grpcio) reject them before any handler runs, with INTERNAL (or
  INVALID_ARGUMENT) when the method exists and UNIMPLEMENTED when it does not: the probe never
  runs business code.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

# The well-known types, imported so that the default pool can decode them in ``data``.
from google.protobuf import (  # noqa: F401
    any_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from maestro.v1 import maestro_go_pb2

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.expr.values import plain
from maestro_gateway.transports.base import CallInfo
from maestro_gateway.transports.grpc.values import message_converter

ENVELOPE_SERVICE: str = maestro_go_pb2.DESCRIPTOR.services_by_name["MaestroService"].full_name
EXECUTE_PATH = f"/{ENVELOPE_SERVICE}/Execute"
COMPENSATE_PATH = f"/{ENVELOPE_SERVICE}/Compensate"
ENVELOPE_KEYS = ("workflow-id", "step-id", "correlation-id")
"""Metadata keys the envelope sends with every call (the values of the request's own fields)."""

ServiceRequest = maestro_go_pb2.ServiceRequest
ServiceResponse = maestro_go_pb2.ServiceResponse

_UNPARSABLE = b"\x0a\xff"
"""Field 1 (length-delimited) with a truncated length: a parse error for any message type."""

_WELL_KNOWN = "google.protobuf."


def _to_struct_value(value: Any, path: str) -> Any:
    value = plain(value)
    if isinstance(value, dict):
        return {
            str(k): _to_struct_value(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_to_struct_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CallError(
        Code.INVALID_ARGUMENT,
        f"cannot send a {type(value).__name__} at {path or 'the input'} in a google.protobuf.Struct",
        permanent=True,
    )


def build_request(
    method: str,
    value: Any,
    metadata: Sequence[tuple[str, str | bytes]],
    info: CallInfo | None,
) -> tuple[maestro_go_pb2.ServiceRequest, tuple[tuple[str, str | bytes], ...]]:
    """Build the envelope request of one call and the metadata to send with it.

    Args:
        method: the step's (or compensation's) method as written.
        value: the rendered input: an object, or None for an empty one.
        metadata: the call's validated metadata (see ``outgoing_metadata``).
        info: the execution and step the call belongs to; None leaves the ids empty.

    Raises:
        CallError: INVALID_ARGUMENT (permanent) when the input is not an object.
    """
    if value is not None and not isinstance(value, dict):
        raise CallError(
            Code.INVALID_ARGUMENT,
            f"the input of '{method}' must be an object: the envelope sends it as a "
            f"google.protobuf.Struct, got {type(value).__name__}",
            permanent=True,
        )
    payload = struct_pb2.Struct()
    if value:
        payload.update(_to_struct_value(value, ""))
    headers: dict[str, str] = {}
    for key, item in metadata:
        if isinstance(item, bytes) or key in ENVELOPE_KEYS:
            continue
        headers[key] = f"{headers[key]}, {item}" if key in headers else item
    request = ServiceRequest(method=method, headers=headers)
    request.payload.Pack(payload)
    sent = [(k, v) for k, v in metadata if k not in ENVELOPE_KEYS]
    if info is not None:
        request.workflow_id = info.execution_id
        request.step_id = info.step_id
        request.correlation_id = f"{info.execution_id}:{info.step_id}"
        sent += [
            ("workflow-id", request.workflow_id),
            ("step-id", request.step_id),
            ("correlation-id", request.correlation_id),
        ]
    return request, tuple(sent)


def _find_type(name: str, pool: descriptor_pool.DescriptorPool | None) -> Descriptor | None:
    pools = [descriptor_pool.Default()] if name.startswith(_WELL_KNOWN) else []
    if pool is not None:
        pools.append(pool)
    for candidate in pools:
        try:
            found: Descriptor = candidate.FindMessageTypeByName(name)
        except KeyError:
            continue
        return found
    return None


def unpack_data(data: any_pb2.Any, pool: descriptor_pool.DescriptorPool | None) -> Any:
    """The plain value of a response's ``data`` (see the module docstring).

    Args:
        data: the ``Any`` the service answered.
        pool: the service's own descriptors, when it has any.

    Raises:
        CallError: INTERNAL when the bytes do not decode as the type they claim.
    """
    if not data.type_url:
        return None
    name = data.type_url.rpartition("/")[2]
    descriptor = _find_type(name, pool)
    if descriptor is None:
        return {"@type": data.type_url, "value": base64.b64encode(data.value).decode("ascii")}
    message = message_factory.GetMessageClass(descriptor)()
    try:
        message.ParseFromString(data.value)
    except DecodeError as exc:
        raise CallError(Code.INTERNAL, f"the response data is not a valid {name}: {exc}") from exc
    value = message_converter(descriptor)(message)
    return _whole_numbers(value) if descriptor.full_name in _JSON_TYPES else value


_JSON_TYPES = frozenset(f"google.protobuf.{n}" for n in ("Struct", "Value", "ListValue"))
_EXACT = 2**53


def _whole_numbers(value: Any) -> Any:
    """JSON values with whole numbers as ints (a Struct holds every number as a double)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_EXACT <= value <= _EXACT else value
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def read_response(response: maestro_go_pb2.ServiceResponse, method: str, pool: Any) -> Any:
    """The output of an envelope call, or the failure a ``success: false`` stands for.

    Raises:
        CallError: FAILED_PRECONDITION (permanent) when ``success`` is false.
    """
    if not response.success:
        raise CallError(
            Code.FAILED_PRECONDITION,
            response.error or f"'{method}' answered success: false without an error message",
            permanent=True,
        )
    return unpack_data(response.data, pool) if response.HasField("data") else None


def _shape(message: Descriptor) -> Mapping[int, tuple[int, str, bool]]:
    out: dict[int, tuple[int, str, bool]] = {}
    for f in message.fields:
        sub = f.message_type
        kind = ""
        if sub is not None:
            kind = "map" if sub.GetOptions().map_entry else sub.full_name
        out[f.number] = (f.type, kind, bool(f.is_repeated))
    return out


def envelope_problem(service: ServiceDescriptor) -> str | None:
    """What makes a service's own ``maestro.v1.MaestroService`` differ from Maestro.go's, if anything.

    Only what changes the bytes on the wire counts: the RPCs' names and streaming, and the
    number, type and cardinality of each field the gateway reads or writes.
    """
    for rpc in ("Execute", "Compensate"):
        method = service.methods_by_name.get(rpc)
        if method is None:
            if rpc == "Execute":
                return f"{ENVELOPE_SERVICE} has no Execute method"
            continue
        if method.client_streaming or method.server_streaming:
            return f"{ENVELOPE_SERVICE}/{rpc} is streaming; Maestro.go's is unary"
        for theirs, ours in (
            (method.input_type, ServiceRequest.DESCRIPTOR),
            (method.output_type, ServiceResponse.DESCRIPTOR),
        ):
            shape = _shape(theirs)
            for number, expected in _shape(ours).items():
                found = shape.get(number)
                if found is not None and found != expected:
                    field = ours.fields_by_number[number]
                    return (
                        f"{ENVELOPE_SERVICE}/{rpc}: field {number} of {theirs.full_name} is not "
                        f"Maestro.go's {_describe(field)}"
                    )
    return None


def _describe(field: FieldDescriptor) -> str:
    sub = field.message_type
    kind = sub.full_name if sub is not None else field.name
    return f"'{field.name}' ({kind})"


async def answers_envelope(
    channel: grpc.aio.Channel,
    *,
    timeout: float | None,  # noqa: ASYNC109 - a deadline handed to grpc
    metadata: Sequence[tuple[str, str | bytes]],
) -> bool:
    """Whether the server behind ``channel`` serves ``maestro.v1.MaestroService/Execute``.

    Raises:
        CallError: UNAVAILABLE when the server could not be reached.
    """
    multi = channel.unary_unary(EXECUTE_PATH)
    try:
        await multi(_UNPARSABLE, timeout=timeout, metadata=tuple(metadata) or None)
    except grpc.aio.AioRpcError as err:
        code = err.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return False
        if code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        ):
            raise CallError(
                Code.UNAVAILABLE,
                f"cannot ask whether the service answers {ENVELOPE_SERVICE}/Execute: "
                f"{err.details() or code.name}",
            ) from err
    return True
