"""Reading what a call does: service, method, input, options, and the compensation's.

Shared by call steps and their compensations (``compensate``); the step reader
(``maestro_gateway.model.steps``) decides where a call stands and with which scope.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from maestro_gateway import expr
from maestro_gateway.model.context import LoadContext, did_you_mean
from maestro_gateway.model.services import merge_retry, read_metadata, read_retry
from maestro_gateway.model.types import (
    Call,
    GrpcMethod,
    HttpMethod,
    MethodRef,
    RetryPolicy,
    Service,
)
from maestro_gateway.model.yamlnodes import Node, ScalarNode, kind

COMPENSATE_KEYS = ("service", "method", "input", "timeout", "retry", "metadata", "headers")
HTTP_VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE")

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_GRPC_BARE = re.compile(_IDENT)
_GRPC_SLASH = re.compile(rf"({_IDENT}(?:\.{_IDENT})*)/({_IDENT})")
_GRPC_DOTTED = re.compile(rf"({_IDENT}(?:\.{_IDENT})+)\.({_IDENT})")
_HTTP = re.compile(r"(?:([A-Za-z]+)\s+)?(/.*)", re.DOTALL)
# Maestro.go's HTTP method without a verb or a slash: POST /api/<name in lower case>.
_HTTP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class CallReader:
    """Reads calls against the services of one workflow."""

    def __init__(self, ctx: LoadContext, services: Mapping[str, Service | None]) -> None:
        self.ctx = ctx
        self.services = services

    def compensate(
        self,
        node: Node,
        where: str,
        step_service: Service | None,
        step_call: Call | None,
        scope: expr.Scope,
    ) -> Call | None:
        fields = self.ctx.fields(node, where, COMPENSATE_KEYS, required=("method",))
        if fields is None:
            return None
        service = step_service
        if "service" in fields:
            service = self.service(fields["service"], f"{where}.service")
        base = None
        if step_call is not None and service is step_service:
            base = step_call
        return self.call(fields, where, service, scope, base)

    def service(self, node: Node | None, where: str) -> Service | None:
        if node is None:
            return None
        name = self.ctx.string(node, where)
        if name is None:
            return None
        if name not in self.services:
            known = ", ".join(sorted(self.services)) or "none are defined"
            self.ctx.error(
                node,
                f"{where}: unknown service '{name}'{did_you_mean(name, self.services)} (services: {known})",
            )
            return None
        return self.services[name]

    def call(
        self,
        fields: dict[str, Node],
        where: str,
        service: Service | None,
        scope: expr.Scope,
        base: Call | None,
    ) -> Call | None:
        """Read method, input, timeout, retry and metadata; ``base`` supplies inherited defaults."""
        method = (
            self._method(fields["method"], f"{where}.method", service, scope)
            if "method" in fields
            else None
        )
        request: expr.Template | None = expr.constant({})
        if "input" in fields:
            request = self.ctx.template(fields["input"], scope, f"{where}.input")
        values: dict[str, Any] = {}
        if "timeout" in fields:
            values["timeout"] = self.ctx.duration(fields["timeout"], f"{where}.timeout")
        overrides: dict[str, Any] | None = {}
        if "retry" in fields:
            overrides = read_retry(self.ctx, fields["retry"], f"{where}.retry")
        service_type = service.type if service is not None else "grpc"
        metadata = read_metadata(self.ctx, fields, where, service_type, scope)
        if (
            service is None
            or method is None
            or request is None
            or overrides is None
            or metadata is None
            or any(v is None for v in values.values())
        ):
            return None
        inherited_retry: RetryPolicy = base.retry if base else service.retry
        inherited_timeout = base.timeout if base else service.timeout
        return Call(
            service=service,
            method=method,
            input=request,
            metadata={**service.metadata, **metadata},
            timeout=values.get("timeout", inherited_timeout),
            retry=merge_retry(inherited_retry, overrides),
        )

    def _method(
        self, node: Node, where: str, service: Service | None, scope: expr.Scope
    ) -> MethodRef | None:
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            self.ctx.error(node, f"{where}: expected a string, got {kind(node)}")
            return None
        text = str(node.value).strip()
        if service is None:
            return None
        if service.type == "grpc":
            return self._grpc_method(node, text, where, service)
        if _HTTP_NAME.fullmatch(text):
            return self._http_name(node, text, where)
        match = _HTTP.fullmatch(text)
        if match is None:
            self.ctx.error(
                node,
                f"{where}: '{text}' is not an HTTP method; write 'VERB /path', '/path' (POST) "
                "or a name (POST /api/<name in lower case>)",
            )
            return None
        verb = (match.group(1) or "POST").upper()
        if verb not in HTTP_VERBS:
            self.ctx.error(
                node,
                f"{where}: unsupported HTTP verb '{match.group(1)}'; use one of {', '.join(HTTP_VERBS)}",
            )
            return None
        offset = len(node.value) - len(node.value.lstrip()) + match.start(2)
        path = self.ctx.compile_text(node, match.group(2), offset, scope, where)
        return None if path is None else HttpMethod(verb, path, match.group(2))

    def _http_name(self, node: ScalarNode, text: str, where: str) -> HttpMethod | None:
        """Maestro.go's rule for a method without a verb or a slash: ``POST /api/<lower>``.

        A verb alone (``GET``, ``delete``) is refused: it is a path forgotten far more often
        than an endpoint called ``/api/get``.
        """
        if text.upper() in HTTP_VERBS:
            self.ctx.error(
                node,
                f"{where}: '{text}' is an HTTP verb without a path; write '{text.upper()} /path' "
                f"(or 'POST /api/{text.lower()}', which is what Maestro.go makes of it)",
            )
            return None
        path = f"/api/{text.lower()}"
        return HttpMethod("POST", expr.constant(path), path)

    def _grpc_method(
        self, node: ScalarNode, text: str, where: str, service: Service
    ) -> MethodRef | None:
        if _GRPC_BARE.fullmatch(text):
            return GrpcMethod(None, text)
        match = _GRPC_SLASH.fullmatch(text) or _GRPC_DOTTED.fullmatch(text)
        if match:
            return GrpcMethod(match.group(1), match.group(2))
        hint = ""
        if _HTTP.fullmatch(text):
            hint = f"; service '{service.name}' is gRPC (set type: http for an HTTP service)"
        self.ctx.error(
            node,
            f"{where}: '{text}' is not a gRPC method; write Name, pkg.Service/Method or pkg.Service.Method{hint}",
        )
        return None
