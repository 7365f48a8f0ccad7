"""The typed, immutable workflow definition.

Everything here is produced by the loader (``maestro_gateway.model.loader``) after every static
check has passed: downstream layers trust it and never re-validate. Durations are seconds as
floats. Templates are compiled ``maestro_gateway.expr.Template`` objects. Defaults that depend on
other fields (a step's effective timeout and retry policy) are resolved at load time, so the
engine reads one value per concern.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from maestro_gateway.codes import DEFAULT_RETRY_CODES, Code
from maestro_gateway.errors import Diagnostic

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

    from maestro_gateway.expr import Condition, Template


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in the workflow file."""

    line: int
    column: int


NOWHERE = Position(0, 0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed call is retried (DESIGN §4).

    Attributes:
        attempts: total calls, the first included (1 means no retry).
        backoff: ``exponential`` multiplies the delay by ``multiplier`` each retry; ``constant``
            keeps ``initial``.
        initial: delay before the first retry, in seconds.
        multiplier: growth factor of exponential backoff.
        max: upper bound of any single delay, in seconds.
        jitter: full jitter (a uniform draw in [0, delay]) when true.
        codes: the codes that are retried; any other failure is permanent.
    """

    attempts: int = 1
    backoff: Literal["exponential", "constant"] = "exponential"
    initial: float = 0.1
    multiplier: float = 2.0
    max: float = 5.0
    jitter: bool = True
    codes: frozenset[Code] = DEFAULT_RETRY_CODES


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    """Open after ``failures`` consecutive infrastructure failures; probe again after ``reset`` s."""

    failures: int = 5
    reset: float = 30.0


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Client TLS towards a gRPC service. Paths are absolute (resolved against the workflow file).

    ``ca`` None means the system roots; ``cert``/``key`` set together enable mutual TLS.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class ReflectionSource:
    """Descriptors come from the service's gRPC server reflection (v1, then v1alpha)."""


@dataclass(frozen=True, slots=True)
class ProtosetSource:
    """Descriptors come from a FileDescriptorSet file (``protoc --include_imports -o``)."""

    path: str


@dataclass(frozen=True, slots=True)
class ProtoFilesSource:
    """Descriptors are compiled from ``.proto`` files with the given import paths."""

    files: tuple[str, ...]
    import_paths: tuple[str, ...] = ()


DescriptorSource = ReflectionSource | ProtosetSource | ProtoFilesSource

ServiceProtocol = Literal["auto", "grpc", "maestro-go"]
"""How a gRPC service's methods are called (DESIGN §9): its own methods (``grpc``), through
Maestro.go's envelope ``maestro.v1.MaestroService`` (``maestro-go``), or decided by the
gateway when the service's descriptors first load (``auto``)."""


DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""A service's default ``max_response_bytes``."""


@dataclass(frozen=True, slots=True)
class Service:
    """A downstream service the workflow calls.

    Attributes:
        name: the key under ``services``.
        type: ``grpc`` or ``http``.
        endpoint: a gRPC target (``host:port``, ``dns:///…``, ``unix:…``) or an HTTP base URL.
        timeout: default per-attempt deadline in seconds; None means only the workflow and caller
            deadlines bound the call.
        retry: the service's retry policy (steps override it field by field).
        circuit_breaker: None disables the breaker for calls made through this definition.
        pool: number of gRPC channels (round-robin); HTTP uses one pooled client.
        tls: client TLS (gRPC) or None for plaintext.
        metadata: gRPC metadata or HTTP headers; values are templates (static ones are constants).
        descriptors: where gRPC method descriptors come from.
        protocol: how gRPC methods are called (see ``ServiceProtocol``); always ``auto`` for HTTP.
        max_response_bytes: the largest response accepted (gRPC: one message; HTTP: the body);
            a larger one fails the call with RESOURCE_EXHAUSTED naming the service.
    """

    name: str
    type: Literal["grpc", "http"]
    endpoint: str
    timeout: float | None = None
    retry: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerPolicy | None = None
    pool: int = 1
    tls: TLSConfig | None = None
    metadata: Mapping[str, Template] = field(default_factory=dict)
    descriptors: DescriptorSource = ReflectionSource()
    protocol: ServiceProtocol = "auto"
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    position: Position = NOWHERE


@dataclass(frozen=True, slots=True)
class GrpcMethod:
    """A gRPC method reference: ``Name`` (bare), ``pkg.Svc/Method`` or ``pkg.Svc.Method``.

    ``service`` is the fully-qualified service name, or None for a bare name resolved against
    the target's descriptors on first use.
    """

    service: str | None
    name: str

    @property
    def text(self) -> str:
        """The canonical form: ``pkg.Svc/Method`` or the bare name."""
        return f"{self.service}/{self.name}" if self.service else self.name


@dataclass(frozen=True, slots=True)
class HttpMethod:
    """An HTTP method reference ``VERB /path``; the path may hold templates.

    ``source`` is the path as written in the file (for diagrams and messages). A method written
    as a bare name (Maestro.go's form, ``SendOrderConfirmation``) is ``POST /api/<name in lower
    case>``, and ``source`` is that path.
    """

    verb: str
    path: Template
    source: str = ""


MethodRef = GrpcMethod | HttpMethod


@dataclass(frozen=True, slots=True)
class Call:
    """What one call does: the service, the method, the request template and call options.

    Shared by call steps and compensations. ``metadata``, ``timeout`` and ``retry`` are already
    the effective values (the step's own over the service's; for metadata, key by key).
    """

    service: Service
    method: MethodRef
    input: Template
    metadata: Mapping[str, Template]
    timeout: float | None
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class CallStep:
    """A step that calls one method of one service.

    Attributes:
        id: unique among all steps of the workflow file (nested ones included).
        call: what to call and how.
        output: the name of the step's output in the context (defaults to ``id``).
        when: a condition; the step is SKIPPED when it yields false.
        compensate: the call that undoes this step, or None.
        continue_on_error: a failure (after the retries) is reported and the execution goes on
            with a null output (DESIGN §12).
    """

    id: str
    call: Call
    output: str
    when: Condition | None = None
    compensate: Call | None = None
    position: Position = NOWHERE
    continue_on_error: bool = False

    def children(self) -> tuple[Step, ...]:
        """The steps nested in this one: none."""
        return ()


@dataclass(frozen=True, slots=True)
class ParallelStep:
    """Children started at once; completes when all have, fails (cancelling the rest) when one does."""

    id: str
    steps: tuple[Step, ...]
    position: Position = NOWHERE

    def children(self) -> tuple[Step, ...]:
        """The steps nested in this one, in file order."""
        return self.steps


DEFAULT_FOREACH_CONCURRENCY = 10
DEFAULT_MAX_ITEMS = 10_000
MAX_NESTING = 8
"""How deeply kinds may nest (DESIGN §12)."""


@dataclass(frozen=True, slots=True)
class ForeachStep:
    """Runs ``steps`` once per item of a list computed when the step starts (DESIGN §12).

    Attributes:
        items: evaluates to the list.
        steps: the body; its paths are ``<id>[<index>].<body step id>``.
        output: the name of the step's output: a list, in item order, of each iteration's map
            of body outputs.
        item_name: the item's name in the body (``as``).
        index_name: its 0-based position's name (``index_as``).
        concurrency: at most this many iterations at a time; a template evaluated once, when
            the step starts, to an integer ≥ 1.
        max_items: more items fail the step with INVALID_ARGUMENT.
    """

    id: str
    items: Template
    steps: tuple[Step, ...]
    output: str
    item_name: str = "item"
    index_name: str = "index"
    concurrency: Template | None = None
    """None: ``DEFAULT_FOREACH_CONCURRENCY``."""
    max_items: int = DEFAULT_MAX_ITEMS
    when: Condition | None = None
    continue_on_error: bool = False
    position: Position = NOWHERE
    body_outputs: tuple[str, ...] = field(init=False, default=(), compare=False, repr=False)
    """The output names of the body's level (:func:`level_outputs`): an iteration's map."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "body_outputs", level_outputs(self.steps))

    def children(self) -> tuple[Step, ...]:
        """The body's steps, in file order."""
        return self.steps


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """Runs another workflow of the same gateway inside this execution (DESIGN §12).

    Attributes:
        workflow: the child's name.
        input: the child's input (checked against its schema when the step starts).
        output: the name of the child's workflow output in the context.
        child: the child workflow, linked once every file loaded together is known (None
            until then: ``maestro_gateway.model.bundle``).
    """

    id: str
    workflow: str
    input: Template
    output: str
    when: Condition | None = None
    continue_on_error: bool = False
    position: Position = NOWHERE
    child: Workflow | None = field(default=None, compare=False, repr=False)

    def children(self) -> tuple[Step, ...]:
        """None: the child's steps belong to the child's own definition."""
        return ()


@dataclass(frozen=True, slots=True)
class SwitchBranch:
    """One branch of a switch: taken when ``when`` holds (always when None: the default)."""

    when: Condition | None
    steps: tuple[Step, ...]
    position: Position = NOWHERE


@dataclass(frozen=True, slots=True)
class SwitchStep:
    """Runs the first branch whose condition holds; the steps of the others are SKIPPED.

    ``output`` names the 0-based index of the branch taken (null when none was).
    """

    id: str
    branches: tuple[SwitchBranch, ...]
    output: str
    when: Condition | None = None
    position: Position = NOWHERE

    def children(self) -> tuple[Step, ...]:
        """Every branch's steps, branch by branch, in file order."""
        return tuple(step for branch in self.branches for step in branch.steps)


@dataclass(frozen=True, slots=True)
class LoopStep:
    """A bounded do-while: ``steps`` run, then ``until`` is evaluated, up to ``max_iterations``.

    Paths of the body are ``<id>[<iteration>].<body step id>``; after the loop the body's
    outputs are those of the last iteration, and ``output`` names that iteration's map of them.
    """

    id: str
    steps: tuple[Step, ...]
    until: Condition
    max_iterations: int
    output: str
    delay: float = 0.0
    index_name: str = "iteration"
    when: Condition | None = None
    position: Position = NOWHERE
    body_outputs: tuple[str, ...] = field(init=False, default=(), compare=False, repr=False)
    """The output names of the body's level (:func:`level_outputs`): an iteration's map."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "body_outputs", level_outputs(self.steps))

    def children(self) -> tuple[Step, ...]:
        """The body's steps, in file order."""
        return self.steps


@dataclass(frozen=True, slots=True)
class FailStep:
    """Ends the execution with ``code`` and the rendered ``message`` (the saga runs)."""

    id: str
    code: Code
    message: Template
    when: Condition | None = None
    position: Position = NOWHERE

    @property
    def output(self) -> None:
        """A fail step has no output."""
        return None

    def children(self) -> tuple[Step, ...]:
        """None."""
        return ()


@dataclass(frozen=True, slots=True)
class WaitStep:
    """Waits for a signal (DESIGN §13); ``output`` names the signal that satisfied it.

    Attributes:
        signal: the signal name waited for.
        match: the correlation, over the step's scope and ``signal``, or None (any signal of
            that name).
        timeout: seconds from the step's start; then it fails with DEADLINE_EXCEEDED.
    """

    id: str
    signal: str
    timeout: float
    output: str
    match: Condition | None = None
    when: Condition | None = None
    position: Position = NOWHERE

    def children(self) -> tuple[Step, ...]:
        """None."""
        return ()


@dataclass(frozen=True, slots=True)
class EmitStep:
    """Sends a signal (DESIGN §13); ``output`` names the stored signal.

    Attributes:
        signal: the signal name.
        params: its parameters (a template yielding an object).
        signal_id: its id, or None for ``<execution_id>.<step path>`` (a resumed execution never
            emits twice).
    """

    id: str
    signal: str
    params: Template
    output: str
    signal_id: Template | None = None
    when: Condition | None = None
    position: Position = NOWHERE

    def children(self) -> tuple[Step, ...]:
        """None."""
        return ()


Step = (
    CallStep
    | ParallelStep
    | ForeachStep
    | WorkflowStep
    | SwitchStep
    | LoopStep
    | FailStep
    | WaitStep
    | EmitStep
)
"""A step of any kind. A kind is one class here (with ``children()``, the steps it nests) and one
executor function registered in ``maestro_gateway.engine.kinds``."""

StatefulStep = (
    CallStep | ForeachStep | WorkflowStep | SwitchStep | LoopStep | FailStep | WaitStep | EmitStep
)
"""A step with a state, events and a result of its own (every kind but ``parallel``)."""

PREFIXING = (ForeachStep, LoopStep, WorkflowStep)
"""The kinds whose body steps' paths carry a prefix (``lines[2].reserve``, ``pay.charge``)."""


def output_name(step: Step) -> str | None:
    """The context name of ``step``'s output (None for parallel groups and fail steps)."""
    return None if isinstance(step, ParallelStep) else step.output


def walk(steps: Sequence[Step]) -> Iterator[Step]:
    """Every step of ``steps`` and of the steps they nest, depth first, in file order."""
    for step in steps:
        yield step
        nested = step.children()
        if nested:
            yield from walk(nested)


def level(steps: Sequence[Step]) -> Iterator[Step]:
    """The steps of one path level: ``steps`` and what parallel groups and switches nest in them.

    These share the paths' prefix: not the bodies of foreach, loop and workflow steps.
    """
    for step in steps:
        yield step
        if isinstance(step, (ParallelStep, SwitchStep)):
            yield from level(step.children())


def level_outputs(steps: Sequence[Step]) -> tuple[str, ...]:
    """The output names of the steps of one path level (:func:`level`), in file order."""
    names = (output_name(s) for s in level(steps))
    return tuple(name for name in names if name is not None)


SIGNAL_NAME = r"[A-Za-z0-9_./-]+"
"""What a signal name may hold (DESIGN §13): letters, digits and ``_ . - /``."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """A signal that starts an execution of the workflow (DESIGN §13).

    Attributes:
        signal: the signal name it subscribes to.
        when: a condition over ``signal`` (``{signal_id, name, params, time}``), or None.
        input: the execution input, a template over ``signal`` (None: the signal's params).
        dedup: a template over ``signal``: one execution per value (id ``<workflow>:<value>``);
            None: one per signal (id ``<workflow>:<signal_id>``).
    """

    signal: str
    when: Condition | None = None
    input: Template | None = None
    dedup: Template | None = None
    position: Position = NOWHERE


@dataclass(frozen=True, slots=True)
class Workflow:
    """A validated workflow.

    Attributes:
        name: letters, digits, ``_ . -``.
        timeout: whole-execution deadline in seconds, or None.
        compensation_timeout: the budget of the rollback, in seconds.
        input_schema: a JSON Schema (already checked to be valid) or None.
        services: by name.
        steps: top-level steps in file order.
        output: the workflow output template, or None for the map of every step output.
        triggers: the signals that start executions of it.
        source: the YAML text.
        path: the file it was loaded from, as given (or ``<string>``).
        warnings: problems that did not stop it from loading (an unset environment variable
            when loaded with ``env="warn"``).
    """

    name: str
    version: str = ""
    description: str = ""
    timeout: float | None = None
    compensation_timeout: float = 60.0
    input_schema: Mapping[str, Any] | None = None
    services: Mapping[str, Service] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    output: Template | None = None
    triggers: tuple[Trigger, ...] = ()
    source: str = ""
    path: str = "<string>"
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False, repr=False)
    input_validator: Validator | None = field(init=False, default=None, compare=False, repr=False)
    """Derived from ``input_schema`` when the workflow is built (checking inputs is per request)."""
    _call_steps: tuple[CallStep, ...] = field(init=False, default=(), compare=False, repr=False)
    _top: tuple[StatefulStep, ...] = field(init=False, default=(), compare=False, repr=False)
    _outputs: tuple[str, ...] = field(init=False, default=(), compare=False, repr=False)
    _index: Mapping[str, Step] = field(init=False, default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Read by every execution; the steps never change, so the walks are done once.
        calls = tuple(s for s in walk(self.steps) if isinstance(s, CallStep))
        object.__setattr__(self, "_call_steps", calls)
        top = tuple(s for s in level(self.steps) if not isinstance(s, ParallelStep))
        object.__setattr__(self, "_top", top)
        object.__setattr__(self, "_outputs", level_outputs(self.steps))
        object.__setattr__(self, "_index", {s.id: s for s in walk(self.steps)})
        if self.input_schema is not None:
            from maestro_gateway.model.schema import compile_validator

            object.__setattr__(self, "input_validator", compile_validator(self.input_schema))

    def call_steps(self) -> tuple[CallStep, ...]:
        """Every call step in file order, nested ones included (see :func:`walk`)."""
        return self._call_steps

    def top_steps(self) -> tuple[StatefulStep, ...]:
        """The steps whose paths are their ids (:func:`level` of ``steps``), parallel groups aside."""
        return self._top

    def outputs(self) -> tuple[str, ...]:
        """The output names of the top-level steps (the default workflow output's keys)."""
        return self._outputs

    def step(self, step_id: str) -> Step | None:
        """The step with id ``step_id`` (ids are unique in the file, nested steps included)."""
        return self._index.get(step_id)
