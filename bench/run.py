"""``make bench``: the gateway against hand-written asyncio glue, side by side, in one run.

Starts, as separate processes on 127.0.0.1 (free ports read from their ready lines):
``bench/services.py`` (the downstream services), ``bench/glue.py`` (the reference),
``maestro serve`` over ``bench/workflows/`` (the gateway, once per journal setting: ``gateway``
with the default SQLite journal, ``gateway-none`` with ``--journal none``, ``gateway-full``
with ``--journal-sync full``), ``bench/dbos_glue.py`` (the durable peer, DBOS on SQLite: ``Run``
of the gRPC shape only) and ``bench/load.py`` (the load client, apart so its CPU is not
charged to the measured processes). Then, for several rounds, it measures every contender
(glue/gateways × Run/Execute × gRPC-only/with an HTTP step, and DBOS) at
concurrency 1 and 64, in an order that rotates each round, and reports per contender and
concurrency the medians (with min–max over the rounds) of workflows/s, p50, p99, and the CPU per
workflow of the server process and of the services process (``/proc/PID/stat`` deltas over the
measured window). It prints the gateway/glue and gateway/DBOS ratios against the DESIGN §8
targets, then runs
the scale figures (``bench/memory.py``, ``bench/engine_cpu.py``, ``bench/foreach.py``,
``bench/signals.py``, ``bench/recovery.py``, ``bench/metrics_cost.py``,
``bench/tracing_cost.py``, ``bench/replicas.py``:
one and two replicas on PostgreSQL against one gateway on SQLite; ``bench/saturation.py``: the
health check's latency while the gateway is saturated; ``bench/soak.py``: 10,000 executions at
256 in flight with injected faults, checked against what the services received), and writes
everything to
``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import Child, Children, cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PY = sys.executable
TARGET_THROUGHPUT = 0.8
TARGET_P50 = 1.25
GATEWAYS: dict[str, list[str]] = {
    "gateway": [],  # the default: a SQLite journal, --journal-sync normal
    "gateway-none": ["--journal", "none"],
    "gateway-full": ["--journal-sync", "full"],
}
"""The gateway variants measured, by name: their extra ``maestro serve`` arguments."""
PEER = "dbos"
"""The durable peer (``bench/dbos_glue.py``): ``Run`` of ``bench_grpc`` only."""
PEER_THROUGHPUT = 12.0
PEER_P50 = 1 / 8
SERVERS = ("glue", *GATEWAYS, PEER)


@dataclass(frozen=True)
class Contender:
    """One thing measured: a server, an RPC and a workflow."""

    server: str  # "glue", one of GATEWAYS, or PEER
    rpc: str  # "Run" or "Execute"
    workflow: str  # "bench_grpc" or "bench_http"

    @property
    def name(self) -> str:
        """A short label, e.g. ``gateway Run grpc``."""
        return f"{self.server} {self.rpc} {self.workflow.removeprefix('bench_')}"


def render_workflows(grpc_target: str, http_url: str, out: Path) -> None:
    """Copy ``bench/workflows/*.yaml`` into ``out`` with the services' addresses filled in."""
    for path in sorted((BENCH / "workflows").glob("*.yaml")):
        text = string.Template(path.read_text()).safe_substitute(GRPC=grpc_target, HTTP=http_url)
        (out / path.name).write_text(text)


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    import grpc

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "loadavg_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def summarise(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Bench:
    """The running system and the measurements taken on it."""

    def __init__(self, children: Children, args: argparse.Namespace) -> None:
        self.args = args
        self.children = children
        self.servers: dict[str, tuple[str, Child]] = {}
        self.services: Child | None = None
        self.load: Child | None = None
        self.runs: dict[tuple[Contender, int], list[dict[str, Any]]] = {}

    def start(self, workflow_dir: Path) -> None:
        """Start services, glue, gateway and the load client; wait until each is ready."""
        services = self.children.start("services", [PY, str(BENCH / "services.py")])
        m = services.wait_for(r"grpc=(\S+) http=(\S+)", 30)
        grpc_target, http_url = m.group(1), m.group(2)
        self.services = services
        render_workflows(grpc_target, http_url, workflow_dir)
        if "glue" in self.args.servers:
            glue = self.children.start(
                "glue",
                [PY, str(BENCH / "glue.py"), "--services", grpc_target, "--http", http_url],
            )
            self.servers["glue"] = (glue.wait_for(r"listening on (\S+)", 30).group(1), glue)
        for name, options in GATEWAYS.items():
            if name not in self.args.servers:
                continue
            argv = [PY, "-m", "maestro_gateway", "serve", "--workflows", str(workflow_dir)]
            argv += [
                "--loop",
                self.args.gateway_loop,
                "--journal",
                str(workflow_dir / f"{name}.db"),
            ]
            argv += [*options, "--host", "127.0.0.1", "--port", "0"]
            gateway = self.children.start(name, argv)
            target = gateway.wait_for(r"maestro-gateway listening on (\S+)", 60).group(1)
            self.servers[name] = (target, gateway)
        if PEER in self.args.servers:
            peer = self.children.start(
                PEER, [PY, "-m", "bench.dbos_glue", "--services", grpc_target]
            )
            self.servers[PEER] = (peer.wait_for(r"listening on (\S+)", 60).group(1), peer)
        self.load = self.children.start("load", [PY, str(BENCH / "load.py")], stdin=True)

    def _ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.load is not None
        self.load.send(json.dumps(command))
        answer: dict[str, Any] = json.loads(self.load.readline(timeout))
        return answer

    def measure(self, contender: Contender, concurrency: int, duration: float) -> dict[str, Any]:
        """One measurement: warm up, then ``duration`` seconds with CPU counters read around it."""
        assert self.services is not None
        target, server = self.servers[contender.server]
        prepare = {
            "cmd": "prepare",
            "target": target,
            "rpc": contender.rpc,
            "workflow": contender.workflow,
            "concurrency": concurrency,
            "warmup": self.args.warmup,
        }
        ready = self._ask(prepare, self.args.warmup + 60)
        if ready.get("errors"):
            raise RuntimeError(f"{contender.name}: errors while warming up: {ready['errors']}")
        server_cpu0, services_cpu0 = cpu_seconds(server.pid), cpu_seconds(self.services.pid)
        out = self._ask({"cmd": "go", "duration": duration}, duration + 60)
        server_cpu = cpu_seconds(server.pid) - server_cpu0
        services_cpu = cpu_seconds(self.services.pid) - services_cpu0
        count = max(1, out["count"])
        return {
            "throughput": out["count"] / out["elapsed"],
            "p50_ms": out["p50"] * 1000,
            "p99_ms": out["p99"] * 1000,
            "server_cpu_ms": server_cpu / count * 1000,
            "services_cpu_ms": services_cpu / count * 1000,
            "client_cpu_ms": out["client_cpu"] / count * 1000,
            "count": out["count"],
            "errors": out["errors"],
        }

    def contenders(self) -> list[Contender]:
        """Every contender, glue and gateway of a kind next to each other."""
        return [
            Contender(server, rpc, workflow)
            for workflow in self.args.workflows
            for rpc in self.args.rpcs
            for server in SERVERS
            if server in self.servers
            and (server != PEER or (rpc, workflow) == ("Run", "bench_grpc"))
        ]

    def run(self) -> None:
        """Warm every contender, then the interleaved rounds."""
        contenders = self.contenders()
        for contender in contenders:
            self.measure(contender, 8, self.args.warmup)
        for round_no in range(self.args.repeats):
            shift = round_no % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            for concurrency in self.args.concurrency:
                for contender in order:
                    result = self.measure(contender, concurrency, self.args.duration)
                    self.runs.setdefault((contender, concurrency), []).append(result)
                    print(
                        f"  round {round_no + 1}/{self.args.repeats} c={concurrency:<3} "
                        f"{contender.name:<22} {result['throughput']:7.0f} wf/s "
                        f"p50 {result['p50_ms']:6.2f} ms"
                        + (f"  errors {result['errors']}" if result["errors"] else ""),
                        flush=True,
                    )

    def table(self) -> list[dict[str, Any]]:
        """Per contender and concurrency: medians with min–max over the rounds."""
        rows = []
        for (contender, concurrency), runs in self.runs.items():
            row: dict[str, Any] = {
                "contender": contender.name,
                "server": contender.server,
                "rpc": contender.rpc,
                "workflow": contender.workflow,
                "concurrency": concurrency,
                "runs": runs,
            }
            for key in (
                "throughput",
                "p50_ms",
                "p99_ms",
                "server_cpu_ms",
                "services_cpu_ms",
                "client_cpu_ms",
            ):
                row[key] = summarise([r[key] for r in runs])
            rows.append(row)
        return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each gateway / glue: throughput at the highest concurrency, p50 at the lowest."""
    by_key = {(r["server"], r["rpc"], r["workflow"], r["concurrency"]): r for r in rows}
    levels = sorted({r["concurrency"] for r in rows})
    out = []
    kinds = sorted({(r["rpc"], r["workflow"]) for r in rows})
    for gateway, rpc, workflow in [(g, r, w) for g in GATEWAYS for r, w in kinds]:
        hi, lo = levels[-1], levels[0]
        gw_hi, glue_hi = (
            by_key.get((gateway, rpc, workflow, hi)),
            by_key.get(("glue", rpc, workflow, hi)),
        )
        gw_lo, glue_lo = (
            by_key.get((gateway, rpc, workflow, lo)),
            by_key.get(("glue", rpc, workflow, lo)),
        )
        if not (gw_hi and glue_hi and gw_lo and glue_lo):
            continue
        throughput = gw_hi["throughput"]["median"] / glue_hi["throughput"]["median"]
        p50 = gw_lo["p50_ms"]["median"] / glue_lo["p50_ms"]["median"]
        out.append(
            {
                "gateway": gateway,
                "rpc": rpc,
                "workflow": workflow,
                "throughput_ratio": throughput,
                "throughput_concurrency": hi,
                "throughput_ok": throughput >= TARGET_THROUGHPUT,
                "p50_ratio": p50,
                "p50_concurrency": lo,
                "p50_ok": p50 <= TARGET_P50,
            }
        )
    return out


def peer_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each gateway against the durable peer (``Run``, ``bench_grpc``): throughput at the highest
    concurrency (DESIGN §8: at least 12×), p50 at the lowest (at most 1/8)."""
    by_key = {(r["server"], r["rpc"], r["workflow"], r["concurrency"]): r for r in rows}
    levels = sorted({r["concurrency"] for r in rows})
    hi, lo = levels[-1], levels[0]
    peer_hi, peer_lo = (by_key.get((PEER, "Run", "bench_grpc", c)) for c in (hi, lo))
    out = []
    for gateway in GATEWAYS:
        gw_hi, gw_lo = (by_key.get((gateway, "Run", "bench_grpc", c)) for c in (hi, lo))
        if not (gw_hi and gw_lo and peer_hi and peer_lo):
            continue
        throughput = gw_hi["throughput"]["median"] / peer_hi["throughput"]["median"]
        p50 = gw_lo["p50_ms"]["median"] / peer_lo["p50_ms"]["median"]
        out.append(
            {
                "gateway": gateway,
                "peer": PEER,
                "throughput_ratio": throughput,
                "throughput_concurrency": hi,
                "throughput_ok": throughput >= PEER_THROUGHPUT,
                "p50_ratio": p50,
                "p50_concurrency": lo,
                "p50_ok": p50 <= PEER_P50,
            }
        )
    return out


def fmt(s: dict[str, float], digits: int = 0) -> str:
    """``median (min–max)``."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def print_report(rows: list[dict[str, Any]], ratio_rows: list[dict[str, Any]]) -> None:
    """The table and the ratios, medians with min–max over the rounds."""
    header = (
        f"{'contender':<22} {'conc':>4}  {'workflows/s':<20} {'p50 ms':<20} {'p99 ms':<20} "
        f"{'server CPU ms/wf':<18} {'services CPU ms/wf':<18}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    order = list(SERVERS)
    for row in sorted(
        rows, key=lambda r: (r["workflow"], r["rpc"], r["concurrency"], order.index(r["server"]))
    ):
        print(
            f"{row['contender']:<22} {row['concurrency']:>4}  {fmt(row['throughput']):<20} "
            f"{fmt(row['p50_ms'], 2):<20} {fmt(row['p99_ms'], 2):<20} "
            f"{row['server_cpu_ms']['median']:<18.2f} {row['services_cpu_ms']['median']:<18.2f}"
        )
    print(
        "\ngateway / glue (DESIGN §8 targets: throughput ≥ 0.8× at the highest concurrency, p50 ≤ 1.25× at the lowest)"
    )
    for r in ratio_rows:
        print(
            f"  {r['gateway']:<13} {r['rpc']:<8} {r['workflow']:<11} throughput@{r['throughput_concurrency']}: "
            f"{r['throughput_ratio']:.2f}× {'OK  ' if r['throughput_ok'] else 'MISS'}   "
            f"p50@{r['p50_concurrency']}: {r['p50_ratio']:.2f}× {'OK' if r['p50_ok'] else 'MISS'}"
        )


def print_peer_report(rows: list[dict[str, Any]]) -> None:
    """The gateways against the durable peer."""
    if not rows:
        return
    print(
        f"\ngateway / {PEER} (Run, bench_grpc; DESIGN §8 targets: throughput ≥ {PEER_THROUGHPUT:g}× "
        f"at the highest concurrency, p50 ≤ 1/{1 / PEER_P50:g} at the lowest)"
    )
    for r in rows:
        print(
            f"  {r['gateway']:<13} throughput@{r['throughput_concurrency']}: "
            f"{r['throughput_ratio']:.1f}× {'OK  ' if r['throughput_ok'] else 'MISS'}   "
            f"p50@{r['p50_concurrency']}: 1/{1 / r['p50_ratio']:.1f} "
            f"{'OK' if r['p50_ok'] else 'MISS'}"
        )


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scale figures as subprocesses; each prints its JSON as its last line."""
    out: dict[str, Any] = {}
    scale = (
        ("engine_cpu", []),
        ("foreach", []),
        ("signals", []),
        ("memory", ["--executions", str(args.executions)]),
        ("recovery", ["--executions", str(args.recover)]),
        ("metrics_cost", []),
        ("tracing_cost", []),
        ("replicas", []),
        ("saturation", []),
        ("soak", []),
    )
    for name, extra in scale:
        print(f"\n== {name} ==", flush=True)
        proc = subprocess.run(
            [PY, "-m", f"bench.{name}", "--json", *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        sys.stdout.write(proc.stdout.rsplit("\n", 2)[0] + "\n" if proc.stdout else "")
        if proc.returncode != 0:
            print(f"{name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            out[name] = {"error": proc.stderr[-2000:]}
            continue
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``make bench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before each measurement")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds (each contender once per round)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--servers",
        nargs="+",
        default=list(SERVERS),
        choices=list(SERVERS),
        help="what to measure (default: the glue, every gateway journal setting and DBOS)",
    )
    parser.add_argument("--rpcs", nargs="+", default=["Run", "Execute"], choices=["Run", "Execute"])
    parser.add_argument(
        "--workflows",
        nargs="+",
        default=["bench_grpc", "bench_http"],
        choices=["bench_grpc", "bench_http"],
    )
    parser.add_argument(
        "--executions", type=int, default=10_000, help="in-flight executions of the memory figure"
    )
    parser.add_argument(
        "--recover", type=int, default=1000, help="unfinished executions of the recovery figure"
    )
    parser.add_argument(
        "--gateway-loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="maestro serve --loop (auto: uvloop when installed)",
    )
    parser.add_argument(
        "--skip-scale", action="store_true", help="only the side-by-side comparison"
    )
    parser.add_argument("--scale-only", action="store_true", help="only the scale figures")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write JSON; print the table."""
    args = parse_args(argv)
    report: dict[str, Any] = {
        "machine": machine(),
        "config": {k: str(v) for k, v in vars(args).items()},
    }
    started = time.monotonic()
    if not args.scale_only:
        with tempfile.TemporaryDirectory() as tmp, Children(RESULTS / "logs") as children:
            bench = Bench(children, args)
            bench.start(Path(tmp))
            print(
                f"measuring {len(bench.contenders())} contenders × {args.concurrency} × {args.repeats} rounds",
                flush=True,
            )
            bench.run()
            rows = bench.table()
        ratio_rows = ratios(rows)
        report["results"] = rows
        report["ratios"] = ratio_rows
        report["peer_ratios"] = peer_ratios(rows)
        print_report(rows, ratio_rows)
        print_peer_report(report["peer_ratios"])
    if not args.skip_scale:
        report["scale"] = run_scale(args)
    report["elapsed_s"] = time.monotonic() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nwrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output} ({report['elapsed_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        sys.exit(130)
