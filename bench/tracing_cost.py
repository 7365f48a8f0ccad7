"""What OpenTelemetry tracing costs per workflow (DESIGN §14), measured through the gateway.

Two in-process gateways serve the benchmark workflow (``bench/workflows/bench_grpc.yaml``: four
call steps, two in parallel) over ``bench.engine_cpu``'s canned transports (no I/O
downstream), one with tracing off (no ``OTEL_*`` variable: what every gateway runs by default)
and one with tracing on: the SDK's ``TracerProvider`` and ``BatchSpanProcessor`` (as ``maestro
serve`` builds them) feeding an exporter that encodes every batch into the OTLP protobuf
request, as the OTLP exporters do, and drops it (no collector: the network is not the
gateway's cost). A gRPC client in the same process calls ``Run``, ``Execute`` and 64 ``Run`` at a
time on each in turn, with a caller ``traceparent``; the figure is process CPU
(``time.process_time``, the exporter's thread included) per execution. With tracing on an
execution makes 9 spans: the server span, 4 step spans and 4 attempt spans.

Also measured, the engine alone (as ``bench/engine_cpu.py``): an execution without a trace, and
with its spans (the execution's span made and ended around it), to separate the spans' cost
from the gRPC server's noise on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from maestro.v1 import gateway_pb2_grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.engine_cpu import INPUT, CannedTransports, load_workflow
from bench.metrics_cost import CASES, medians, off_and_on
from maestro_gateway.engine.executor import Engine, new_record
from maestro_gateway.server.otel import Tracing

CALLER = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
SPANS_PER_EXECUTION = 9


class EncodingSink(SpanExporter):
    """Encodes each batch as the OTLP exporters do, counts it, and drops it."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.bytes += len(encode_spans(spans).SerializeToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def tracing() -> tuple[Tracing, EncodingSink]:
    sink = EncodingSink()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(sink))
    return Tracing(provider), sink


class _Traced:
    """A stub whose calls all carry the caller's ``traceparent``."""

    def __init__(self, stub: gateway_pb2_grpc.GatewayStub) -> None:
        self._stub = stub

    def Run(self, request: Any, **kwargs: Any) -> Any:
        return self._stub.Run(request, metadata=CALLER, **kwargs)

    def Execute(self, request: Any, **kwargs: Any) -> Any:
        return self._stub.Execute(request, metadata=CALLER, **kwargs)


async def measure(n: int, repeats: int) -> dict[str, Any]:
    """µs of process CPU per execution for each case, tracing off and on (median of repeats)."""
    traced, sink = tracing()

    def flush() -> None:  # the exporter's thread works within the measured window
        traced.provider.force_flush()

    # Shutting the gateway down shuts the provider down, which exports the rest.
    samples = await off_and_on(n, repeats, {"tracing": traced}, wrap=_Traced, after_on=flush)
    out: dict[str, Any] = {
        "executions": n,
        "repeats": repeats,
        "steps_per_execution": 4,
        "spans_per_execution": SPANS_PER_EXECUTION,
        "spans_exported": sink.spans,
        "otlp_bytes_per_span": sink.bytes / sink.spans if sink.spans else 0.0,
    }
    out.update(medians(samples))
    return out


async def engine_alone(n: int, repeats: int) -> dict[str, float]:
    """µs of CPU per execution of the engine alone, without and with its spans."""
    workflow = load_workflow()
    engine = Engine(CannedTransports())
    traced, _ = tracing()

    async def once(trace: bool, i: int) -> None:
        record = new_record(workflow, INPUT, f"e-{i}", clock=engine.clock, metadata=CALLER)
        if not trace:
            await engine.execute(workflow, INPUT, record=record)
            return
        spans = traced.execution(record, rpc="Run")
        result = await engine.execute(workflow, INPUT, record=record, trace=spans)
        spans.finish(result)

    for i in range(200):
        await once(True, i)
        await once(False, i)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for trace in (False, True):
            cpu = time.process_time()
            for i in range(n):
                await once(trace, i)
            if trace:
                traced.provider.force_flush()
            runs[trace].append((time.process_time() - cpu) / n * 1e6)
    traced.shutdown()
    off, on = (sorted(runs[k])[repeats // 2] for k in (False, True))
    return {
        "us_per_execution_off": off,
        "us_per_execution_on": on,
        "us_added": on - off,
        "us_per_span": (on - off) / SPANS_PER_EXECUTION,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    out = asyncio.run(measure(args.executions, args.repeats))
    out["engine"] = asyncio.run(engine_alone(args.executions * 4, args.repeats))
    print(
        f"tracing cost per execution (process CPU, gateway, client and exporter thread in one "
        f"process; {args.executions} executions × {args.repeats} runs, 4-step workflow, "
        f"{SPANS_PER_EXECUTION} spans):"
    )
    for case in CASES:
        row = out[case]
        print(
            f"  {case:<8} off {row['us_per_execution_off']:7.1f} µs   on "
            f"{row['us_per_execution_on']:7.1f} µs   +{row['us_added']:5.1f} µs "
            f"({row['percent_added']:+.1f}%)"
        )
    alone = out["engine"]
    print(
        f"  the engine alone: {alone['us_per_execution_off']:.1f} µs per execution, "
        f"+{alone['us_added']:.1f} µs with its spans ({alone['us_per_span']:.1f} µs per span, "
        f"OTLP encoding included; {out['otlp_bytes_per_span']:.0f} bytes per span)"
    )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
