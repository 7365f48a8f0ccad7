"""Child processes of ``make bench``: start, wait for a ready line, read CPU counters, stop.

Every process is started with its stdout on a pipe that a daemon thread drains into a queue (and
a log file), so a chatty child never blocks on a full pipe and the driver can wait for a ready
line with a timeout. ``stop_all`` ends them SIGTERM first, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Child:
    """One child process whose stdout lines can be awaited."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, *, stdin: bool = False) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C in the terminal reaches the driver only
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def readline(self, timeout: float) -> str:
        """The next stdout line; raise RuntimeError on timeout or exit."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no output within {timeout:.0f}s") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited ({self.proc.poll()}); see {self.log_path}")
        self._log.write(f"[stdout] {line}\n")
        return line

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Skip stdout lines until one matches ``pattern``; return the match."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            line = self.readline(left)
            if m := re.search(pattern, line):
                return m
        raise RuntimeError(f"{self.name}: no line matching {pattern!r} within {timeout:.0f}s")

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if still running after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class Children:
    """Every child started by the driver, stopped in reverse order on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._children: list[Child] = []

    def start(self, name: str, argv: list[str], *, stdin: bool = False) -> Child:
        """Start and remember a child."""
        child = Child(name, argv, self.log_dir, stdin=stdin)
        self._children.append(child)
        return child

    def stop_all(self) -> None:
        """Stop every child, the last started first."""
        while self._children:
            child = self._children.pop()
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {child.name}: {exc}")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
