"""``maestro validate --connect``: workflows checked against live gRPC schemas, with positions."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from envelope_kit import EnvelopeServer, Legacy, start_envelope
from grpc_testkit import RunningServer, Schema, compile_protoset, start_server

from maestro_gateway.cli import main
from maestro_gateway.cli.connect import check_workflows
from maestro_gateway.model.bundle import load_together
from maestro_gateway.model.loader import load_file

HEADER = """\
name: t
services:
  k: {endpoint: "EP"}
steps:
"""


@pytest.fixture(scope="session")
def protoset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test protos compiled once into a FileDescriptorSet."""
    return compile_protoset(tmp_path_factory.mktemp("protos") / "kitchen.pb")


@pytest.fixture(scope="session")
def schema(protoset: Path) -> Schema:
    """The compiled test protos."""
    return Schema(protoset)


@pytest.fixture
async def server(schema: Schema) -> AsyncIterator[RunningServer]:
    """A Kitchen/Mirror server with v1alpha reflection."""
    running = await start_server(schema)
    yield running
    await running.server.stop(None)


@pytest.fixture
async def bare_server(schema: Schema) -> AsyncIterator[RunningServer]:
    """A Kitchen/Mirror server without reflection."""
    running = await start_server(schema, reflection_versions=())
    yield running
    await running.server.stop(None)


@pytest.fixture
def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return port


def write(tmp_path: Path, text: str, endpoint: str, name: str = "wf.yaml") -> Path:
    """Write a workflow with ``EP`` replaced by ``endpoint``."""
    path = tmp_path / name
    path.write_text(text.replace("EP", endpoint))
    return path


def endpoint_at(path: Path) -> str:
    """``line:col`` of the (quoted) endpoint of service k."""
    return at(path, '"127')


def at(path: Path, needle: str, nth: int = 1) -> str:
    """``line:col`` of the ``nth`` occurrence of ``needle`` in the file."""
    text = path.read_text()
    index = -1
    for _ in range(nth):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{line}:{column}"


async def check(path: Path, load_timeout: float = 5.0) -> list[str]:
    """The --connect diagnostics of one file, as ``line:col: message``."""
    found = await check_workflows([load_file(str(path))], load_timeout=load_timeout)
    assert all(d.file == str(path) for d in found)
    return [f"{d.line}:{d.column}: {d.message}" for d in found]


def one_step(method: str, input_yaml: str) -> str:
    """A workflow with one step calling ``method`` of service k with ``input_yaml``."""
    return HEADER + f"  - id: a\n    service: k\n    method: {method}\n    input: {input_yaml}\n"


async def test_valid_workflow_has_no_problems(server: RunningServer, tmp_path: Path) -> None:
    """Correct methods, fields, lowerCamel names, templates and references give no diagnostic."""
    text = """\
name: ok
services:
  k: {endpoint: "EP"}
  web: {type: http, endpoint: "http://127.0.0.1:9"}
steps:
  - id: a
    service: k
    method: testing.v1.Kitchen/Echo
    input:
      i32: 1
      i64: "9007199254740993"
      d: 2
      s: "{{ input.s }}"
      b: false
      color: COLOR_GREEN
      inner: {label: x, n: 2.0}
      items: [{label: y}]
      counts: {a: 1}
      by_id: {"7": {label: z}}
      at: "2024-01-01T00:00:00Z"
      took: 1.5s
      big: 12
      extra: {any: [1, "x"]}
      note: "{{ input.note }}"
  - parallel:
      - id: b
        service: k
        method: Fail
        input: {retryAfterMs: "{{ a.inner.n }}", message: "{{ a.items }}"}
        compensate:
          method: testing.v1.Mirror.Reflect
          input: {s: "{{ steps.b.output.s }} {{ error.code }}"}
      - id: h
        service: web
        method: "POST /x/{{ a.inner.label }}"
        when: a.b || has(a.inner.label)
  - id: c
    service: k
    method: Count
    input: {n: "{{ a.i32 }}"}
output:
  first: "{{ .a.counts.whatever }}"
  streamed: "{{ c[0].s }}"
  note: "{{ a.at }} {{ a.extra.free.form }}"
"""
    assert await check(write(tmp_path, text, server.endpoint)) == []


async def test_method_resolution(server: RunningServer, tmp_path: Path) -> None:
    """Ambiguous bare names list candidates; unknown methods and services list what exists."""
    text = (
        HEADER
        + """\
  - id: a
    service: k
    method: Echo
  - id: b
    service: k
    method: testing.v1.Nope/Echo
  - id: c
    service: k
    method: testing.v1.Mirror/Eccho
    compensate:
      method: Undo
"""
    )
    path = write(tmp_path, text, server.endpoint)
    assert await check(path) == [
        f"{at(path, 'Echo')}: steps.a.method: method name 'Echo' is ambiguous: it matches "
        "testing.v1.Kitchen/Echo, testing.v1.Mirror/Echo; write it as pkg.Service/Method",
        f"{at(path, 'testing.v1.Nope')}: steps.b.method: unknown service 'testing.v1.Nope'; "
        "the target serves: testing.v1.Kitchen, testing.v1.Mirror",
        f"{at(path, 'testing.v1.Mirror')}: steps.c.method: service 'testing.v1.Mirror' has no "
        "method 'Eccho'; its methods: Echo, Reflect",
        f"{at(path, 'Undo')}: steps.c.compensate.method: no service of the target has a method "
        "'Undo'; methods: testing.v1.Kitchen/Chat, testing.v1.Kitchen/Count, "
        "testing.v1.Kitchen/Echo, testing.v1.Kitchen/Fail, testing.v1.Kitchen/Sleep, "
        "testing.v1.Kitchen/Sum, testing.v1.Kitchen/Who, testing.v1.Mirror/Echo, "
        "testing.v1.Mirror/Reflect",
    ]


async def test_unknown_fields_nested_and_repeated(server: RunningServer, tmp_path: Path) -> None:
    """Unknown keys are named by path and message type, with a suggestion, at the key."""
    text = (
        HEADER
        + """\
  - id: a
    service: k
    method: Who
    input:
      inner: {lable: x}
      items: [{label: ok}, {nn: 2}]
      by_id: {"1": {labl: x}}
      i33: 1
      nothing_like_it: 1
    compensate:
      method: Fail
      input: {retry_after: 1, mesage: x}
"""
    )
    path = write(tmp_path, text, server.endpoint)
    assert await check(path) == [
        f"{at(path, 'lable')}: steps.a.input.inner.lable: unknown field 'lable' in "
        "testing.v1.Inner (did you mean 'label'?)",
        f"{at(path, 'nn: 2')}: steps.a.input.items[1].nn: unknown field 'nn' in testing.v1.Inner "
        "(did you mean 'n'?)",
        f"{at(path, 'labl:')}: steps.a.input.by_id.1.labl: unknown field 'labl' in "
        "testing.v1.Inner (did you mean 'label'?)",
        f"{at(path, 'i33')}: steps.a.input.i33: unknown field 'i33' in testing.v1.Everything "
        "(did you mean 'i32'?)",
        f"{at(path, 'nothing_like_it')}: steps.a.input.nothing_like_it: unknown field "
        "'nothing_like_it' in testing.v1.Everything",
        f"{at(path, 'retry_after')}: steps.a.compensate.input.retry_after: unknown field "
        "'retry_after' in testing.v1.FailRequest (did you mean 'retry_after_ms'?)",
        f"{at(path, 'mesage')}: steps.a.compensate.input.mesage: unknown field 'mesage' in "
        "testing.v1.FailRequest (did you mean 'message'?)",
    ]


EVERYTHING = "testing.v1.Everything"
LITERALS = [
    ("i32", "7", None),
    ("i32", "2.0", None),
    ("i32", '"12"', None),
    ("i32", "null", None),
    ("i32", "1.5", "field 'i32' of E is int32; expected an integer, got the number 1.5"),
    (
        "i32",
        "3000000000",
        "field 'i32' of E is int32; expected an integer in [-2147483648, 2147483647], "
        "got the number 3000000000",
    ),
    (
        "u64",
        "-1",
        "field 'u64' of E is uint64; expected an integer in [0, 18446744073709551615], "
        "got the number -1",
    ),
    ("i64", '"abc"', "field 'i64' of E is int64; expected an integer, got the string 'abc'"),
    ("i32", "true", "field 'i32' of E is int32; expected an integer, got the boolean true"),
    ("i32", '"{{ input.n }}"', None),
    ("d", '"NaN"', None),
    ("d", "1", None),
    ("d", '"x"', "field 'd' of E is double; expected a number, got the string 'x'"),
    ("s", "3", "field 's' of E is string; expected a string, got the number 3"),
    ("s", "[a]", "field 's' of E is string; expected a string, got a list"),
    ("s", '"{{ input.x }} y"', None),
    ("b", "true", None),
    ("b", '"true"', "field 'b' of E is bool; expected true or false, got the string 'true'"),
    ("b", '"{{ input.x }}"', None),
    (
        "b",
        '"x {{ input.x }}"',
        "field 'b' of E is bool; expected true or false, got text with templates",
    ),
    ("raw", '"aGk="', None),
    ("color", "COLOR_RED", None),
    ("color", "1", None),
    (
        "color",
        "COLOR_REED",
        "'COLOR_REED' is not a value of testing.v1.Color (did you mean 'COLOR_RED'?) "
        "(values: COLOR_UNSPECIFIED, COLOR_RED, COLOR_GREEN)",
    ),
    (
        "color",
        "true",
        "field 'color' of E is testing.v1.Color; expected a testing.v1.Color name, got the boolean true",
    ),
    ("inner", "null", None),
    ("inner", "3", "expected a mapping for testing.v1.Inner, got the number 3"),
    ("inner", '"{{ input }}"', None),
    (
        "items",
        "{label: x}",
        "field 'items' of E is repeated testing.v1.Inner; expected a list, got a mapping",
    ),
    ("longs", "[1, 2]", None),
    ("counts", "[1]", "field 'counts' of E is map<string, int64>; expected a mapping, got a list"),
    ("at", '"2024-01-01T00:00:00Z"', None),
    ("at", "3", "expected a string for google.protobuf.Timestamp, got the number 3"),
    ("took", '"1.5s"', None),
    ("big", '"12"', None),
    (
        "big",
        '"x"',
        "field 'big' of E is google.protobuf.Int64Value; expected an integer, got the string 'x'",
    ),
    ("extra", "{a: [1]}", None),
    ("extra", "3", "expected a mapping for google.protobuf.Struct, got the number 3"),
    ("note", "x", None),
    ("name", "x", None),
]


@pytest.mark.parametrize(("field", "value", "message"), LITERALS)
async def test_literal_value_types(
    server: RunningServer, tmp_path: Path, field: str, value: str, message: str | None
) -> None:
    """Literal values must fit the field's type as proto3 JSON parsing would; templates pass."""
    flow = f"{{{field}: {value}}}"
    path = write(tmp_path, one_step("testing.v1.Kitchen/Echo", flow), server.endpoint)
    line, column = at(path, flow).split(":")
    where = f"{line}:{int(column) + len(field) + 3}"  # the value node, after "{field: "
    expected = []
    if message is not None:
        message = message.replace("of E ", f"of {EVERYTHING} ")
        expected = [f"{where}: steps.a.input.{field}: {message}"]
    assert await check(path) == expected


async def test_map_keys_and_values(server: RunningServer, tmp_path: Path) -> None:
    """Map keys must fit the key type and map values the value type, named by their key."""
    path = write(
        tmp_path,
        one_step("Who", '{counts: {a: 1, b: x}, by_id: {"2": {}, y: {}}}'),
        server.endpoint,
    )
    assert await check(path) == [
        f"{at(path, 'x}')}: steps.a.input.counts.b: field 'counts' of {EVERYTHING} is "
        "map<string, int64>; expected an integer, got the string 'x'",
        f"{at(path, 'y:')}: steps.a.input.by_id.y: field 'by_id' of {EVERYTHING} is "
        "map<int32, testing.v1.Inner>; its keys must be integers, got 'y'",
    ]


async def test_malformed_duration_names_the_value(server: RunningServer, tmp_path: Path) -> None:
    """A Duration literal is parsed as proto3 JSON would parse it, and the reason is given."""
    path = write(tmp_path, one_step("Who", '{took: "5 minutes"}'), server.endpoint)
    (found,) = await check(path)
    where = at(path, '"5 minutes"')
    assert found.startswith(f"{where}: steps.a.input.took: '5 minutes' is not a valid ")


async def test_output_references_walk_the_response(server: RunningServer, tmp_path: Path) -> None:
    """Selections on a gRPC output name real response fields, wherever the template is."""
    text = """\
name: refs
services:
  k: {endpoint: "EP"}
  web: {type: http, endpoint: "http://127.0.0.1:9"}
steps:
  - id: a
    service: k
    method: testing.v1.Kitchen/Echo
    output: first
  - id: b
    service: k
    method: Who
    when: first.bb
    input:
      s: "x {{ first.inerr.label }}"
      name: "{{ steps.a.output.i32.x }}"
      note: "{{ first.items.anything }} {{ first.counts.any }} {{ first.at.any }}"
    compensate:
      method: Who
      input: {s: "{{ b.ss }}"}
  - id: h
    service: web
    method: "GET /x/{{ first.sx }}"
    headers: {x-a: "{{ first['colour'] }}"}
output:
  v: "{{ .first.inner.lable }}"
"""
    path = write(tmp_path, text, server.endpoint)
    colour = at(path, "'colour'")  # a bracket selection points at its string literal
    assert await check(path) == [
        f"{at(path, 'bb')}: steps.b.when: first.bb: {EVERYTHING} has no field 'bb' "
        "(did you mean 'b'?)",
        f"{at(path, 'inerr')}: steps.b.input.s: first.inerr: {EVERYTHING} has no field "
        "'inerr' (did you mean 'inner'?)",
        f"{at(path, 'x }}')}: steps.b.input.name: steps.a.output.i32.x: steps.a.output.i32 "
        "is int32, which has no fields",
        f"{at(path, 'ss }}')}: steps.b.compensate.input.s: b.ss: {EVERYTHING} has no field "
        "'ss' (did you mean 's'?)",
        f"{at(path, 'sx')}: steps.h.method: first.sx: {EVERYTHING} has no field 'sx' "
        "(did you mean 's'?)",
        f"{colour}: steps.h.headers.x-a: first.colour: {EVERYTHING} has no field "
        "'colour' (did you mean 'color'?)",
        f"{at(path, 'lable')}: output.v: first.inner.lable: testing.v1.Inner has no field "
        "'lable' (did you mean 'label'?)",
    ]


async def test_client_streaming_input_is_a_list(server: RunningServer, tmp_path: Path) -> None:
    """A client-streaming method takes a list of requests, each checked against the message."""
    text = (
        HEADER
        + """\
  - id: a
    service: k
    method: Sum
    input: [{i64: 1}, {i46: 2}]
  - id: b
    service: k
    method: Chat
    input: {s: x}
"""
    )
    path = write(tmp_path, text, server.endpoint)
    assert await check(path) == [
        f"{at(path, 'i46')}: steps.a.input[1].i46: unknown field 'i46' in {EVERYTHING} "
        "(did you mean 'i64'?)",
        f"{at(path, '{s: x}')}: steps.b.input: testing.v1.Kitchen/Chat is client-streaming: "
        f"its input must be a list of {EVERYTHING}, got a mapping",
    ]


async def test_protoset_source_without_reflection(
    bare_server: RunningServer, protoset: Path, tmp_path: Path
) -> None:
    """A service without reflection is checked against its protoset file."""
    text = f"""\
name: t
services:
  k: {{endpoint: "EP", descriptors: {{protoset: {protoset}}}}}
steps:
  - id: a
    service: k
    method: Echo
  - id: b
    service: k
    method: Who
    input: {{s: 1}}
"""
    path = write(tmp_path, text, bare_server.endpoint)
    found = await check(path)
    assert found == [
        f"{at(path, 'Echo')}: steps.a.method: method name 'Echo' is ambiguous: it matches "
        "testing.v1.Kitchen/Echo, testing.v1.Mirror/Echo; write it as pkg.Service/Method",
        f"{at(path, '1}')}: steps.b.input.s: field 's' of {EVERYTHING} is string; "
        "expected a string, got the number 1",
    ]


async def test_reflection_not_served_is_one_problem_at_endpoint(
    bare_server: RunningServer, tmp_path: Path
) -> None:
    """protocol: grpc without reflection (and no descriptor files): one problem at the endpoint."""
    text = one_step("Who", "{nope: 1}").replace('"EP"}', '"EP", protocol: grpc}')
    path = write(tmp_path, text, bare_server.endpoint)
    (found,) = await check(path)
    assert found.startswith(
        f"{endpoint_at(path)}: services.k: cannot load descriptors from {bare_server.endpoint}: "
        f"reflection on {bare_server.endpoint}"
    )


async def test_neither_reflection_nor_envelope_is_one_problem_at_endpoint(
    bare_server: RunningServer, tmp_path: Path
) -> None:
    """protocol: auto, no reflection and no Maestro.go envelope: one problem naming both."""
    path = write(tmp_path, one_step("Who", "{nope: 1}"), bare_server.endpoint)
    (found,) = await check(path)
    assert found.startswith(
        f"{endpoint_at(path)}: services.k: the service at {bare_server.endpoint} answers neither "
        "gRPC server reflection (v1, v1alpha) nor Maestro.go's envelope "
        "(maestro.v1.MaestroService/Execute)"
    )


async def test_unreachable_service_is_one_problem_at_endpoint(
    free_port: int, tmp_path: Path
) -> None:
    """An unreachable service is one diagnostic at its endpoint; its calls are not checked."""
    endpoint = f"127.0.0.1:{free_port}"
    text = one_step("Who", "{nope: 1}") + "  - {id: b, service: k, method: Nope}\n"
    path = write(tmp_path, text, endpoint)
    (found,) = await check(path)
    assert found.startswith(
        f"{endpoint_at(path)}: services.k: cannot load descriptors from {endpoint}: "
    )


async def test_silent_service_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    """A peer that accepts connections but never answers fails within the load timeout."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        path = write(tmp_path, one_step("Who", "{}"), f"127.0.0.1:{port}")
        async with asyncio.timeout(20):
            (found,) = await check(path, load_timeout=0.5)
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert found.startswith(f"{endpoint_at(path)}: services.k: cannot load descriptors from ")


async def test_cli_connect(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 when every file fits its services, 1 with file:line:col problems, 2 on misuse."""
    good = write(tmp_path, one_step("Who", "{s: x}"), server.endpoint, "good.yaml")
    bad = write(tmp_path, one_step("Who", "{ss: x}"), server.endpoint, "bad.yaml")
    assert await asyncio.to_thread(main, ["validate", "--connect", str(good)]) == 0
    assert capsys.readouterr().out == ""
    code = await asyncio.to_thread(main, ["validate", str(good), str(bad), "--connect"])
    assert code == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}:{at(bad, 'ss')}: steps.a.input.ss: unknown field 'ss' in {EVERYTHING} "
        "(did you mean 's'?)"
    ]
    # One reflection exchange per run: the second run's two files shared it.
    assert server.record.reflection_paths == ["v1alpha", "v1alpha"]
    assert await asyncio.to_thread(main, ["validate", str(bad)]) == 0
    timeout_args = ["validate", "--connect", "--connect-timeout", "0", str(good)]
    assert await asyncio.to_thread(main, timeout_args) == 2


async def test_http_only_workflow_needs_no_network(tmp_path: Path) -> None:
    """HTTP services have no schema: --connect checks nothing and opens no connection."""
    text = """\
name: web
services:
  web: {type: http, endpoint: "http://127.0.0.1:9"}
steps:
  - {id: a, service: web, method: /x, input: {anything: 1}}
"""
    path = write(tmp_path, text, "")
    assert await check(path) == []


@pytest.fixture(scope="session")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Legacy:
    """A schema written for Maestro.go: its envelope, and an Orchestrator service of its own."""
    return Legacy("envelope.proto", tmp_path_factory.mktemp("legacy") / "envelope.pb")


@pytest.fixture
async def envelopes() -> AsyncIterator[Callable[..., Any]]:
    """Start in-process envelope servers (answering success); all stopped afterwards."""
    started: list[EnvelopeServer] = []

    async def start(legacy: Legacy, *, reflection: bool = True) -> EnvelopeServer:
        running = await start_envelope(legacy, lambda _: {"success": True}, reflection=reflection)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.server.stop(None)


async def test_the_protocol_of_each_service_is_a_note(
    server: RunningServer, tmp_path: Path
) -> None:
    """One note per gRPC service at its name: the protocol chosen and why; notes are not problems."""
    path = write(tmp_path, one_step("Who", "{s: x}"), server.endpoint)
    notes: list[str] = []
    assert await check_workflows([load_file(str(path))], report=notes.append) == []
    assert notes == [
        f"{path}:3:3: note: services.k: protocol grpc (reflection lists no maestro.v1.MaestroService)"
    ]


ENVELOPE_STEPS = """\
name: legacy
services:
  k: {endpoint: "EP"}
steps:
  - {id: a, service: k, method: CreateUser, input: {email: "{{ input.email }}", anything: [1]}}
  - id: b
    service: k
    method: maestro.v1.Orchestrator/ExecuteWorkflow
    input: {workflow_nam: x}
    compensate: {method: DeleteUser, input: {id: "{{ a.id }}"}}
"""


async def test_envelope_calls_are_not_checked_and_own_methods_are(
    legacy: Legacy, envelopes: Callable[..., Any], tmp_path: Path
) -> None:
    """A method through the envelope has no schema to check; the service's own methods do."""
    running = await envelopes(legacy)
    path = write(tmp_path, ENVELOPE_STEPS, running.endpoint)
    notes: list[str] = []
    found = await check_workflows([load_file(str(path))], report=notes.append)
    assert [f"{d.line}:{d.column}: {d.message}" for d in found] == [
        f"{at(path, 'workflow_nam')}: steps.b.input.workflow_nam: unknown field 'workflow_nam' "
        "in maestro.v1.ExecuteRequest (did you mean 'workflow_name'?)"
    ]
    assert notes == [
        f"{path}:3:3: note: services.k: protocol maestro-go (reflection lists "
        "maestro.v1.MaestroService; the methods of maestro.v1.Orchestrator are still called "
        "directly)"
    ]
    assert running.received == []


async def test_an_envelope_service_without_reflection_is_a_note_not_a_problem(
    legacy: Legacy, envelopes: Callable[..., Any], tmp_path: Path
) -> None:
    """No reflection but an Execute that answers: the envelope is chosen, nothing is checked."""
    running = await envelopes(legacy, reflection=False)
    path = write(tmp_path, one_step("CreateUser", "{email: x}"), running.endpoint)
    notes: list[str] = []
    assert await check_workflows([load_file(str(path))], report=notes.append) == []
    assert notes == [
        f"{path}:3:3: note: services.k: protocol maestro-go "
        "(no reflection; the service answers maestro.v1.MaestroService/Execute)"
    ]
    assert running.received == []


async def test_an_envelope_of_another_shape_is_a_problem_at_the_endpoint(
    envelopes: Callable[..., Any], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A MaestroService whose messages are not Maestro.go's is reported at the endpoint."""
    broken = Legacy("string_payload.proto", tmp_path_factory.mktemp("broken") / "broken.pb")
    running = await envelopes(broken)
    path = write(tmp_path, one_step("CreateUser", "{email: x}"), running.endpoint)
    (found,) = await check(path)
    assert found == (
        f"{endpoint_at(path)}: services.k: its envelope is not Maestro.go's: "
        "maestro.v1.MaestroService/Execute: field 2 of maestro.v1.ServiceRequest is not "
        "Maestro.go's 'payload' (google.protobuf.Any)"
    )


async def test_cli_connect_prints_the_protocol_notes_on_stderr(
    legacy: Legacy,
    envelopes: Callable[..., Any],
    server: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """maestro validate --connect: notes on stderr, sorted by file; stdout and exit status as before."""
    running = await envelopes(legacy)
    first = write(tmp_path, one_step("CreateUser", "{email: x}"), running.endpoint, "a.yaml")
    second = write(tmp_path, one_step("Who", "{s: x}"), server.endpoint, "b.yaml")
    code = await asyncio.to_thread(main, ["validate", "--connect", str(second), str(first)])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{first}:3:3: note: services.k: protocol maestro-go (reflection lists "
        "maestro.v1.MaestroService; the methods of maestro.v1.Orchestrator are still called "
        "directly)",
        f"{second}:3:3: note: services.k: protocol grpc (reflection lists no "
        "maestro.v1.MaestroService)",
        "2 file(s) valid",
    ]


async def test_calls_in_a_foreach_body_are_checked(server: RunningServer, tmp_path: Path) -> None:
    """Inside a foreach body an unknown method or request field is reported at its position."""
    text = (
        HEADER
        + """\
  - id: lines
    foreach: "{{ input.lines }}"
    as: line
    steps:
      - id: a
        service: k
        method: testing.v1.Kitchen/Who
        input: {s: "{{ line.s }}", inner: {lable: "{{ line.label }}"}}
        compensate:
          method: testing.v1.Kitchen/Undo
          input: {s: "{{ a.ss }}"}
      - id: b
        service: k
        method: testing.v1.Mirror/Ecco
"""
    )
    path = write(tmp_path, text, server.endpoint)
    assert await check(path) == [
        f"{at(path, 'lable')}: steps.a.input.inner.lable: unknown field 'lable' in "
        "testing.v1.Inner (did you mean 'label'?)",
        f"{at(path, 'testing.v1.Kitchen/Undo')}: steps.a.compensate.method: service "
        "'testing.v1.Kitchen' has no method 'Undo'; its methods: Chat, Count, Echo, Fail, Sleep, "
        "Sum, Who",
        f"{at(path, 'ss }}')}: steps.a.compensate.input.s: a.ss: {EVERYTHING} has no field 'ss' "
        "(did you mean 's'?)",
        f"{at(path, 'testing.v1.Mirror')}: steps.b.method: service 'testing.v1.Mirror' has no "
        "method 'Ecco'; its methods: Echo, Reflect",
    ]


async def test_calls_nested_in_loops_switches_and_parallel_groups(
    server: RunningServer, tmp_path: Path
) -> None:
    """A parallel group in a switch branch in a loop body is checked, and so is ``until``."""
    text = (
        HEADER
        + """\
  - id: poll
    loop:
      steps:
        - id: route
          switch:
            - when: "{{ iteration > 0 }}"
              steps:
                - parallel:
                    - {id: a, service: k, method: Who, input: {i33: 1}}
                    - {id: b, service: k, method: testing.v1.Mirror/Echo2}
            - steps:
                - id: c
                  service: k
                  method: testing.v1.Mirror/Reflect
                  input: {inner: {n: x}}
      until: "{{ c != null && c.inerr.n > 2 }}"
      max_iterations: 3
"""
    )
    path = write(tmp_path, text, server.endpoint)
    assert await check(path) == [
        f"{at(path, 'i33')}: steps.a.input.i33: unknown field 'i33' in {EVERYTHING} "
        "(did you mean 'i32'?)",
        f"{at(path, 'testing.v1.Mirror/Echo2')}: steps.b.method: service 'testing.v1.Mirror' "
        "has no method 'Echo2'; its methods: Echo, Reflect",
        f"{at(path, 'x}}')}: steps.c.input.inner.n: field 'n' of testing.v1.Inner is int32; "
        "expected an integer, got the string 'x'",
        f"{at(path, 'inerr')}: steps.poll.loop.until: c.inerr: {EVERYTHING} has no field "
        "'inerr' (did you mean 'inner'?)",
    ]


async def test_selections_in_the_templates_of_the_kinds(
    server: RunningServer, tmp_path: Path
) -> None:
    """The templates a kind holds itself (foreach, concurrency, branch when, fail) are checked."""
    text = (
        HEADER
        + """\
  - id: a
    service: k
    method: testing.v1.Kitchen/Echo
  - id: each
    foreach: "{{ a.itemz }}"
    concurrency: "{{ a.i33 }}"
    steps:
      - {id: b, service: k, method: Who, input: {s: "{{ item.label }}"}}
  - id: pick
    switch:
      - when: "{{ a.bb }}"
        steps: [{id: c, service: k, method: Who, input: {s: "{{ a.items }}"}}]
  - id: stop
    when: "{{ a.colr == 'COLOR_RED' }}"
    fail: {code: ABORTED, message: "{{ a.ss }}"}
"""
    )
    path = write(tmp_path, text, server.endpoint)
    assert await check(path) == [
        f"{at(path, 'itemz')}: steps.each.foreach: a.itemz: {EVERYTHING} has no field 'itemz' "
        "(did you mean 'items'?)",
        f"{at(path, 'i33')}: steps.each.concurrency: a.i33: {EVERYTHING} has no field 'i33' "
        "(did you mean 'i32'?)",
        f"{at(path, 'bb')}: steps.pick.switch[0].when: a.bb: {EVERYTHING} has no field 'bb' "
        "(did you mean 'b'?)",
        f"{at(path, 'colr')}: steps.stop.when: a.colr: {EVERYTHING} has no field 'colr' "
        "(did you mean 'color'?)",
        f"{at(path, 'ss }}')}: steps.stop.fail.message: a.ss: {EVERYTHING} has no field 'ss' "
        "(did you mean 's'?)",
    ]


CHILD = """\
name: child
services:
  k: {endpoint: "EP"}
steps:
  - id: each
    foreach: "{{ input.items }}"
    steps:
      - {id: x, service: k, method: Who, input: {nme: "{{ item }}"}}
"""

PARENT = """\
name: parent
services:
  k: {endpoint: "EP"}
steps:
  - id: a
    service: k
    method: testing.v1.Kitchen/Echo
  - id: run
    workflow: child
    input: {items: "{{ a.itemz }}"}
"""


async def test_sub_workflows_are_checked_in_their_own_files(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A workflow's sub-workflows are checked with it, once, their problems in their own file."""
    parent = write(tmp_path, PARENT, server.endpoint, "parent.yaml")
    child = write(tmp_path, CHILD, server.endpoint, "child.yaml")
    expected = [
        f"{child}:{at(child, 'nme')}: steps.x.input.nme: unknown field 'nme' in {EVERYTHING} "
        "(did you mean 'name'?)",
        f"{parent}:{at(parent, 'itemz')}: steps.run.input.items: a.itemz: {EVERYTHING} has no "
        "field 'itemz' (did you mean 'items'?)",
    ]
    # Given alone, the parent brings its child; given together, the child is checked once.
    for files in ([parent], [parent, child]):
        loaded = [r.workflow for r in load_together([str(f) for f in files])]
        assert all(w is not None for w in loaded)
        found = await check_workflows([w for w in loaded if w is not None], report=None)
        assert sorted(str(d) for d in found) == sorted(expected)
    code = await asyncio.to_thread(main, ["validate", "--connect", str(parent)])
    assert code == 1
    assert capsys.readouterr().out.splitlines() == sorted(expected)
