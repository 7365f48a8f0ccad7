"""Demo loyalty service: Maestro.go's envelope (``maestro.v1.MaestroService``) on synchronous grpcio.

Written the way Maestro.go's examples tell service authors to write a service: one servicer whose
``Execute`` dispatches on ``request.method`` (the workflow step's method name) and reads
``request.payload`` (a ``google.protobuf.Struct`` packed in an ``Any``), answering
``ServiceResponse{success, data, error}``; ``Compensate`` runs the undo methods the same way. A
business failure is ``success: false`` with an error text, as Maestro.go's services report
them; a method it does not know is UNIMPLEMENTED. It runs on a synchronous ``grpc.server`` with a
thread pool, like Maestro.go's Python example (the grpcio inventory uses ``grpc.aio``).

Run it with ``python -m demo.loyalty [--host H] [--port N] [--no-reflection]`` (default
127.0.0.1:50054). It serves MaestroService, the ``shop.control.v1.Control`` plane and health,
and, unless ``--no-reflection``, server reflection (v1 and v1alpha). Calls are recorded under
the method named in the request, with ``rpc`` Execute or Compensate; a ``success: false`` answer
is recorded with the outcome ``REFUSED``. The recorded metadata also keeps ``workflow-id``,
``step-id`` and ``correlation-id``.

Methods (payload → data):

- ``EnrollMember {email, name}`` → ``{member_id: "mem-<n>", email, name, tier: "basic",
  points: 0}``; the same email again returns the same member; no email is refused.
- ``AwardPoints {member_id, order_id, points}`` → ``{award_id: "awd-<n>", member_id, order_id,
  points, balance}``; points <= 0 or above :data:`POINTS_CAP`, or an unknown member, is refused.
- ``RevokePoints {award_id}`` → ``{award_id, revoked, balance}`` (``revoked`` false when it
  already was); ``CancelMembership {member_id}`` → ``{member_id, cancelled}`` (likewise).
- ``UpgradeTier {member_id, tier}`` → ``{member_id, tier}``; a tier not in :data:`TIERS` is
  refused.
- ``GetBalance {member_id}`` → a ``google.protobuf.Int64Value`` (a type the gateway knows).
- ``IssueCard {member_id}`` → an ``Any`` of type ``shop.loyalty.v1.Card``, which no descriptor
  describes (the gateway passes such data on as ``{"@type": …, "value": base64}``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, descriptor_pool, json_format, struct_pb2, wrappers_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_status import rpc_status
from maestro.v1 import maestro_go_pb2, maestro_go_pb2_grpc
from shop.control.v1 import control_pb2, control_pb2_grpc

from demo.control import ControlPlane, DemoError, make_rule, select_metadata
from demo.grpcio_support import SymbolLookup
from demo.process import announce_ready

SERVICE = "maestro.v1.MaestroService"
CONTROL_SERVICE = "shop.control.v1.Control"
DEFAULT_PORT = 50054
POINTS_CAP = 10_000
TIERS = ("basic", "silver", "gold")
CARD_TYPE = "type.googleapis.com/shop.loyalty.v1.Card"
ENVELOPE_KEYS = frozenset({"workflow-id", "step-id", "correlation-id"})
REFUSED = "REFUSED"

log = logging.getLogger("demo.loyalty")


class Refused(DemoError):
    """A business failure, answered as ``success: false`` with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(REFUSED, message)


@dataclass(slots=True)
class _Member:
    member_id: str
    email: str
    name: str
    tier: str = "basic"
    points: int = 0
    cancelled: bool = False

    def view(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "email": self.email,
            "name": self.name,
            "tier": self.tier,
            "points": self.points,
        }


@dataclass(slots=True)
class _Award:
    award_id: str
    member_id: str
    points: int
    revoked: bool = False


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name, "")
    return value if isinstance(value, str) else str(value)


def _integer(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise Refused(f"'{name}' must be a whole number, got {json.dumps(value)}")
    return int(value)


class Members:
    """Members and their points; pure state, refusing with :class:`Refused`. Thread-safe."""

    def __init__(self) -> None:
        """Start with no members."""
        self._lock = threading.Lock()
        self._member_ids = itertools.count(1)
        self._award_ids = itertools.count(1)
        self._members: dict[str, _Member] = {}
        self._awards: dict[str, _Award] = {}

    def restore(self) -> None:
        """Forget every member and award (ids keep counting, so they never repeat)."""
        with self._lock:
            self._members.clear()
            self._awards.clear()

    def _member(self, payload: dict[str, Any]) -> _Member:
        member = self._members.get(_text(payload, "member_id"))
        if member is None or member.cancelled:
            raise Refused(f"unknown member '{_text(payload, 'member_id')}'")
        return member

    def enroll(self, payload: dict[str, Any]) -> Any:
        email = _text(payload, "email").strip()
        if not email:
            raise Refused("an email is required to enroll")
        with self._lock:
            for member in self._members.values():
                if member.email == email and not member.cancelled:
                    return member.view()
            member = _Member(f"mem-{next(self._member_ids)}", email, _text(payload, "name"))
            self._members[member.member_id] = member
            return member.view()

    def award(self, payload: dict[str, Any]) -> Any:
        points = _integer(payload, "points")
        if not 0 < points <= POINTS_CAP:
            raise Refused(f"points must be between 1 and {POINTS_CAP}, got {points}")
        with self._lock:
            member = self._member(payload)
            award = _Award(f"awd-{next(self._award_ids)}", member.member_id, points)
            self._awards[award.award_id] = award
            member.points += points
            return {
                "award_id": award.award_id,
                "member_id": member.member_id,
                "order_id": _text(payload, "order_id"),
                "points": points,
                "balance": member.points,
            }

    def revoke(self, payload: dict[str, Any]) -> Any:
        with self._lock:
            award = self._awards.get(_text(payload, "award_id"))
            if award is None:
                raise Refused(f"unknown award '{_text(payload, 'award_id')}'")
            member = self._members[award.member_id]
            revoked = not award.revoked
            if revoked:
                award.revoked = True
                member.points -= award.points
            return {"award_id": award.award_id, "revoked": revoked, "balance": member.points}

    def cancel(self, payload: dict[str, Any]) -> Any:
        with self._lock:
            member = self._members.get(_text(payload, "member_id"))
            if member is None:
                raise Refused(f"unknown member '{_text(payload, 'member_id')}'")
            cancelled = not member.cancelled
            member.cancelled = True
            return {"member_id": member.member_id, "cancelled": cancelled}

    def upgrade(self, payload: dict[str, Any]) -> Any:
        tier = _text(payload, "tier")
        if tier not in TIERS:
            raise Refused(f"no tier '{tier}'; tiers: {', '.join(TIERS)}")
        with self._lock:
            member = self._member(payload)
            member.tier = tier
            return {"member_id": member.member_id, "tier": tier}

    def balance(self, payload: dict[str, Any]) -> Any:
        with self._lock:
            return wrappers_pb2.Int64Value(value=self._member(payload).points)

    def card(self, payload: dict[str, Any]) -> Any:
        with self._lock:
            member = self._member(payload)
        number = wrappers_pb2.StringValue(value=f"CARD-{member.member_id.upper()}")
        return any_pb2.Any(type_url=CARD_TYPE, value=number.SerializeToString())

    def methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """The methods ``Execute`` and ``Compensate`` dispatch to, by name."""
        return {
            "EnrollMember": self.enroll,
            "AwardPoints": self.award,
            "RevokePoints": self.revoke,
            "CancelMembership": self.cancel,
            "UpgradeTier": self.upgrade,
            "GetBalance": self.balance,
            "IssueCard": self.card,
        }


def _payload(request: maestro_go_pb2.ServiceRequest) -> dict[str, Any]:
    if not request.HasField("payload"):
        return {}
    payload = struct_pb2.Struct()
    if not request.payload.Unpack(payload):
        raise Refused(
            f"the payload must be a google.protobuf.Struct, got {request.payload.type_url}"
        )
    return json_format.MessageToDict(payload)


def _data(result: Any) -> any_pb2.Any:
    if isinstance(result, any_pb2.Any):
        return result
    data = any_pb2.Any()
    if isinstance(result, dict):
        message = struct_pb2.Struct()
        message.update(result)
        data.Pack(message)
    else:
        data.Pack(result)
    return data


def _abort(context: grpc.ServicerContext, error: DemoError) -> NoReturn:
    code = grpc.StatusCode[error.code]
    if error.retry_after_ms <= 0:
        context.abort(code, error.message)
    retry_info = error_details_pb2.RetryInfo()
    retry_info.retry_delay.FromMilliseconds(error.retry_after_ms)
    status = status_pb2.Status(code=code_pb2.Code.Value(error.code), message=error.message)
    status.details.add().Pack(retry_info)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort_with_status raises")


class LoyaltyServicer(maestro_go_pb2_grpc.MaestroServiceServicer):  # type: ignore[misc]
    """``maestro.v1.MaestroService``: every method through Execute (and Compensate)."""

    def __init__(self, members: Members, control: ControlPlane) -> None:
        """Serve ``members``, recording calls and applying faults with ``control``."""
        self._methods = members.methods()
        self._control = control

    def _run(
        self, rpc: str, request: maestro_go_pb2.ServiceRequest, context: grpc.ServicerContext
    ) -> maestro_go_pb2.ServiceResponse:
        gone = threading.Event()
        context.add_callback(gone.set)
        metadata = select_metadata(
            ((m.key, m.value) for m in context.invocation_metadata() or ()), also=ENVELOPE_KEYS
        )
        request_json = json.dumps(
            json_format.MessageToDict(request, preserving_proto_field_name=True),
            separators=(",", ":"),
        )
        try:
            result = self._control.handle_blocking(
                request.method,
                request_json,
                metadata,
                lambda: self._dispatch(request),
                rpc=rpc,
                cancelled=gone,
            )
        except Refused as refused:
            return maestro_go_pb2.ServiceResponse(success=False, error=refused.message)
        except DemoError as exc:
            _abort(context, exc)
        return maestro_go_pb2.ServiceResponse(success=True, data=_data(result))

    def _dispatch(self, request: maestro_go_pb2.ServiceRequest) -> Any:
        handler = self._methods.get(request.method)
        if handler is None:
            known = ", ".join(sorted(self._methods))
            raise DemoError(
                "UNIMPLEMENTED", f"loyalty has no method '{request.method}'; it has: {known}"
            )
        return handler(_payload(request))

    def Execute(
        self, request: maestro_go_pb2.ServiceRequest, context: grpc.ServicerContext
    ) -> maestro_go_pb2.ServiceResponse:
        """Run the method named in the request."""
        return self._run("Execute", request, context)

    def Compensate(
        self, request: maestro_go_pb2.ServiceRequest, context: grpc.ServicerContext
    ) -> maestro_go_pb2.ServiceResponse:
        """Undo a step: run the compensation method named in the request."""
        return self._run("Compensate", request, context)


class ControlServicer(control_pb2_grpc.ControlServicer):  # type: ignore[misc]
    """``shop.control.v1.Control`` over a :class:`ControlPlane`, for a synchronous server."""

    def __init__(self, control: ControlPlane, on_reset: Callable[[], None]) -> None:
        """Serve ``control``; ``on_reset`` also restores the members."""
        self._control = control
        self._on_reset = on_reset

    def AddFault(self, request: control_pb2.Fault, context: grpc.ServicerContext) -> Any:
        """Append a fault rule; an invalid one is INVALID_ARGUMENT."""
        try:
            rule = make_rule(
                request.method,
                request.code,
                request.message,
                request.times,
                request.delay_ms,
                request.retry_after_ms,
            )
        except DemoError as exc:
            _abort(context, exc)
        self._control.add_fault(rule)
        return control_pb2.Empty()

    def Reset(self, request: control_pb2.Empty, context: grpc.ServicerContext) -> Any:
        """Forget every rule and every call, and restore the members."""
        self._control.reset()
        self._on_reset()
        return control_pb2.Empty()

    def ListCalls(self, request: control_pb2.Empty, context: grpc.ServicerContext) -> Any:
        """The calls received so far, oldest first."""
        return control_pb2.CallList(
            calls=[
                control_pb2.Call(
                    method=c.method,
                    request_json=c.request_json,
                    metadata=c.metadata,
                    outcome=c.outcome,
                    started_unix_ms=c.started_unix_ms,
                    ended_unix_ms=c.ended_unix_ms,
                    rpc=c.rpc,
                )
                for c in self._control.calls()
            ]
        )


class _Reflection(SymbolLookup, reflection.ReflectionServicer):  # type: ignore[misc]
    """The synchronous reflection servicer, resolving method symbols too."""


def add_reflection(server: grpc.Server, service_names: Iterable[str]) -> None:
    """Serve reflection for ``service_names`` under both v1alpha and v1 (same messages)."""
    v1 = "grpc.reflection.v1.ServerReflection"
    names = [*service_names, v1, reflection.SERVICE_NAME]
    servicer = _Reflection(names, pool=descriptor_pool.Default())
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (reflection.SERVICE_NAME, v1):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )


def build_server(host: str, port: int, *, with_reflection: bool = True) -> tuple[grpc.Server, int]:
    """Build (not start) the server; return it and the port it is bound to."""
    members = Members()
    control = ControlPlane()
    # No SO_REUSEPORT: a second demo on the same port must fail, not steal half the calls.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=10), options=[("grpc.so_reuseport", 0)]
    )
    maestro_go_pb2_grpc.add_MaestroServiceServicer_to_server(
        LoyaltyServicer(members, control), server
    )
    control_pb2_grpc.add_ControlServicer_to_server(
        ControlServicer(control, members.restore), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if with_reflection:
        add_reflection(server, [SERVICE, CONTROL_SERVICE, health.SERVICE_NAME])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return server, bound


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``--host``, ``--port`` and ``--no-reflection``."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.loyalty", description="Demo loyalty service (Maestro.go envelope)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port, 0 for any (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--no-reflection",
        action="store_true",
        help="serve no gRPC reflection, like Maestro.go's own example services",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m demo.loyalty``: serve until SIGTERM or SIGINT."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # The gateway asks a service without reflection whether it answers Execute by sending an
    # unparsable request; grpcio logs each one with a traceback.
    logging.getLogger("grpc._common").setLevel(logging.CRITICAL)
    server, bound = build_server(args.host, args.port, with_reflection=not args.no_reflection)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    announce_ready("loyalty", args.host, bound)
    stop.wait()
    server.stop(1.0).wait()


if __name__ == "__main__":
    main()
