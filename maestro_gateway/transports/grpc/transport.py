"""``GrpcTransport``: calls any method of one gRPC service, discovered at run time.

A service's own methods are called directly; a service written for Maestro.go is called
through its envelope (``envelope``), as decided once when its descriptors load (``protocol``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service
from maestro_gateway.transports.base import CallInfo, Metadata, Transport
from maestro_gateway.transports.grpc import envelope
from maestro_gateway.transports.grpc.channels import ChannelPool
from maestro_gateway.transports.grpc.descriptors import Descriptors
from maestro_gateway.transports.grpc.protocol import Schema, load_schema, route
from maestro_gateway.transports.grpc.status import call_error, outgoing_metadata
from maestro_gateway.transports.grpc.values import build_request, message_converter

Kind = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]

RESOLVE_TIMEOUT = 10.0
"""Default bound of one descriptor resolution (a reflection exchange or a protoc run)."""


@dataclass(slots=True)
class _Method:
    """A resolved method with everything a call needs, built once."""

    path: str
    kind: Kind
    request_class: type[Message]
    response_class: type[Message]
    to_plain: Callable[[Any], Any]
    callables: dict[int, Any] = field(default_factory=dict)


def _envelope_method(path: str) -> _Method:
    return _Method(
        path=path,
        kind="unary_unary",
        request_class=envelope.ServiceRequest,
        response_class=envelope.ServiceResponse,
        to_plain=lambda message: message,
    )


_ENVELOPE = "envelope"
"""The route of a method called through Maestro.go's envelope."""


def _kind(method: MethodDescriptor) -> Kind:
    client = "stream" if method.client_streaming else "unary"
    server = "stream" if method.server_streaming else "unary"
    kind: Kind = f"{client}_{server}"  # type: ignore[assignment]
    return kind


class GrpcTransport:
    """Calls methods of one gRPC service, resolving them through its descriptor source.

    Descriptors are loaded once, on first need, and the service's protocol is chosen then
    (``protocol.load_schema``); concurrent first calls share one load, and a failed load is
    retried by the next call. Methods are resolved once per method string.

    Args:
        service: the service definition (endpoint, pool size, TLS, descriptor source, protocol).
        resolve_timeout: bound of one descriptor load, in seconds.
    """

    def __init__(self, service: Service, *, resolve_timeout: float = RESOLVE_TIMEOUT) -> None:
        self.service = service
        self._pool = ChannelPool(
            service.endpoint, service.pool, service.tls, service.max_response_bytes
        )
        self._resolve_timeout = resolve_timeout
        self._schema: Schema | None = None
        self._loading: asyncio.Task[Schema] | None = None
        self._methods: dict[str, _Method | str] = {}
        self._execute = _envelope_method(envelope.EXECUTE_PATH)
        self._compensate = _envelope_method(envelope.COMPENSATE_PATH)

    @property
    def channels(self) -> ChannelPool:
        """The channel pool (for diagnostics and tests)."""
        return self._pool

    async def schema(self, *, wait: float | None = None, metadata: Metadata = ()) -> Schema:
        """Return the service's descriptors and protocol, loading them on first use.

        Args:
            wait: how long this caller waits (the load itself is bounded by
                ``resolve_timeout`` and goes on for other callers).
            metadata: sent with a reflection call, if this caller starts one.

        Raises:
            CallError: DEADLINE_EXCEEDED when ``wait`` passes first; UNAVAILABLE when the
                service is unreachable; FAILED_PRECONDITION when descriptors are unusable;
                UNIMPLEMENTED when it answers neither reflection nor Maestro.go's envelope.
        """
        if self._schema is not None:
            return self._schema
        task = self._loading
        if task is None:
            task = self._loading = asyncio.create_task(self._load(outgoing_metadata(metadata)))
            task.add_done_callback(_retrieve)
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(task)
        except TimeoutError:
            raise CallError(
                Code.DEADLINE_EXCEEDED,
                f"deadline passed while loading the descriptors of {self.service.endpoint}",
            ) from None

    async def descriptors(
        self, *, wait: float | None = None, metadata: Metadata = ()
    ) -> Descriptors:
        """Return the service's descriptors, loading them on first use (see ``schema``).

        Raises:
            CallError: as ``schema``; FAILED_PRECONDITION when the service has none (it
                serves no reflection and is called through Maestro.go's envelope).
        """
        schema = await self.schema(wait=wait, metadata=metadata)
        if schema.descriptors is None:
            raise CallError(
                Code.FAILED_PRECONDITION,
                f"the service at {self.service.endpoint} has no descriptors: {schema.reason}",
                permanent=True,
            )
        return schema.descriptors

    async def _load(self, metadata: Sequence[tuple[str, str | bytes]]) -> Schema:
        try:
            loaded = await load_schema(
                self.service,
                self._pool.get(),
                rpc_timeout=self._resolve_timeout,
                metadata=metadata,
            )
        finally:
            self._loading = None
        self._schema = loaded
        return loaded

    async def describe(self, method: str) -> MethodDescriptor:
        """Resolve ``method`` against the service's descriptors (a convenience for callers and tests).

        Raises:
            ResolutionError: the method is unknown (UNIMPLEMENTED) or ambiguous
                (FAILED_PRECONDITION).
            CallError: the descriptors could not be loaded.
        """
        descriptors = await self.descriptors(wait=self._resolve_timeout)
        return descriptors.method(method)

    async def _method(self, text: str, wait: float | None, metadata: Metadata) -> _Method | str:
        found = self._methods.get(text)
        if found is not None:
            return found
        schema = await self.schema(wait=wait, metadata=metadata)
        descriptor = route(schema, text)
        found = self._methods.get(text)
        if found is None:
            if descriptor is None:
                found = self._methods[text] = _ENVELOPE
            else:
                found = self._methods[text] = _Method(
                    path=f"/{descriptor.containing_service.full_name}/{descriptor.name}",
                    kind=_kind(descriptor),
                    request_class=message_factory.GetMessageClass(descriptor.input_type),
                    response_class=message_factory.GetMessageClass(descriptor.output_type),
                    to_plain=message_converter(descriptor.output_type),
                )
        return found

    def _callable(self, method: _Method) -> Any:
        if self._pool.closed:
            raise CallError(Code.UNAVAILABLE, f"the transport to {self.service.endpoint} is closed")
        index = self._pool.next_index()
        found = method.callables.get(index)
        if found is None:
            channel = self._pool.channel(index)
            factory = getattr(channel, method.kind)
            found = method.callables[index] = factory(
                method.path,
                request_serializer=method.request_class.SerializeToString,
                response_deserializer=method.response_class.FromString,
            )
        return found

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the Transport protocol's gRPC deadline
        metadata: Metadata,
        info: CallInfo | None = None,
    ) -> Any:
        """Call ``method`` with a plain request value and return the plain response.

        Client-streaming methods take a list of request values; server-streaming methods
        return the list of response messages. Through Maestro.go's envelope, ``info`` fills
        the request's ids and chooses ``Compensate`` over ``Execute``.

        Raises:
            CallError: the call failed, with the downstream's code, message and RetryInfo;
                INVALID_ARGUMENT (permanent) when the request or metadata cannot be sent;
                FAILED_PRECONDITION (permanent) when an envelope service answered
                ``success: false``.
            ResolutionError: the method is unknown or ambiguous.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent_metadata = outgoing_metadata(metadata)
        try:
            resolved = await self._method(method, timeout, metadata)
        except CallError as exc:
            if exc.code is not Code.UNAVAILABLE:
                raise
            # The first contact with a service: a refused TLS handshake or connection shows here.
            raise CallError(
                Code.UNAVAILABLE,
                f"service '{self.service.name}': {exc.message}",
                permanent=exc.permanent,
                retry_after=exc.retry_after,
            ) from exc
        if isinstance(resolved, str):
            return await self._call_envelope(method, request, timeout, started, sent_metadata, info)
        what = resolved.path[1:]
        if info is not None and info.trace is not None:
            info.trace.grpc_method(*what.split("/", 1))
        if resolved.kind.startswith("stream"):
            if not isinstance(request, list):
                raise CallError(
                    Code.INVALID_ARGUMENT,
                    f"{what} is client-streaming: its request must be a list, "
                    f"got {type(request).__name__}",
                    permanent=True,
                )
            messages: Any = [
                build_request(resolved.request_class, item, what=f"{what} (item {i})")
                for i, item in enumerate(request)
            ]
        else:
            messages = build_request(resolved.request_class, request, what=what)
        remaining = _remaining(timeout, started, loop.time(), what)
        multi = self._callable(resolved)
        if resolved.kind.startswith("stream"):
            messages = iter(messages)
        try:
            rpc = multi(messages, timeout=remaining, metadata=sent_metadata or None)
        except grpc.aio.UsageError as exc:
            # The channel was closed under us (transport closing while calls start).
            raise CallError(Code.UNAVAILABLE, f"cannot call {what}: {exc}") from None
        try:
            if resolved.kind.endswith("unary"):
                return resolved.to_plain(await rpc)
            return [resolved.to_plain(item) async for item in rpc]
        except grpc.RpcError as err:
            raise self._error(err, what) from None
        except asyncio.CancelledError:
            rpc.cancel()
            raise

    async def _call_envelope(
        self,
        method: str,
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - the call's gRPC deadline
        started: float,
        metadata: tuple[tuple[str, str | bytes], ...],
        info: CallInfo | None,
    ) -> Any:
        schema = self._schema
        assert schema is not None
        if schema.problem is not None:
            raise CallError(
                Code.FAILED_PRECONDITION,
                f"cannot call '{method}' through the envelope: {schema.problem}",
                permanent=True,
            )
        target = self._compensate if info is not None and info.compensation else self._execute
        what = f"{target.path[1:]} ({method})"
        if info is not None and info.trace is not None:
            info.trace.grpc_method(*target.path[1:].split("/", 1))
        message, sent = envelope.build_request(method, request, metadata, info)
        remaining = _remaining(timeout, started, asyncio.get_running_loop().time(), what)
        multi = self._callable(target)
        try:
            rpc = multi(message, timeout=remaining, metadata=sent or None)
        except grpc.aio.UsageError as exc:
            raise CallError(Code.UNAVAILABLE, f"cannot call {what}: {exc}") from None
        try:
            response = await rpc
        except grpc.RpcError as err:
            raise self._error(err, what) from None
        except asyncio.CancelledError:
            rpc.cancel()
            raise
        pool = schema.descriptors.pool if schema.descriptors is not None else None
        return envelope.read_response(response, method, pool)

    def _error(self, err: grpc.RpcError, what: str) -> CallError:
        """Map ``err``; a response over ``max_response_bytes`` names the limit and the service."""
        error = call_error(err, what=what)
        if error.code is Code.RESOURCE_EXHAUSTED and "larger than max" in error.message:
            limit = self.service.max_response_bytes
            return CallError(
                Code.RESOURCE_EXHAUSTED,
                f"{what}: response larger than {limit} bytes (max_response_bytes of service "
                f"'{self.service.name}'): {error.message}",
                permanent=True,
            )
        return error

    async def close(self) -> None:
        """Stop any descriptor load in progress and close every channel."""
        task = self._loading
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._pool.close()


def _remaining(timeout: float | None, started: float, now: float, what: str) -> float | None:
    if timeout is None:
        return None
    remaining = timeout - (now - started)
    if remaining <= 0:
        raise CallError(Code.DEADLINE_EXCEEDED, f"deadline passed before calling {what}")
    return remaining


def _retrieve(task: asyncio.Task[Schema]) -> None:
    # Every waiter may have given up; mark the outcome as seen so asyncio does not log it.
    if not task.cancelled():
        task.exception()


if TYPE_CHECKING:

    def _is_a_transport(transport: GrpcTransport) -> Transport:
        return transport
