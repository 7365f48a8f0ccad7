"""`maestro execute`: a real subprocess against a local HTTP service on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


class Recorder(ThreadingHTTPServer):
    """Answers by path: ``/fail/<status>`` fails, ``/hang`` never answers; records every request."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, str, Any]] = []
        self.hanging = threading.Event()
        self.release = threading.Event()


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        self.server.requests.append(("POST", self.path, body))
        if self.path.startswith("/fail/"):
            self._send(int(self.path.rsplit("/", 1)[1]), {"error": "no"})
        elif self.path == "/hang":
            self.server.hanging.set()
            self.server.release.wait(10)
        else:
            self._send(200, {"path": self.path, "got": body})

    def _send(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[Recorder]:
    srv = Recorder()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def write_workflow(tmp_path: Path, server: Recorder, last: str, undo_b: str = "/undo/b") -> Path:
    port = server.server_address[1]
    text = f"""
name: cli-demo
input:
  type: object
  required: [order]
  properties: {{order: {{type: string}}}}
services:
  api:
    type: http
    endpoint: "http://127.0.0.1:{port}"
    timeout: 5s
steps:
  - id: a
    service: api
    method: "POST /a/{{{{ input.order }}}}"
    input: {{n: 1}}
    compensate: {{method: "POST /undo/a", input: {{cause: "{{{{ error.code }}}}"}}}}
  - id: b
    service: api
    method: /b
    compensate: {{method: "POST {undo_b}", input: {{ref: "{{{{ b.path }}}}"}}}}
  - id: c
    service: api
    method: "POST {last}"
"""
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path


def maestro(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "maestro_gateway", "execute", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
        **kw,
    )


def test_success_prints_progress_and_the_result(tmp_path: Path, server: Recorder) -> None:
    """A successful run exits 0, prints one line per event on stderr and the result on stdout."""
    wf = write_workflow(tmp_path, server, "/c")
    proc = maestro(str(wf), "--input", '{"order": "o-1"}')
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "SUCCEEDED"
    assert result["output"]["a"] == {"path": "/a/o-1", "got": {"n": 1}}
    assert result["error"] is None
    lines = proc.stderr.splitlines()
    assert any("a" in line and "started (attempt 1)" in line for line in lines)
    assert lines[-1].split("] ", 1)[1].startswith("cli-demo SUCCEEDED")
    assert all(line.startswith("[") for line in lines)


def test_failure_compensates_in_reverse_and_exits_1(tmp_path: Path, server: Recorder) -> None:
    """A late failure undoes the earlier steps newest first; exit 1 with the result on stdout."""
    wf = write_workflow(tmp_path, server, "/fail/409")
    input_file = tmp_path / "in.json"
    input_file.write_text('{"order": "o-2"}')
    proc = maestro(str(wf), "--input-file", str(input_file))
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "COMPENSATED"
    assert result["error"]["step_id"] == "c"
    assert result["error"]["code"] == "ABORTED"
    undo = [(p, body) for (_, p, body) in server.requests if p.startswith("/undo")]
    assert undo == [("/undo/b", {"ref": "/b"}), ("/undo/a", {"cause": "ABORTED"})]
    assert "compensated" in proc.stderr


def test_failed_compensation_exits_3(tmp_path: Path, server: Recorder) -> None:
    """A compensation that fails gives COMPENSATION_FAILED and exit status 3."""
    wf = write_workflow(tmp_path, server, "/fail/400", undo_b="/fail/500")
    proc = maestro(str(wf), "--input", '{"order": "o-3"}')
    assert proc.returncode == 3, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "COMPENSATION_FAILED"
    assert result["steps"]["b"]["compensation_error"]["code"] == "INTERNAL"
    assert result["steps"]["a"]["status"] == "COMPENSATED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{not json"], "cannot read the input"),
        (["--input", '{"other": 1}'], "invalid input"),
        (["--input", '{"order": "x"}', "--timeout", "ten"], "--timeout"),
    ],
)
def test_bad_input_is_a_usage_error(
    tmp_path: Path, server: Recorder, args: list[str], message: str
) -> None:
    """Input that is not JSON, fails the schema, or a bad --timeout exits 2 with a message."""
    wf = write_workflow(tmp_path, server, "/c")
    proc = maestro(str(wf), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""
    assert server.requests == []


def test_definition_error_exits_2_with_diagnostics(tmp_path: Path) -> None:
    """An invalid workflow prints file:line:col diagnostics on stderr and exits 2."""
    wf = tmp_path / "bad.yaml"
    wf.write_text("name: bad\nsteps:\n  - id: a\n    service: nope\n    method: M\n")
    proc = maestro(str(wf), "--input", "{}")
    assert proc.returncode == 2
    assert f"{wf}:" in proc.stderr
    assert proc.stdout == ""


def test_ctrl_c_cancels_compensates_and_exits_130(tmp_path: Path, server: Recorder) -> None:
    """SIGINT cancels the call in flight, compensates, prints the result and exits 130."""
    wf = write_workflow(tmp_path, server, "/hang")
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "maestro_gateway", "execute", str(wf), "--input", '{"order": "o"}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.hanging.wait(20), "the hanging step was never called"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["error"]["code"] == "CANCELLED"
    assert result["error"]["step_id"] == "c"
    assert result["status"] == "COMPENSATED"
    undo = [p for (_, p, _) in server.requests if p.startswith("/undo")]
    assert undo == ["/undo/b", "/undo/a"]


def test_with_a_journal_the_execution_is_recorded(tmp_path: Path, server: Recorder) -> None:
    """--journal FILE records the execution, its events and its result, as maestro serve does."""
    import asyncio

    from maestro_gateway.journal import ExecutionState, SqliteJournal

    wf = write_workflow(tmp_path, server, "/c")
    journal_file = tmp_path / "journal.db"
    proc = maestro(str(wf), "--input", '{"order": "o-9"}', "--journal", str(journal_file))
    assert proc.returncode == 0, proc.stderr
    execution_id = json.loads(proc.stdout)["execution_id"]

    async def read() -> tuple[Any, list[Any]]:
        journal = SqliteJournal(journal_file)
        await journal.open()
        try:
            return await journal.get(execution_id), await journal.events(execution_id)
        finally:
            await journal.close()

    record, events = asyncio.run(read())
    assert record is not None
    assert record.state is ExecutionState.SUCCEEDED
    assert record.input == {"order": "o-9"}
    kinds = [e.kind for e in events]
    assert (kinds[0], kinds[-1]) == ("started", "finished")


def test_an_unusable_journal_is_a_usage_error(tmp_path: Path, server: Recorder) -> None:
    """A journal that is a directory: exit 2, the path named, nothing called."""
    wf = write_workflow(tmp_path, server, "/c")
    proc = maestro(str(wf), "--input", '{"order": "o-1"}', "--journal", str(tmp_path))
    assert proc.returncode == 2
    assert str(tmp_path) in proc.stderr
    assert server.requests == []
