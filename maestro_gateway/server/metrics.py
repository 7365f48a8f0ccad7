"""The Prometheus metrics of one gateway (DESIGN §14), in a registry of its own.

Where each figure comes from, so that the engine knows nothing of Prometheus:

- executions, steps and compensations: the events every execution of this process emits, seen
  through :class:`~maestro_gateway.server.runs.Runs` (its ``observer``) as they become durable;
- the gRPC server: a ``grpc.aio`` interceptor (:mod:`.grpc_metrics`, go-grpc-prometheus names);
- circuit breakers: read from the engine's ``BreakerRegistry`` when ``/metrics`` is scraped;
- journal commits: the journal's ``on_commit`` hook (SQLite and PostgreSQL; the in-memory
  journal commits nothing, so the histogram stays empty);
- signals: the gateway's ``Signals`` (``on_received``), for SendSignal and emit steps alike.

Label values are bounded: workflow names, step ids and endpoints come from the served
definitions (an endpoint's URL loses its user and password); a step inside a foreach, a loop or
a sub-workflow is labelled by its own step id (``lines[3].reserve`` counts as ``reserve``); codes and statuses are enumerations; signal
names are the callers', so only the first :data:`MAX_SIGNAL_NAMES` distinct ones are kept as
they are and the rest count under ``name="_other"``. No label ever holds an execution id, a
signal id or a payload value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationSucceeded,
    Event,
    EventSink,
    ExecutionFinished,
    ExecutionStarted,
    StepFailed,
    StepRetrying,
    StepStarted,
    StepSucceeded,
)
from maestro_gateway.journal.base import ExecutionRecord
from maestro_gateway.journal.batch import CommitTimed
from maestro_gateway.model.types import ForeachStep, LoopStep, Workflow, WorkflowStep
from maestro_gateway.redaction import redact
from maestro_gateway.resilience.breaker import BreakerRegistry, BreakerState
from maestro_gateway.server.grpc_metrics import GrpcServerMetrics

if TYPE_CHECKING:
    import grpc

    from maestro_gateway.server.service import GatewayService

EXECUTION_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0),
)
"""Seconds: executions last milliseconds to days (a wait step can hold one for hours)."""
STEP_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 3600.0),
)
COMMIT_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 5.0),
)
MAX_SIGNAL_NAMES = 100
"""Distinct signal names kept as label values; later ones count as ``_other``."""
OTHER = "_other"

BREAKER_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
"""``maestro_circuit_breaker_state``: 0 closed, 1 half-open, 2 open."""


def step_label(workflow: Workflow, path: str) -> str:
    """The step id that ``path`` runs, without the kinds that prefix it.

    ``reserve`` → ``reserve``; ``lines[3].reserve`` (a foreach or loop body) → ``reserve``;
    ``pay.charge`` (step ``charge`` of the sub-workflow run by step ``pay``) → ``charge``. Paths
    are read as the engine builds them (``maestro_gateway.engine.paths``): step ids may hold
    dots, so a prefix counts only where the definition has that kind of step.
    """
    rest = path
    while True:
        for i, char in enumerate(rest):
            if char == "[":
                kind = workflow.step(rest[:i])
                close = rest.find("].", i)
                if isinstance(kind, ForeachStep | LoopStep) and close >= 0:
                    rest = rest[close + 2 :]
                    break
            elif char == ".":
                kind = workflow.step(rest[:i])
                if isinstance(kind, WorkflowStep) and kind.child is not None:
                    workflow, rest = kind.child, rest[i + 1 :]
                    break
        else:
            return rest


class _WorkflowSeries:
    """The children of one workflow's execution metrics."""

    __slots__ = ("_metrics", "_name", "finished", "in_flight", "started")

    def __init__(self, metrics: GatewayMetrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self.started = metrics.executions_started.labels(name)
        self.in_flight = metrics.executions_in_flight.labels(name)
        self.finished: dict[str, tuple[Counter, Histogram]] = {}

    def finish(self, status: str, duration: float) -> None:
        pair = self.finished.get(status)
        if pair is None:
            metrics = self._metrics
            pair = self.finished[status] = (
                metrics.executions_finished.labels(self._name, status),
                metrics.execution_duration.labels(self._name, status),
            )
        pair[0].inc()
        pair[1].observe(duration)


class _StepSeries:
    """The children of one (workflow, step) pair's metrics."""

    __slots__ = ("_labels", "_metrics", "attempts", "compensations", "duration")

    def __init__(self, metrics: GatewayMetrics, workflow: str, step: str) -> None:
        self._metrics = metrics
        self._labels = (workflow, step)
        self.duration = metrics.step_duration.labels(workflow, step)
        self.attempts: dict[str, Counter] = {}
        self.compensations: dict[str, Counter] = {}

    def attempt(self, code: str) -> None:
        child = self.attempts.get(code)
        if child is None:
            child = self.attempts[code] = self._metrics.step_attempts.labels(*self._labels, code)
        child.inc()

    def compensation(self, status: str) -> None:
        child = self.compensations.get(status)
        if child is None:
            child = self.compensations[status] = self._metrics.compensations.labels(
                *self._labels, status
            )
        child.inc()


class _Tracker:
    """What one execution's events add to the metrics; then hands them on to ``then``.

    An attempt is counted when it ends: ``step_retrying`` (its error's code), ``step_succeeded``
    (``OK``) or ``step_failed`` after a ``step_started`` (a step that fails before any attempt,
    on its condition or its request template, made none).
    """

    __slots__ = ("_metrics", "_open", "_since", "_steps", "_then", "_workflow", "series")

    def __init__(
        self,
        metrics: GatewayMetrics,
        workflow: Workflow,
        series: _WorkflowSeries,
        then: EventSink | None,
    ) -> None:
        self._metrics = metrics
        self._workflow = workflow
        self.series = series
        self._then = then
        self._steps: dict[str, _StepSeries] = {}
        self._open: set[str] = set()
        self._since: dict[str, float] = {}

    def _step(self, path: str) -> _StepSeries:
        series = self._steps.get(path)
        if series is None:
            workflow = self._workflow
            label = path if "." not in path and "[" not in path else step_label(workflow, path)
            series = self._steps[path] = self._metrics.step_series(workflow.name, label)
        return series

    def __call__(self, event: Event) -> None:
        match event:
            case StepStarted():
                self._open.add(event.step_id)
                self._since.setdefault(event.step_id, event.time)
            case StepSucceeded():
                step = self._step(event.step_id)
                step.attempt("OK")
                step.duration.observe(event.duration)
                self._open.discard(event.step_id)
                self._since.pop(event.step_id, None)
            case StepRetrying():
                self._step(event.step_id).attempt(event.error.code.name)
                self._open.discard(event.step_id)
            case StepFailed():
                step = self._step(event.step_id)
                if event.step_id in self._open:
                    self._open.discard(event.step_id)
                    step.attempt(event.error.code.name)
                since = self._since.pop(event.step_id, None)
                if since is not None:
                    step.duration.observe(max(0.0, event.time - since))
            case ExecutionStarted():
                self.series.started.inc()
            case ExecutionFinished():
                result = event.result
                self.series.finish(result.status.value, result.duration)
            case CompensationSucceeded():
                self._step(event.step_id).compensation("SUCCEEDED")
            case CompensationFailed():
                self._step(event.step_id).compensation("FAILED")
        then = self._then
        if then is not None:
            then(event)


def endpoint_label(endpoint: str) -> str:
    """An endpoint as a label value: a URL without its user and password, and redacted."""
    if "@" in endpoint and "://" in endpoint:
        parts = urlsplit(endpoint)
        host = parts.netloc.rpartition("@")[2]
        endpoint = parts._replace(netloc=host).geturl()
    return redact(endpoint)


class _BreakerCollector(Collector):
    """``maestro_circuit_breaker_state``, read from the breakers at scrape time."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        self._breakers = breakers

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "maestro_circuit_breaker_state",
            "State of the circuit breaker of each downstream endpoint: 0 closed, 1 half-open, "
            "2 open (an open circuit past its reset period shows open until a call probes it).",
            labels=["endpoint"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for endpoint, breaker in self._breakers.items():
            family.add_metric([endpoint_label(endpoint)], BREAKER_VALUES[breaker.state])
        yield family


class GatewayMetrics:
    """Every metric of one gateway, in :attr:`registry` (its own, so that several gateways can
    share a process); :meth:`attach` connects it to a gateway's parts.

    Args:
        registry: where to register (default: a new one).
        process: also export the standard ``process_*`` metrics (CPU, memory, open files).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        # Process-wide, and only read at exposition: ``*_created`` series double the series
        # count, and dashboards made for go-grpc-prometheus have no use for them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.grpc = GrpcServerMetrics(reg)
        self.executions_started = Counter(
            "maestro_executions_started_total",
            "Executions started by this gateway.",
            ["workflow"],
            registry=reg,
        )
        self.executions_finished = Counter(
            "maestro_executions_finished_total",
            "Executions finished by this gateway, by final status.",
            ["workflow", "status"],
            registry=reg,
        )
        self.execution_duration = Histogram(
            "maestro_execution_duration_seconds",
            "Duration of finished executions (since their start, or their resumption here).",
            ["workflow", "status"],
            buckets=EXECUTION_BUCKETS,
            registry=reg,
        )
        self.executions_in_flight = Gauge(
            "maestro_executions_in_flight",
            "Executions running in this gateway now (compensating ones included).",
            ["workflow"],
            registry=reg,
        )
        self.step_attempts = Counter(
            "maestro_step_attempts_total",
            "Attempts of steps, by outcome (OK, or the gRPC code name of the failure).",
            ["workflow", "step", "code"],
            registry=reg,
        )
        self.step_duration = Histogram(
            "maestro_step_duration_seconds",
            "Duration of steps that ended (retries and their delays included).",
            ["workflow", "step"],
            buckets=STEP_BUCKETS,
            registry=reg,
        )
        self.compensations = Counter(
            "maestro_compensations_total",
            "Compensations run, by outcome (SUCCEEDED or FAILED).",
            ["workflow", "step", "status"],
            registry=reg,
        )
        self.journal_commit = Histogram(
            "maestro_journal_commit_seconds",
            "Duration of the journal's group commits (one transaction each, fsync included).",
            buckets=COMMIT_BUCKETS,
            registry=reg,
        )
        self.signals_received = Counter(
            "maestro_signals_received_total",
            "Signals received (SendSignal and emit steps); duplicate=true for a repeated one.",
            ["name", "duplicate"],
            registry=reg,
        )
        if process:
            ProcessCollector(registry=reg)
        self._workflows: dict[str, _WorkflowSeries] = {}
        self._steps: dict[tuple[str, str], _StepSeries] = {}
        self._live: dict[str, _WorkflowSeries] = {}
        self._signal_names: set[str] = set()

    def interceptors(self) -> tuple[grpc.aio.ServerInterceptor, ...]:
        """The interceptors to build the gateway's ``grpc.aio`` server with."""
        return (self.grpc.interceptor(),)

    def attach(self, service: GatewayService) -> None:
        """Observe ``service``'s executions, signals, journal commits and circuit breakers."""
        service.runs.observer = self
        service.signals.on_received = self.signal_received
        journal = service.journal
        if isinstance(journal, CommitTimed):
            journal.on_commit = self.journal_commit.observe
        self.registry.register(_BreakerCollector(service.engine.breakers))

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    # -- the observer of Runs ------------------------------------------------------------------

    def watch(
        self, workflow: Workflow, record: ExecutionRecord, then: EventSink | None
    ) -> EventSink:
        """The sink of an execution starting (or resuming) here; it hands events on to ``then``."""
        series = self._workflows.get(workflow.name)
        if series is None:
            series = self._workflows[workflow.name] = _WorkflowSeries(self, workflow.name)
        series.in_flight.inc()
        self._live[record.execution_id] = series
        return _Tracker(self, workflow, series, then)

    def done(self, execution_id: str) -> None:
        """The execution's task ended (finished, handed over or cancelled)."""
        series = self._live.pop(execution_id, None)
        if series is not None:
            series.in_flight.dec()

    def step_series(self, workflow: str, step: str) -> _StepSeries:
        """The metric children of ``step`` of ``workflow``, made on first use."""
        key = (workflow, step)
        series = self._steps.get(key)
        if series is None:
            series = self._steps[key] = _StepSeries(self, workflow, step)
        return series

    # -- signals -------------------------------------------------------------------------------

    def signal_received(self, name: str, duplicate: bool) -> None:
        """Count a received signal (bounded names: see the module docstring)."""
        names = self._signal_names
        if name not in names:
            if len(names) >= MAX_SIGNAL_NAMES:
                name = OTHER
            else:
                names.add(name)
        self.signals_received.labels(name, "true" if duplicate else "false").inc()
