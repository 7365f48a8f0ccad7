"""Clients of the demo control plane: gRPC (``shop.control.v1.Control``) and HTTP (``/_control``).

Both offer the same three operations plus a bounded wait, and return the same
:class:`RecordedCall` values, so a test treats the five demo services alike.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import grpc
from shop.control.v1 import control_pb2, control_pb2_grpc

RPC_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One call a demo service received (``shop.control.v1.Call`` with the request parsed)."""

    method: str
    request: Any
    metadata: dict[str, str]
    outcome: str
    started_unix_ms: int
    ended_unix_ms: int
    rpc: str = ""
    """The RPC that carried the call when it is not ``method``: Execute or Compensate for the
    envelope service (whose ``method`` is the one named in the request)."""


class ControlClient(Protocol):
    """The control plane of one demo service."""

    async def add_fault(
        self,
        method: str = "",
        code: str = "",
        message: str = "",
        times: int = 0,
        delay_ms: int = 0,
        retry_after_ms: int = 0,
    ) -> None:
        """Append a fault rule (see ``shop.control.v1.Fault``)."""
        ...

    async def reset(self) -> None:
        """Forget every rule and recorded call, and restore the service's demo data."""
        ...

    async def calls(self) -> list[RecordedCall]:
        """The calls received so far, oldest first."""
        ...

    async def wait_for(
        self, predicate: Callable[[list[RecordedCall]], bool], within: float = 5.0
    ) -> list[RecordedCall]:
        """Poll :meth:`calls` until ``predicate`` holds; raise TimeoutError after ``within`` s."""
        ...

    async def close(self) -> None:
        """Release the client's connection."""
        ...


class _Polling(abc.ABC):
    @abc.abstractmethod
    async def calls(self) -> list[RecordedCall]:
        """The calls received so far, oldest first."""

    async def wait_for(
        self, predicate: Callable[[list[RecordedCall]], bool], within: float = 5.0
    ) -> list[RecordedCall]:
        """Poll :meth:`calls` until ``predicate`` holds; raise TimeoutError after ``within`` s."""
        async with asyncio.timeout(within):
            while True:
                calls = await self.calls()
                if predicate(calls):
                    return calls
                await asyncio.sleep(0.02)


class GrpcControlClient(_Polling):
    """``shop.control.v1.Control`` over a grpc.aio channel."""

    def __init__(self, address: str) -> None:
        """Connect (lazily) to the service at ``address`` (``host:port``)."""
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = control_pb2_grpc.ControlStub(self._channel)

    async def add_fault(
        self,
        method: str = "",
        code: str = "",
        message: str = "",
        times: int = 0,
        delay_ms: int = 0,
        retry_after_ms: int = 0,
    ) -> None:
        """Append a fault rule (see ``shop.control.v1.Fault``)."""
        fault = control_pb2.Fault(
            method=method,
            code=code,
            message=message,
            times=times,
            delay_ms=delay_ms,
            retry_after_ms=retry_after_ms,
        )
        await self._stub.AddFault(fault, timeout=RPC_TIMEOUT)

    async def reset(self) -> None:
        """Forget every rule and recorded call, and restore the service's demo data."""
        await self._stub.Reset(control_pb2.Empty(), timeout=RPC_TIMEOUT)

    async def calls(self) -> list[RecordedCall]:
        """The calls received so far, oldest first."""
        answer = await self._stub.ListCalls(control_pb2.Empty(), timeout=RPC_TIMEOUT)
        return [
            RecordedCall(
                method=c.method,
                request=json.loads(c.request_json) if c.request_json else None,
                metadata=dict(c.metadata),
                outcome=c.outcome,
                started_unix_ms=c.started_unix_ms,
                ended_unix_ms=c.ended_unix_ms,
                rpc=c.rpc,
            )
            for c in answer.calls
        ]

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


class HttpControlClient(_Polling):
    """The mailer's JSON control plane under ``/_control``."""

    def __init__(self, url: str) -> None:
        """Talk to the HTTP service at ``url`` (``http://host:port``)."""
        self._url = url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RPC_TIMEOUT))
        return self._session

    async def _request(self, verb: str, path: str, body: Any = None) -> Any:
        async with self._client().request(verb, self._url + path, json=body) as response:
            payload = await response.json()
            if response.status != 200:
                raise RuntimeError(f"{verb} {path}: HTTP {response.status}: {payload}")
            return payload

    async def add_fault(
        self,
        method: str = "",
        code: str = "",
        message: str = "",
        times: int = 0,
        delay_ms: int = 0,
        retry_after_ms: int = 0,
    ) -> None:
        """Append a fault rule; ``code`` may also be an HTTP status as text (``"503"``)."""
        fault = {
            "method": method,
            "code": code,
            "message": message,
            "times": times,
            "delay_ms": delay_ms,
            "retry_after_ms": retry_after_ms,
        }
        await self._request("POST", "/_control/faults", fault)

    async def reset(self) -> None:
        """Forget every rule, recorded call and sent mail."""
        await self._request("POST", "/_control/reset", {})

    async def calls(self) -> list[RecordedCall]:
        """The calls received so far, oldest first."""
        payload = await self._request("GET", "/_control/calls")
        return [
            RecordedCall(
                method=c["method"],
                request=json.loads(c["request_json"]) if c["request_json"] else None,
                metadata=dict(c["metadata"]),
                outcome=c["outcome"],
                started_unix_ms=c["started_unix_ms"],
                ended_unix_ms=c["ended_unix_ms"],
            )
            for c in payload["calls"]
        ]

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
