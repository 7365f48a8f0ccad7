"""Replicas on PostgreSQL (DESIGN §8, §11): one replica, two replicas, and one gateway on SQLite.

Starts, on 127.0.0.1: a throwaway PostgreSQL server (``tests/pg_support.py``: ``initdb`` and
``pg_ctl``, fsync on as a real deployment has it unless ``--no-fsync``), ``bench/services.py``,
and ``maestro serve`` over ``bench/workflows/`` (rendered as ``bench/run.py`` does) in three
setups, all running at once:

- ``sqlite``: one gateway on the default SQLite journal (``--journal-sync normal``);
- ``pg1``: one replica on ``--journal postgresql://…`` (a database of its own);
- ``pg2``: two replicas sharing another database; the load client (``bench/load.py``, in its
  own process) spreads the calls round-robin over both, one channel each.

Each round measures every setup at each concurrency (default 1 and 64) for ``--duration``
seconds after a warm-up, in an order rotated each round; medians (min–max) over the rounds of
workflows/s, p50, p99 and the gateway CPU per workflow (the ``/proc/PID/stat`` deltas of every
replica of the setup, summed, over the measured window), beside the PostgreSQL server's CPU per
workflow (postmaster and backends; it includes the idle replicas' lease upkeep) and the
services'. Then the ratios: two replicas / one replica (gateway CPU per workflow at the highest
concurrency against DESIGN §8's 1.2× bound; throughput and p50 for information: on 2 cores the
total cannot grow) and PostgreSQL / SQLite for one gateway (the journal's cost). When half the
highest concurrency is measured too (``--concurrency 32 64``), also two replicas against one
replica at each replica's share of the load (pg2 at 64 / pg1 at 32): what replicas cost beyond
each process running at half the concurrency (smaller group commits, fewer calls per turn of
its event loop), which is the part coordination (leases, claims, notifications) could add.

With ``--count-commits`` every gateway also serves its admin port, and each measurement reads
``maestro_journal_commit_seconds_count`` from its ``/metrics`` around the window: the group
commits per workflow of the setup (metrics cost a little CPU: compare runs made alike).

    python -m bench.replicas [--duration 3] [--repeats 3] [--rpc Run] [--count-commits] [--json]

Every child process and the cluster are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.request import urlopen

from bench.journal_pg import server_cpu
from bench.procs import Child, Children, cpu_seconds
from bench.run import BENCH, PY, RESULTS, render_workflows
from tests.pg_support import Cluster

TARGET_CPU_RATIO = 1.2
SETUPS = {
    "sqlite": "1 gateway, SQLite",
    "pg1": "1 replica, PostgreSQL",
    "pg2": "2 replicas, PostgreSQL",
}
"""The setups measured, by name: their labels."""
METRICS = (
    "throughput",
    "p50_ms",
    "p99_ms",
    "gateway_cpu_ms",
    "pg_server_cpu_ms",
    "services_cpu_ms",
    "client_cpu_ms",
    "commits_per_wf",
)
COMMITS = re.compile(r"^maestro_journal_commit_seconds_count\s+(\S+)$", re.MULTILINE)


def commits(admin_url: str | None) -> float:
    """The group commits a gateway made so far (0 without its admin port)."""
    if admin_url is None:
        return 0.0
    with urlopen(f"{admin_url}/metrics", timeout=10) as answer:
        found = COMMITS.search(answer.read().decode())
    return float(found.group(1)) if found else 0.0


def summarise(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class ReplicasBench:
    """The running setups and the measurements taken on them."""

    def __init__(self, children: Children, cluster: Cluster, args: argparse.Namespace) -> None:
        self.args = args
        self.children = children
        self.cluster = cluster
        self.gateways: dict[str, list[tuple[str, Child]]] = {}
        self.admin: dict[int, str] = {}
        """The admin URL of each gateway (by pid), with ``--count-commits``."""
        self.services: Child | None = None
        self.load: Child | None = None
        self.runs: dict[tuple[str, int], list[dict[str, Any]]] = {}

    def _gateway_argv(self, workflow_dir: Path, journal: str, *extra: str) -> list[str]:
        if self.args.count_commits:
            extra = (*extra, "--admin-host", "127.0.0.1", "--admin-port", "0")
        return [
            *(PY, "-m", "maestro_gateway", "serve", "--workflows", str(workflow_dir)),
            *("--loop", self.args.gateway_loop, "--journal", journal, *extra),
            *("--host", "127.0.0.1", "--port", "0"),
        ]

    def start(self, workflow_dir: Path) -> None:
        """Start the services, every gateway of every setup and the load client."""
        services = self.children.start("replicas-services", [PY, str(BENCH / "services.py")])
        m = services.wait_for(r"grpc=(\S+) http=(\S+)", 30)
        self.services = services
        render_workflows(m.group(1), m.group(2), workflow_dir)
        started: dict[str, list[Child]] = {
            "sqlite": [
                self.children.start(
                    "replicas-sqlite",
                    self._gateway_argv(workflow_dir, str(workflow_dir / "sqlite.db")),
                )
            ]
        }
        lease = ("--lease", self.args.lease)
        for setup, count in (("pg1", 1), ("pg2", 2)):
            dsn = self.cluster.dsn(self.cluster.create_database(setup))
            # The replicas of a setup start together (they migrate the schema together).
            started[setup] = [
                self.children.start(
                    f"replicas-{setup}-{n}", self._gateway_argv(workflow_dir, dsn, *lease)
                )
                for n in range(count)
            ]
        for setup, children in started.items():
            if self.args.count_commits:
                for child in children:
                    found = child.wait_for(r"maestro-gateway admin on (http://\S+)", 90)
                    self.admin[child.pid] = found.group(1)
            self.gateways[setup] = [
                (child.wait_for(r"maestro-gateway listening on (\S+)", 90).group(1), child)
                for child in children
            ]
        self.load = self.children.start("replicas-load", [PY, str(BENCH / "load.py")], stdin=True)

    def _ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.load is not None
        self.load.send(json.dumps(command))
        answer: dict[str, Any] = json.loads(self.load.readline(timeout))
        return answer

    def measure(self, setup: str, concurrency: int, duration: float) -> dict[str, Any]:
        """One measurement: warm up, then ``duration`` seconds with CPU counters read around it."""
        assert self.services is not None
        gateways = self.gateways[setup]
        prepare = {
            "cmd": "prepare",
            "targets": [target for target, _ in gateways],
            "rpc": self.args.rpc,
            "workflow": self.args.workflow,
            "concurrency": concurrency,
            "warmup": self.args.warmup,
        }
        ready = self._ask(prepare, self.args.warmup + 60)
        if ready.get("errors"):
            raise RuntimeError(f"{setup}: errors while warming up: {ready['errors']}")
        commits0 = sum(commits(self.admin.get(child.pid)) for _, child in gateways)
        gateway_cpu0 = [cpu_seconds(child.pid) for _, child in gateways]
        pg_cpu0, services_cpu0 = server_cpu(self.cluster), cpu_seconds(self.services.pid)
        out = self._ask({"cmd": "go", "duration": duration}, duration + 60)
        replica_cpu = [
            cpu_seconds(child.pid) - cpu0
            for (_, child), cpu0 in zip(gateways, gateway_cpu0, strict=True)
        ]
        pg_cpu = server_cpu(self.cluster) - pg_cpu0
        services_cpu = cpu_seconds(self.services.pid) - services_cpu0
        made = sum(commits(self.admin.get(child.pid)) for _, child in gateways) - commits0
        count = max(1, out["count"])
        return {
            "throughput": out["count"] / out["elapsed"],
            "p50_ms": out["p50"] * 1000,
            "p99_ms": out["p99"] * 1000,
            "gateway_cpu_ms": sum(replica_cpu) / count * 1000,
            "replica_cpu_ms": [cpu / count * 1000 for cpu in replica_cpu],
            "pg_server_cpu_ms": pg_cpu / count * 1000,
            "services_cpu_ms": services_cpu / count * 1000,
            "client_cpu_ms": out["client_cpu"] / count * 1000,
            "commits_per_wf": made / count,
            "count": out["count"],
            "errors": out["errors"],
        }

    def run(self) -> None:
        """Warm every setup, then the interleaved rounds."""
        setups = list(SETUPS)
        for setup in setups:
            self.measure(setup, 8, self.args.warmup)
        for round_no in range(self.args.repeats):
            shift = round_no % len(setups)
            order = setups[shift:] + setups[:shift]
            for concurrency in self.args.concurrency:
                for setup in order:
                    result = self.measure(setup, concurrency, self.args.duration)
                    self.runs.setdefault((setup, concurrency), []).append(result)
                    print(
                        f"  round {round_no + 1}/{self.args.repeats} c={concurrency:<3} "
                        f"{SETUPS[setup]:<24} {result['throughput']:7.0f} wf/s "
                        f"p50 {result['p50_ms']:6.2f} ms "
                        f"gateway CPU {result['gateway_cpu_ms']:.2f} ms/wf"
                        + (
                            f" commits {result['commits_per_wf']:.2f}/wf"
                            if self.args.count_commits
                            else ""
                        )
                        + (f"  errors {result['errors']}" if result["errors"] else ""),
                        flush=True,
                    )

    def table(self) -> list[dict[str, Any]]:
        """Per setup and concurrency: medians with min–max over the rounds."""
        rows = []
        for (setup, concurrency), runs in self.runs.items():
            row: dict[str, Any] = {
                "setup": setup,
                "label": SETUPS[setup],
                "replicas": len(self.gateways[setup]),
                "concurrency": concurrency,
                "runs": runs,
            }
            for key in METRICS:
                row[key] = summarise([r[key] for r in runs])
            rows.append(row)
        return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Two replicas / one replica, and PostgreSQL / SQLite for one gateway."""
    by_key = {(r["setup"], r["concurrency"]): r for r in rows}
    levels = sorted({r["concurrency"] for r in rows})
    hi, lo = levels[-1], levels[0]

    def ratio(top: str, bottom: str, metric: str, concurrency: int) -> float | None:
        a, b = by_key.get((top, concurrency)), by_key.get((bottom, concurrency))
        if not (a and b) or not b[metric]["median"]:
            return None
        value: float = a[metric]["median"] / b[metric]["median"]
        return value

    cpu = ratio("pg2", "pg1", "gateway_cpu_ms", hi)
    share = None
    if (a := by_key.get(("pg2", hi))) and (b := by_key.get(("pg1", hi // 2))):
        share = a["gateway_cpu_ms"]["median"] / b["gateway_cpu_ms"]["median"]
    return {
        "high_concurrency": hi,
        "low_concurrency": lo,
        "two_over_one": {
            "gateway_cpu": cpu,
            "gateway_cpu_bound": TARGET_CPU_RATIO,
            "gateway_cpu_ok": cpu is not None and cpu <= TARGET_CPU_RATIO,
            "gateway_cpu_at_share": share,
            "throughput": ratio("pg2", "pg1", "throughput", hi),
            "p50": ratio("pg2", "pg1", "p50_ms", lo),
        },
        "postgres_over_sqlite": {
            "gateway_cpu": ratio("pg1", "sqlite", "gateway_cpu_ms", hi),
            "throughput": ratio("pg1", "sqlite", "throughput", hi),
            "p50": ratio("pg1", "sqlite", "p50_ms", lo),
            "p99": ratio("pg1", "sqlite", "p99_ms", hi),
        },
    }


def fmt(s: dict[str, float], digits: int = 0) -> str:
    """``median (min–max)``."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def print_report(rows: list[dict[str, Any]], r: dict[str, Any], args: argparse.Namespace) -> None:
    """The table and the ratios."""
    print(f"\n{args.rpc} {args.workflow}, medians (min–max) over {args.repeats} rounds")
    header = (
        f"{'setup':<24} {'conc':>4}  {'workflows/s':<18} {'p50 ms':<20} {'p99 ms':<20} "
        f"{'gateway CPU ms/wf':<19} {'PG server ms/wf':<16} {'services ms/wf':<14}"
    )
    print(header + "\n" + "-" * len(header))
    order = list(SETUPS)
    for row in sorted(rows, key=lambda x: (x["concurrency"], order.index(x["setup"]))):
        pg = f"{row['pg_server_cpu_ms']['median']:.2f}" if row["setup"] != "sqlite" else "-"
        print(
            f"{row['label']:<24} {row['concurrency']:>4}  {fmt(row['throughput']):<18} "
            f"{fmt(row['p50_ms'], 2):<20} {fmt(row['p99_ms'], 2):<20} "
            f"{fmt(row['gateway_cpu_ms'], 2):<19} {pg:<16} "
            f"{row['services_cpu_ms']['median']:<14.2f}"
        )

    def x(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}×"

    two, cost = r["two_over_one"], r["postgres_over_sqlite"]
    hi, lo = r["high_concurrency"], r["low_concurrency"]
    print(
        f"\ntwo replicas / one replica: gateway CPU per workflow @{hi} {x(two['gateway_cpu'])} "
        f"(DESIGN §8 bound ≤ {TARGET_CPU_RATIO:g}×: {'OK' if two['gateway_cpu_ok'] else 'MISS'}); "
        f"throughput @{hi} {x(two['throughput'])}, p50 @{lo} {x(two['p50'])}"
    )
    if two["gateway_cpu_at_share"] is not None:
        print(
            f"two replicas @{hi} / one replica @{hi // 2} (each replica's share of the load):"
            f" gateway CPU per workflow {x(two['gateway_cpu_at_share'])}"
        )
    print(
        f"PostgreSQL / SQLite (one gateway): gateway CPU per workflow @{hi} "
        f"{x(cost['gateway_cpu'])}, throughput @{hi} {x(cost['throughput'])}, "
        f"p50 @{lo} {x(cost['p50'])}, p99 @{hi} {x(cost['p99'])}"
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: everything is stopped


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before each measurement")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (each setup once a round)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rpc", default="Run", choices=["Run", "Execute"])
    parser.add_argument("--workflow", default="bench_grpc", choices=["bench_grpc", "bench_http"])
    parser.add_argument("--lease", default="15s", help="maestro serve --lease of the replicas")
    parser.add_argument("--gateway-loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    parser.add_argument(
        "--no-fsync", action="store_true", help="run PostgreSQL without fsync (not the default)"
    )
    parser.add_argument(
        "--count-commits",
        action="store_true",
        help="serve the admin ports and count the group commits per workflow",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    cluster = Cluster(fsync=not args.no_fsync)
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(RESULTS / "logs")
        try:
            cluster.start()
            bench = ReplicasBench(children, cluster, args)
            bench.start(Path(tmp))
            print(
                f"measuring {len(SETUPS)} setups × {args.concurrency} × {args.repeats} rounds "
                f"(PostgreSQL fsync {'off' if args.no_fsync else 'on'})",
                flush=True,
            )
            bench.run()
            rows = bench.table()
        finally:
            children.stop_all()
            cluster.stop()
    ratio = ratios(rows)
    print_report(rows, ratio, args)
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "results": rows,
        "ratios": ratio,
        "elapsed_s": time.monotonic() - started,
    }
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
