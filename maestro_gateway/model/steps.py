"""Reading the ``steps`` section: call steps, ``parallel`` groups, methods and compensations.

Two passes: ``StepReader.structure`` reads ids, output names and groups (everything the scopes
depend on) and checks their uniqueness; ``StepReader.build`` then compiles every expression with
the scope of its place and builds the immutable steps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from maestro_gateway import expr
from maestro_gateway.model.context import LoadContext, did_you_mean
from maestro_gateway.model.scopes import RESERVED, Scopes, StepInfo
from maestro_gateway.model.services import merge_retry, read_metadata, read_retry
from maestro_gateway.model.types import (
    Call,
    CallStep,
    GrpcMethod,
    HttpMethod,
    MethodRef,
    ParallelStep,
    RetryPolicy,
    Service,
    Step,
)
from maestro_gateway.model.yamlnodes import MappingNode, Node, ScalarNode, kind, pairs, position

STEP_KEYS = (
    "id",
    "service",
    "method",
    "input",
    "output",
    "when",
    "timeout",
    "retry",
    "metadata",
    "headers",
    "compensate",
)
COMPENSATE_KEYS = ("service", "method", "input", "timeout", "retry", "metadata", "headers")
HTTP_VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE")

_STEP_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# CEL reserved words cannot be variable names.
CEL_RESERVED = frozenset(
    [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ]
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_GRPC_BARE = re.compile(_IDENT)
_GRPC_SLASH = re.compile(rf"({_IDENT}(?:\.{_IDENT})*)/({_IDENT})")
_GRPC_DOTTED = re.compile(rf"({_IDENT}(?:\.{_IDENT})+)\.({_IDENT})")
_HTTP = re.compile(r"(?:([A-Za-z]+)\s+)?(/.*)", re.DOTALL)
# Maestro.go's HTTP method without a verb or a slash: POST /api/<name in lower case>.
_HTTP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@dataclass
class _Draft:
    """A call step after the structural pass."""

    info: StepInfo
    node: Node
    fields: dict[str, Node]
    valid: bool
    where: str


@dataclass
class _Group:
    """A parallel group after the structural pass."""

    id: str
    node: Node
    children: list[_Draft] = field(default_factory=list)


class StepReader:
    """Reads the ``steps`` list of one workflow."""

    def __init__(self, ctx: LoadContext, services: Mapping[str, Service | None]) -> None:
        self.ctx = ctx
        self.services = services
        self.items: list[_Draft | _Group] = []
        self._ids: dict[str, Node] = {}
        self._outputs: dict[str, tuple[str, Node]] = {}

    # -- pass 1: structure -------------------------------------------------------------------

    def structure(self, node: Node) -> list[StepInfo]:
        """Read ids, outputs and groups; return the call steps' infos in file order."""
        elements = self.ctx.items(node, "steps")
        if elements is None:
            return []
        if not elements:
            self.ctx.error(node, "steps: list at least one step")
        groups = 0
        for index, element in enumerate(elements):
            if isinstance(element, MappingNode) and any(
                isinstance(k, ScalarNode) and k.value == "parallel" for k, _ in pairs(element)
            ):
                groups += 1
                self.items.append(self._group(element, index, groups))
            else:
                self.items.append(self._draft(element, index, f"steps[{index}]", None))
        return [d.info for d in self._drafts() if d.valid]

    def _group(self, node: MappingNode, index: int, number: int) -> _Group:
        where = _named_where(node, f"steps[{index}]")
        fields = self.ctx.fields(node, where, ("id", "parallel")) or {}
        group_id = f"parallel-{number}"
        while group_id in self._ids:
            number += 1
            group_id = f"parallel-{number}"
        if "id" in fields:
            given = self._step_id(fields["id"], where)
            if given is not None:
                group_id = given
        else:
            self._ids[group_id] = node
        where = f"steps.{group_id}"
        group = _Group(group_id, node)
        children = (
            self.ctx.items(fields["parallel"], f"{where}.parallel")
            if "parallel" in fields
            else None
        )
        if children is not None and not children:
            self.ctx.error(fields["parallel"], f"{where}.parallel: list at least one step")
        for i, child in enumerate(children or []):
            if isinstance(child, MappingNode) and any(
                isinstance(k, ScalarNode) and k.value == "parallel" for k, _ in pairs(child)
            ):
                self.ctx.error(child, f"{where}.parallel[{i}]: parallel groups cannot be nested")
                continue
            group.children.append(self._draft(child, index, f"{where}.parallel[{i}]", group_id))
        return group

    def _draft(self, node: Node, index: int, where: str, group: str | None) -> _Draft:
        where = _named_where(node, where)
        fields = self.ctx.fields(node, where, STEP_KEYS, required=("id", "service", "method"))
        valid = fields is not None
        fields = fields or {}
        step_id = self._step_id(fields["id"], where) if "id" in fields else None
        if step_id is None:
            return _Draft(StepInfo(where, "", index, group), node, fields, False, where)
        output_node = fields.get("output", fields["id"])
        output = self._output(output_node, step_id, explicit="output" in fields)
        valid = valid and output is not None
        info = StepInfo(step_id, output or step_id, index, group)
        return _Draft(info, node, fields, valid, f"steps.{step_id}")

    def _step_id(self, node: Node, where: str) -> str | None:
        step_id = self.ctx.string(node, f"{where}.id", scalars=True)
        if step_id is None:
            return None
        if not _STEP_ID.fullmatch(step_id):
            self.ctx.error(
                node, f"{where}.id: '{step_id}' may hold only letters, digits, '_', '.' and '-'"
            )
            return None
        if step_id in self._ids:
            first = position(self._ids[step_id])
            self.ctx.error(
                node,
                f"{where}.id: duplicate step id '{step_id}' (first defined at line {first.line})",
            )
            return None
        self._ids[step_id] = node
        return step_id

    def _output(self, node: Node, step_id: str, *, explicit: bool) -> str | None:
        where = f"steps.{step_id}.output"
        name = self.ctx.string(node, where, scalars=not explicit)
        if name is None:
            return None
        if not IDENTIFIER.fullmatch(name) or name in CEL_RESERVED:
            if explicit:
                self.ctx.error(
                    node,
                    f"{where}: '{name}' is not a valid name (letters, digits and '_', not starting with a digit)",
                )
            else:
                self.ctx.error(
                    node,
                    f"steps.{step_id}: the step id '{name}' cannot be used as its output name; add output: with a name made of letters, digits and '_'",
                )
            return None
        if name in RESERVED:
            self.ctx.error(
                node,
                f"{where}: '{name}' is reserved (input, workflow, steps, error and env are built-in names)",
            )
            return None
        if name in self._outputs:
            other, first = self._outputs[name]
            self.ctx.error(
                node,
                f"{where}: output name '{name}' is already used by step '{other}' (line {position(first).line})",
            )
            return None
        self._outputs[name] = (step_id, node)
        return name

    def _drafts(self) -> list[_Draft]:
        out: list[_Draft] = []
        for item in self.items:
            out.extend(item.children if isinstance(item, _Group) else [item])
        return out

    # -- pass 2: build -----------------------------------------------------------------------

    def build(self, scopes: Scopes) -> tuple[Step, ...] | None:
        """Compile every step; None when any problem was found (all of them reported)."""
        steps: list[Step] = []
        ok = True
        for item in self.items:
            if isinstance(item, _Group):
                children = [self._call_step(d, scopes) for d in item.children]
                built = [c for c in children if c is not None]
                if len(built) == len(children) and built:
                    steps.append(ParallelStep(item.id, tuple(built), position(item.node)))
                else:
                    ok = False
            else:
                step = self._call_step(item, scopes)
                if step is None:
                    ok = False
                else:
                    steps.append(step)
        return tuple(steps) if ok else None

    def _call_step(self, draft: _Draft, scopes: Scopes) -> CallStep | None:
        info, fields = draft.info, draft.fields
        where = draft.where
        scope = scopes.step(info)
        service = self._service(fields.get("service"), f"{where}.service")
        call = self._call(fields, where, service, scope, None)
        when = None
        if "when" in fields:
            when = self.ctx.condition(fields["when"], scope, f"{where}.when")
        compensate = None
        if "compensate" in fields:
            compensate = self._compensate(
                fields["compensate"],
                f"{where}.compensate",
                service,
                call,
                scopes.compensation(info),
            )
        if (
            not draft.valid
            or call is None
            or ("when" in fields and when is None)
            or ("compensate" in fields and compensate is None)
        ):
            return None
        return CallStep(info.id, call, info.output, when, compensate, position(draft.node))

    def _compensate(
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
            service = self._service(fields["service"], f"{where}.service")
        base = None
        if step_call is not None and service is step_service:
            base = step_call
        return self._call(fields, where, service, scope, base)

    def _service(self, node: Node | None, where: str) -> Service | None:
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

    def _call(
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


def _named_where(node: Node, fallback: str) -> str:
    """``steps.<id>`` when the step has a usable id, so messages name the step."""
    if isinstance(node, MappingNode):
        for key, value in pairs(node):
            if (
                isinstance(key, ScalarNode)
                and key.value == "id"
                and isinstance(value, ScalarNode)
                and _STEP_ID.fullmatch(str(value.value))
            ):
                return f"steps.{value.value}"
    return fallback
