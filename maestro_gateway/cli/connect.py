"""``maestro validate --connect``: check workflows against the live services' gRPC schemas.

For every gRPC service a call step or compensation uses, the descriptors are loaded from the
service's configured source (server reflection, a protoset or ``.proto`` files), bounded by a
timeout. Then, statically, for every gRPC call and compensation:

* the method resolves (a bare name must be unique across the target's services);
* every input key names a field of the request message, recursively, and literal values fit the
  field types (``schema_check.RequestChecker``);
* every template selection ``<output>.<field>…`` / ``steps.<id>.output.<field>…`` on the output
  of a gRPC step names real fields of its response message (``schema_check.ReferenceChecker``).

Call steps are found at every nesting level (foreach and loop bodies, switch branches,
parallel groups inside them, DESIGN §12), and selections are also checked in the templates the
kinds themselves hold (``foreach``, ``concurrency``, a branch's ``when``, a loop's ``until``, a
sub-workflow's ``input``, a ``fail`` message). The sub-workflows a workflow runs are checked
too, each in its own file, once however many workflows run it.

Problems are ``Diagnostic``s at the YAML node concerned, found by re-walking the file's node
tree (the immutable ``Workflow`` keeps step positions only; step ids are unique in a file, nested
steps included, so the nodes are found by id). HTTP services have no schema and are not checked.
A service whose descriptors cannot be loaded is one diagnostic at its ``endpoint`` (or
``descriptors``) node; the calls to it are then not checked further.

The protocol chosen for each gRPC service (its own methods, or Maestro.go's envelope; DESIGN
§9) is reported as a note, ``file:line:col: note: services.<name>: protocol …`` at the
service's name, on stderr: it is information, not a problem. A call that goes through the
envelope is not checked against a schema (its input travels as a ``google.protobuf.Struct``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf.descriptor import MethodDescriptor

from maestro_gateway.cli.schema_check import (
    OutputSchema,
    ReferenceChecker,
    RequestChecker,
    is_template,
    is_whole_template,
)
from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError, Diagnostic, ResolutionError
from maestro_gateway.model.context import LoadContext
from maestro_gateway.model.types import (
    Call,
    CallStep,
    GrpcMethod,
    ReflectionSource,
    Service,
    Workflow,
    WorkflowStep,
    walk,
)
from maestro_gateway.model.yamlnodes import (
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    compose,
    is_null,
    kind,
    pairs,
)
from maestro_gateway.transports.factory import TransportKey, transport_key
from maestro_gateway.transports.grpc import GrpcTransport, Schema, route

DEFAULT_TIMEOUT = 5.0
"""Default bound, in seconds, of loading one service's descriptors."""


class DescriptorLoader:
    """Loads and caches descriptors per distinct downstream, each load bounded by ``timeout``.

    Use as an async context manager (or call ``close``): it owns the channels it opens.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._transports: dict[TransportKey, GrpcTransport] = {}
        self._results: dict[TransportKey, asyncio.Task[Schema | CallError]] = {}

    async def load(self, service: Service) -> Schema | CallError:
        """The descriptors and protocol of ``service``, or the error that prevented loading them."""
        key = transport_key(service)
        task = self._results.get(key)
        if task is None:
            transport = GrpcTransport(service, resolve_timeout=self.timeout)
            self._transports[key] = transport
            task = self._results[key] = asyncio.ensure_future(self._load(transport))
        return await task

    async def _load(self, transport: GrpcTransport) -> Schema | CallError:
        try:
            return await transport.schema(wait=self.timeout)
        except CallError as exc:
            return exc

    async def close(self) -> None:
        """Close every channel opened."""
        transports = list(self._transports.values())
        self._transports.clear()
        for transport in transports:
            await transport.close()

    async def __aenter__(self) -> DescriptorLoader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass
class _StepNodes:
    """The YAML nodes of one step: its keys, and its compensation's keys."""

    node: Node
    fields: dict[str, Node]
    compensate: dict[str, Node] = field(default_factory=dict)


def _fields(node: Node | None) -> dict[str, Node]:
    if not isinstance(node, MappingNode):
        return {}
    return {str(k.value): v for k, v in pairs(node) if isinstance(k, ScalarNode)}


def _elements(node: Node | None) -> list[Node]:
    return list(node.value) if isinstance(node, SequenceNode) else []


def _nested_lists(fields: dict[str, Node]) -> list[Node | None]:
    """The step lists a step's node holds: a group's children, a body, each branch's steps."""
    if "parallel" in fields:
        return [fields["parallel"]]
    if "foreach" in fields:
        return [fields.get("steps")]
    if "loop" in fields:
        return [_fields(fields["loop"]).get("steps")]
    if "switch" in fields:
        return [_fields(entry).get("steps") for entry in _elements(fields["switch"])]
    return []


def _step_nodes(root: Node) -> dict[str, _StepNodes]:
    """Every step's nodes by step id, at every nesting level (ids are unique in the file)."""
    out: dict[str, _StepNodes] = {}
    pending = [_fields(root).get("steps")]
    while pending:
        for element in _elements(pending.pop()):
            fields = _fields(element)
            pending.extend(_nested_lists(fields))
            id_node = fields.get("id")
            if isinstance(id_node, ScalarNode):
                compensate = _fields(fields.get("compensate"))
                out[str(id_node.value)] = _StepNodes(element, fields, compensate)
    return out


def with_children(workflows: Iterable[Workflow]) -> list[Workflow]:
    """``workflows`` and every sub-workflow they run (at any depth), each once, in that order."""
    out: dict[int, Workflow] = {}
    pending = list(workflows)
    while pending:
        workflow = pending.pop(0)
        if id(workflow) in out:
            continue
        out[id(workflow)] = workflow
        pending.extend(
            s.child for s in walk(workflow.steps) if isinstance(s, WorkflowStep) and s.child
        )
    return list(out.values())


class _WorkflowCheck:
    """The connected check of one workflow."""

    def __init__(self, workflow: Workflow, loader: DescriptorLoader) -> None:
        self.workflow = workflow
        self.loader = loader
        self.notes: list[Diagnostic] = []
        """One note per gRPC service whose schema loaded: the protocol chosen, and why."""
        self.ctx = LoadContext(workflow.path, workflow.source, "", check_files=False)
        root = compose(workflow.source)
        assert root is not None  # the workflow loaded from this very text
        self.root = root
        self.steps = _step_nodes(root)
        self.requests = RequestChecker(self.ctx)
        self.outputs: dict[str, OutputSchema] = {}
        self.by_step: dict[str, OutputSchema] = {}

    async def run(self) -> list[Diagnostic]:
        calls = [
            (step, call)
            for step in self.workflow.call_steps()
            for call in (step.call, step.compensate)
            if call is not None and call.service.type == "grpc"
        ]
        used = {call.service.name: call.service for _, call in calls}
        loaded = await self._load_all(used.values())
        for step, call in calls:
            schema = loaded.get(call.service.name)
            if schema is not None:
                self._check_call(step, call, schema)
        self._check_references()
        return self.ctx.diagnostics

    async def _load_all(self, services: Iterable[Service]) -> dict[str, Schema]:
        ordered = sorted(services, key=lambda s: s.name)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.loader.load(s)) for s in ordered]
        out: dict[str, Schema] = {}
        for service, task in zip(ordered, tasks, strict=True):
            result = task.result()
            if isinstance(result, CallError):
                self._unloadable(service, result)
                continue
            out[service.name] = result
            position = service.position
            self.notes.append(
                Diagnostic(
                    self.workflow.path,
                    position.line,
                    position.column,
                    f"note: services.{service.name}: protocol {result.protocol} ({result.reason})",
                )
            )
            if result.problem is not None:
                self._envelope_unusable(service, result.problem)
        return out

    def _envelope_unusable(self, service: Service, problem: str) -> None:
        fields = _fields(_fields(_fields(self.root).get("services")).get(service.name))
        message = f"services.{service.name}: its envelope is not Maestro.go's: {problem}"
        node = fields.get("endpoint")
        if node is None:
            self.ctx.error_at(service.position, message)
        else:
            self.ctx.error(node, message)

    def _unloadable(self, service: Service, error: CallError) -> None:
        fields = _fields(_fields(_fields(self.root).get("services")).get(service.name))
        reflection = isinstance(service.descriptors, ReflectionSource)
        node = fields.get("endpoint") if reflection else fields.get("descriptors")
        message = error.message
        if error.code == Code.DEADLINE_EXCEEDED:
            message = f"no answer within {self.loader.timeout:g}s"
        prefix = f"cannot load descriptors from {service.endpoint}: "
        if not reflection:
            prefix = "cannot load descriptors: "
        if not message.startswith("cannot load descriptors") and error.code != Code.UNIMPLEMENTED:
            message = prefix + message
        where = f"services.{service.name}"
        if node is None:
            self.ctx.error_at(service.position, f"{where}: {message}")
        else:
            self.ctx.error(node, f"{where}: {message}")

    def _check_call(self, step: CallStep, call: Call, schema: Schema) -> None:
        nodes = self.steps.get(step.id)
        if nodes is None:
            return
        compensating = call is step.compensate
        fields = nodes.compensate if compensating else nodes.fields
        where = f"steps.{step.id}.compensate" if compensating else f"steps.{step.id}"
        assert isinstance(call.method, GrpcMethod)
        try:
            method = route(schema, call.method.text)
        except ResolutionError as exc:
            self.ctx.error(fields.get("method", nodes.node), f"{where}.method: {exc.message}")
            return
        if method is None:
            return  # through the envelope: no schema to check against
        if not compensating:
            response = None if method.server_streaming else method.output_type
            output = OutputSchema(step.id, method.full_name, response)
            self.outputs[step.output] = output
            self.by_step[step.id] = output
        if "input" in fields:
            self._check_input(fields["input"], method, f"{where}.input")

    def _check_input(self, node: Node, method: MethodDescriptor, where: str) -> None:
        request = method.input_type
        path = f"{method.containing_service.full_name}/{method.name}"
        if is_null(node) or (is_template(node) and is_whole_template(str(node.value))):
            return
        if not method.client_streaming:
            self.requests.message(node, request, where)
            return
        if not isinstance(node, SequenceNode):
            self.ctx.error(
                node,
                f"{where}: {path} is client-streaming: its input must be a list of "
                f"{request.full_name}, got {kind(node)}",
            )
            return
        for i, element in enumerate(node.value):
            self.requests.message(element, request, f"{where}[{i}]")

    def _check_references(self) -> None:
        if not self.outputs:
            return
        refs = ReferenceChecker(self.ctx, self.outputs, self.by_step)
        for step in walk(self.workflow.steps):
            nodes = self.steps.get(step.id)
            if nodes is None:
                continue
            where = f"steps.{step.id}"
            fields = nodes.fields
            if isinstance(step, CallStep):
                self._call_references(refs, nodes, where)
            else:
                self._kind_references(refs, fields, where)
            when = fields.get("when")
            if isinstance(when, ScalarNode):
                refs.text(when, f"{where}.when", bare=True)
        output = _fields(self.root).get("output")
        if output is not None:
            refs.value(output, "output")

    def _call_references(self, refs: ReferenceChecker, nodes: _StepNodes, where: str) -> None:
        """The selections in a call step's and its compensation's templates."""
        for fields, at in ((nodes.fields, where), (nodes.compensate, f"{where}.compensate")):
            for key in ("input", "metadata", "headers"):
                if key in fields:
                    refs.value(fields[key], f"{at}.{key}")
            method = fields.get("method")
            if isinstance(method, ScalarNode) and is_template(method):
                refs.text(method, f"{at}.method")

    def _kind_references(self, refs: ReferenceChecker, fields: dict[str, Node], where: str) -> None:
        """The selections in the templates a kind holds itself (its body steps are checked apart)."""
        for key in ("foreach", "concurrency", "input"):
            if key in fields:
                refs.value(fields[key], f"{where}.{key}")
        for b, entry in enumerate(_elements(fields.get("switch"))):
            when = _fields(entry).get("when")
            if isinstance(when, ScalarNode):
                refs.text(when, f"{where}.switch[{b}].when", bare=True)
        until = _fields(fields.get("loop")).get("until")
        if isinstance(until, ScalarNode):
            refs.text(until, f"{where}.loop.until", bare=True)
        message = _fields(fields.get("fail")).get("message")
        if isinstance(message, ScalarNode):
            refs.text(message, f"{where}.fail.message")


def print_note(line: str) -> None:
    """Print a protocol note on stderr (the default ``report``)."""
    print(line, file=sys.stderr)


async def check_workflow(
    workflow: Workflow,
    loader: DescriptorLoader,
    *,
    report: Callable[[str], None] | None = print_note,
) -> list[Diagnostic]:
    """Check one loaded workflow against its services' live schemas.

    Args:
        workflow: a workflow that passed ``load_file``/``load_string`` (its ``source`` is
            re-parsed for positions).
        loader: loads (and shares) the services' descriptors.
        report: receives one note line per gRPC service saying which protocol was chosen
            and why (None: no notes).

    Returns:
        Every problem found, sorted; empty when the workflow fits its services.
    """
    check = _WorkflowCheck(workflow, loader)
    problems = sorted(await check.run())
    if report is not None:
        for note in sorted(check.notes):
            report(str(note))
    return problems


async def check_workflows(
    workflows: Sequence[Workflow],
    *,
    load_timeout: float = DEFAULT_TIMEOUT,
    report: Callable[[str], None] | None = print_note,
) -> list[Diagnostic]:
    """Check several workflows concurrently, loading each distinct service's descriptors once.

    Args:
        workflows: loaded workflows; the sub-workflows linked to their ``workflow`` steps
            (``maestro_gateway.model.bundle``) are checked with them, each once.
        load_timeout: bound of loading one service's descriptors, in seconds.
        report: receives the protocol notes of every workflow, sorted by file and position
            (default: printed on stderr; None: no notes).

    Returns:
        Every problem of every workflow (sub-workflows included, in their own files), sorted.
    """
    async with DescriptorLoader(load_timeout) as loader, asyncio.TaskGroup() as group:
        checks = [_WorkflowCheck(w, loader) for w in with_children(workflows)]
        tasks = [group.create_task(c.run()) for c in checks]
    if report is not None:
        for note in sorted(n for c in checks for n in c.notes):
            report(str(note))
    return sorted(d for task in tasks for d in task.result())
