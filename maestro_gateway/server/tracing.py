"""Whether ``maestro serve`` traces, decided by the standard ``OTEL_*`` variables (DESIGN §14).

Tracing is on when

- ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none`` (``otlp``, ``console``, or
  both, comma-separated), or
- ``OTEL_TRACES_EXPORTER`` is unset and ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the exporter is then ``otlp``);

and never when ``OTEL_SDK_DISABLED=true``. ``OTEL_SERVICE_NAME`` alone turns nothing on (it
names no destination). Everything else is read by the OpenTelemetry SDK and exporters
themselves: ``OTEL_EXPORTER_OTLP_PROTOCOL``/``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
(``http/protobuf``, the default, or ``grpc``), the endpoints, headers, timeouts and
certificates, ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the service name defaults
to ``maestro-gateway``), ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` and ``OTEL_BSP_*``.

This module imports no OpenTelemetry: a gateway that does not trace never loads it. The
implementation is ``maestro_gateway.server.otel``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maestro_gateway.server.otel import Tracing

EXPORTERS = ("otlp", "console", "none")
"""The values ``OTEL_TRACES_EXPORTER`` may list."""
PROTOCOLS = ("http/protobuf", "grpc")
"""The OTLP protocols supported (``http/json`` is not)."""


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value the gateway cannot use; the message names it."""


def exporters(environ: Mapping[str, str] | None = None) -> list[str]:
    """The span exporters the variables ask for, in order; empty when tracing is off.

    Raises:
        TracingConfigError: ``OTEL_TRACES_EXPORTER`` or the OTLP protocol is unknown.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    listed = [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [name for name in listed if name]
    for name in names:
        if name not in EXPORTERS:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (expected {', '.join(EXPORTERS)})"
            )
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = ["otlp"] if endpoint else []
    names = list(dict.fromkeys(name for name in names if name != "none"))
    if "otlp" in names:
        otlp_protocol(env)
    return names


def otlp_protocol(environ: Mapping[str, str]) -> str:
    """The OTLP protocol of traces: the traces variable, else the general one, else HTTP.

    Raises:
        TracingConfigError: the protocol named is not supported.
    """
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(variable, "").strip().lower()
        if value:
            if value not in PROTOCOLS:
                raise TracingConfigError(
                    f"{variable}: unsupported protocol {value!r} (expected {', '.join(PROTOCOLS)})"
                )
            return value
    return "http/protobuf"


def from_env(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The gateway's tracing as the variables configure it, or None when they leave it off.

    Raises:
        TracingConfigError: a variable has a value the gateway cannot use.
    """
    env = os.environ if environ is None else environ
    names = exporters(env)
    if not names:
        return None
    from maestro_gateway.server.otel import Tracing

    return Tracing.from_env(names, env)
