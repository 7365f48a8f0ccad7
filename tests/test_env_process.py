"""Environment values in real runs: ``maestro execute`` and ``maestro serve --log-level debug`` as
subprocesses, against a local HTTP service that fails quoting the secret header and path it got.

The secret must reach the service, and nowhere else: not the progress lines, the result, the
events of the gateway API, its RPC status, or any log line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

ROOT = Path(__file__).parent.parent
SECRET = "tok-Vw7Q-secret-5521"
READY = re.compile(r"maestro-gateway listening on 127\.0\.0\.1:(\d+) \((\d+) workflows\)")


class Echo(ThreadingHTTPServer):
    """``/ok`` and ``/api/…`` answer 200 ``{}``; any other path 503 with the path and the
    Authorization header it got."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.seen: list[tuple[str, str]] = []


class EchoHandler(BaseHTTPRequestHandler):
    server: Echo

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        auth = self.headers.get("authorization", "")
        self.server.seen.append((self.path, auth))
        ok = self.path == "/ok" or self.path.startswith("/api/")
        status, value = (200, {}) if ok else (503, {"path": self.path, "auth": auth})
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def workflow(port: int, name: str = "echo", variable: str = "MAESTRO_TEST_TOKEN") -> str:
    """A step that succeeds with a compensation, then one that fails; both paths hold the secret."""
    return f"""\
name: {name}
services:
  crm:
    type: http
    endpoint: "http://127.0.0.1:{port}"
    headers: {{Authorization: "Bearer {{{{ env.{variable} }}}}"}}
    retry: {{attempts: 2, initial: 10ms}}
steps:
  - id: a
    service: crm
    method: /ok
    compensate: {{method: "POST /undo/{{{{ env.{variable} }}}}"}}
  - {{id: confirm, service: crm, method: SendOrderConfirmation}}
  - id: b
    service: crm
    method: "POST /fail/{{{{ .env.{variable} }}}}?key={{{{ env.{variable} }}}}"
"""


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_TEST_")}
    return {**env, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **extra}


def test_execute_prints_no_env_value_in_progress_or_result(tmp_path: Path, echo: Echo) -> None:
    """Retries, failures, the compensation failure and the result show *** where the value was."""
    path = tmp_path / "echo.yaml"
    path.write_text(workflow(echo.server_address[1]))
    done = subprocess.run(
        [sys.executable, "-m", "maestro_gateway", "execute", str(path), "--input", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment(MAESTRO_TEST_TOKEN=SECRET),
    )
    assert done.returncode == 3, done.stderr
    assert SECRET not in done.stdout
    assert SECRET not in done.stderr
    result = json.loads(done.stdout)
    assert result["error"]["message"] == (
        'POST /fail/***: HTTP 503 Service Unavailable: {"path": "/fail/***?key=***", '
        '"auth": "Bearer ***"}'
    )
    assert "POST /undo/***" in result["steps"]["a"]["compensation_error"]["message"]
    assert "retrying" in done.stderr
    assert "compensation failed: step 'a' UNAVAILABLE: POST /undo/***" in done.stderr
    # The service did get the real value; the verb-less method went to POST /api/<lower>.
    assert (f"/fail/{SECRET}?key={SECRET}", f"Bearer {SECRET}") in echo.seen
    assert ("/api/sendorderconfirmation", f"Bearer {SECRET}") in echo.seen


def test_execute_refuses_a_workflow_with_an_unset_variable(tmp_path: Path, echo: Echo) -> None:
    """Status 2 and one diagnostic naming the variable at its position; nothing is called."""
    path = tmp_path / "echo.yaml"
    path.write_text(workflow(echo.server_address[1]))
    done = subprocess.run(
        [sys.executable, "-m", "maestro_gateway", "execute", str(path), "--input", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment(),
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        f"{path}:6:41: environment variable MAESTRO_TEST_TOKEN is not set"
    )
    assert echo.seen == []


def test_every_example_workflow_passes_maestro_validate() -> None:
    """maestro validate workflows/*.yaml exits 0 (as a subprocess, in a bare environment)."""
    files = sorted(str(p) for p in (ROOT / "workflows").glob("*.yaml"))
    done = subprocess.run(
        [sys.executable, "-m", "maestro_gateway", "validate", *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=environment(),
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def drain(call: Any, events: list[pb.ExecutionEvent]) -> None:
    """Collect a stream's messages into ``events`` until it ends (or raises its status)."""
    async for event in call:
        events.append(event)  # noqa: PERF401  (kept when the stream ends in an error)


async def test_serve_at_debug_level_never_logs_or_reports_an_env_value(
    tmp_path: Path, echo: Echo
) -> None:
    """The workflow with an unset variable is skipped (named in the log); the other runs, and
    neither its events, its RPC status nor any debug log line shows the value."""
    port = echo.server_address[1]
    directory = tmp_path / "workflows"
    directory.mkdir()
    (directory / "echo.yaml").write_text(workflow(port))
    (directory / "unset.yaml").write_text(workflow(port, "unset", "MAESTRO_TEST_UNSET"))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "maestro_gateway", "serve", "--workflows", str(directory)),
        *("--port", "0", "--journal", "none", "--log-level", "debug"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(MAESTRO_TEST_TOKEN=SECRET),
        cwd=tmp_path,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = asyncio.ensure_future(process.stderr.read())
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        ready = READY.fullmatch(line.strip())
        assert ready, line
        assert ready.group(2) == "1"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ready.group(1)}") as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            call = stub.Execute(pb.ExecuteRequest(workflow="echo", input=struct_pb2.Struct()))
            events: list[pb.ExecutionEvent] = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await drain(call, events)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    log = (await stderr).decode()
    reported = "".join(str(event) for event in events)
    kinds = [event.WhichOneof("event") for event in events]
    assert "step_retrying" in kinds
    assert "compensation_failed" in kinds
    assert SECRET not in reported
    assert "POST /fail/***" in reported
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert SECRET not in (info.value.details() or "")
    assert "Bearer ***" in (info.value.details() or "")
    assert SECRET not in str(info.value.trailing_metadata())
    assert SECRET not in log
    assert "environment variable MAESTRO_TEST_UNSET is not set" in log
    assert "execution_error" in log
    assert "level=DEBUG" in log
    assert "/fail/***?key=***" in log  # httpx's request line, at debug level
    assert any(seen == f"Bearer {SECRET}" for _, seen in echo.seen)
