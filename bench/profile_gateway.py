"""Profile the gateway under benchmark load with py-spy (``python -m bench.profile_gateway``).

Starts the same processes as ``make bench`` (services, gateway, load client; no glue), drives one
contender (``--rpc``, ``--workflow``, ``--concurrency``) and, during the measured window, samples
the gateway process with ``py-spy record --format raw`` (collapsed stacks, ``--nonblocking`` so
the target is not paused). Prints the functions with the most samples, own time and inclusive,
and keeps the raw stacks in ``bench/results/profile-<rpc>-<workflow>.txt`` (load it in
speedscope or flamegraph.pl). py-spy is not a project dependency: ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.procs import Children
from bench.run import RESULTS, Bench, Contender, parse_args


def summarise(raw: str, top: int) -> str:
    """Top functions by own and inclusive samples from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Profile one contender of the gateway."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc", default="Execute", choices=["Run", "Execute"])
    parser.add_argument("--workflow", default="bench_grpc", choices=["bench_grpc", "bench_http"])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not found: pip install py-spy")
        return 2
    bench_args = parse_args(["--servers", "gateway", "--duration", str(args.duration)])
    out_path = RESULTS / f"profile-{args.rpc}-{args.workflow}.txt"
    with tempfile.TemporaryDirectory() as tmp, Children(RESULTS / "logs") as children:
        bench = Bench(children, bench_args)
        bench.start(Path(tmp))
        contender = Contender("gateway", args.rpc, args.workflow)
        bench.measure(contender, args.concurrency, 1.0)  # warm
        pid = bench.servers["gateway"][1].pid
        argv_spy = [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--nonblocking",
            "--function",
        ]
        spy = subprocess.Popen(
            [*argv_spy, "--duration", str(int(args.duration)), "--output", str(out_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            result = bench.measure(contender, args.concurrency, args.duration)
            _, err = spy.communicate(timeout=args.duration + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait(5)
    if spy.returncode != 0 or not out_path.exists():
        print(f"py-spy failed ({spy.returncode}): {err[-1000:]}")
        return 1
    print(
        f"{contender.name} c={args.concurrency}: {result['throughput']:.0f} wf/s while sampled, "
        f"gateway CPU {result['server_cpu_ms']:.2f} ms/wf\n"
    )
    print(summarise(out_path.read_text(), args.top))
    print(f"\nraw stacks: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
