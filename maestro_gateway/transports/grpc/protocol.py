"""Which protocol a gRPC service speaks: its own methods, or Maestro.go's envelope (DESIGN §9).

Decided once per downstream, when its descriptors first load (``load_schema``):

* ``protocol: grpc`` — the service's own methods, always; a method it lacks is UNIMPLEMENTED
  listing those it has.
* ``protocol: maestro-go`` — every call goes through ``maestro.v1.MaestroService``. Reflection is
  still asked (the service's own message types then decode its ``data``), but not required.
* ``protocol: auto`` (the default) — the envelope when the service's descriptors list
  ``maestro.v1.MaestroService`` (then a step whose method is one of the service's other methods
  still calls it directly; every other method name goes through ``Execute``), or when the
  service serves no reflection and answers ``Execute`` (``answers_envelope``). A service that
  answers neither is UNIMPLEMENTED, permanent, naming the endpoint and what was tried. Otherwise
  the service's own methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import grpc
from google.protobuf.descriptor import MethodDescriptor

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError, ResolutionError
from maestro_gateway.model.types import ReflectionSource, Service
from maestro_gateway.transports.grpc.descriptors import Descriptors, load_descriptors
from maestro_gateway.transports.grpc.envelope import (
    ENVELOPE_SERVICE,
    answers_envelope,
    envelope_problem,
)

Chosen = Literal["grpc", "maestro-go"]


@dataclass(frozen=True, slots=True)
class Schema:
    """What the gateway learned about a service when it first loaded its descriptors.

    Attributes:
        descriptors: the service's descriptors; None when it serves no reflection (the
            envelope is then called with the gateway's own copy of its messages).
        protocol: the protocol chosen.
        reason: why, in words (``maestro validate --connect`` prints it).
        forced: true when the workflow said ``protocol: maestro-go``: every call goes through
            the envelope, even a method the service defines itself.
        problem: what makes the service's own envelope description unusable, if anything;
            envelope calls then fail with it (FAILED_PRECONDITION).
    """

    descriptors: Descriptors | None
    protocol: Chosen
    reason: str
    forced: bool = False
    problem: str | None = None


def _neither(endpoint: str) -> CallError:
    return CallError(
        Code.UNIMPLEMENTED,
        f"the service at {endpoint} answers neither gRPC server reflection (v1, v1alpha) nor "
        f"Maestro.go's envelope ({ENVELOPE_SERVICE}/Execute); configure `descriptors: "
        "{protoset: …}` or `{protos: […]}` for it, or check the endpoint",
        permanent=True,
    )


async def load_schema(
    service: Service,
    channel: grpc.aio.Channel,
    *,
    rpc_timeout: float | None,
    metadata: Sequence[tuple[str, str | bytes]] = (),
) -> Schema:
    """Load ``service``'s descriptors and choose its protocol (see the module docstring).

    Raises:
        CallError: UNAVAILABLE (retryable) when the service could not be reached;
            FAILED_PRECONDITION when its descriptors are unusable; UNIMPLEMENTED (permanent)
            when, under ``auto``, it answers neither reflection nor the envelope.
    """
    wanted = service.protocol
    descriptors = await load_descriptors(
        service.descriptors,
        channel,
        target=service.endpoint,
        rpc_timeout=rpc_timeout,
        metadata=metadata,
        optional=wanted != "grpc",
    )
    if wanted == "grpc":
        assert descriptors is not None
        return Schema(descriptors, "grpc", "protocol: grpc")
    if descriptors is None:
        if wanted == "maestro-go":
            reason = "protocol: maestro-go; the service serves no reflection"
            return Schema(None, "maestro-go", reason, forced=True)
        if not await answers_envelope(channel, timeout=rpc_timeout, metadata=metadata):
            raise _neither(service.endpoint)
        reason = f"no reflection; the service answers {ENVELOPE_SERVICE}/Execute"
        return Schema(None, "maestro-go", reason)
    envelope = descriptors.services.get(ENVELOPE_SERVICE)
    problem = envelope_problem(envelope) if envelope is not None else None
    if wanted == "maestro-go":
        return Schema(descriptors, "maestro-go", "protocol: maestro-go", True, problem)
    source = (
        "reflection lists"
        if isinstance(service.descriptors, ReflectionSource)
        else "its descriptors define"
    )
    if envelope is None:
        return Schema(descriptors, "grpc", f"{source} no {ENVELOPE_SERVICE}")
    own = sorted(n for n in descriptors.application if n != ENVELOPE_SERVICE)
    reason = f"{source} {ENVELOPE_SERVICE}"
    if own:
        reason += f"; the methods of {', '.join(own)} are still called directly"
    return Schema(descriptors, "maestro-go", reason, problem=problem)


def route(schema: Schema, text: str) -> MethodDescriptor | None:
    """The method ``text`` calls directly, or None when the call goes through the envelope.

    Raises:
        ResolutionError: under ``grpc``, the method is unknown or ambiguous; under ``auto``, a
            bare name is ambiguous among the service's own methods.
    """
    descriptors = schema.descriptors
    if schema.protocol == "grpc":
        assert descriptors is not None
        return descriptors.method(text)
    if schema.forced or descriptors is None:
        return None
    try:
        return descriptors.method(text, bare_skip=ENVELOPE_SERVICE)
    except ResolutionError as exc:
        if exc.code is Code.UNIMPLEMENTED:
            return None
        raise
