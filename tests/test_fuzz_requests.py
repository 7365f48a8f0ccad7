"""Fuzzing the API: whatever a client sends, the gateway answers with a clean status and lives on.

One real gateway on 127.0.0.1:0 for the module (``create_gateway`` with the scripted
``FakeTransports`` of tests/test_server.py; its downstream methods echo their request), serving:

- ``typed``: an input schema (strings, integers, arrays of objects, a nested object), a step
  echoing the whole input, one computing over it (``size``, ``has``, ``map``, arithmetic), and an
  output reading both;
- ``free``: no schema, a step echoing the input whole, as text and as a header;
- ``heavy``: a step whose input is an expensive CEL expression over the input list
  (``input.xs.map(x, input.xs.map(y, x * y))`` and ``input.xs.map(x, input.xs)``).

Properties, each over Hypothesis examples:

- random JSON as an ``Execute``/``Run`` input (nested up to and beyond ``max_input_depth`` and
  protobuf's 100 levels, huge integers, infinities, strings with invalid UTF-8, duplicate keys;
  encoded by hand, since protobuf refuses to encode what is too deep) is answered OK or with a
  client-error status and a message, never UNKNOWN, INTERNAL or DATA_LOSS;
- random bytes as an ``ExecuteRequest`` (and valid requests with bytes flipped, cut or inserted)
  likewise: INVALID_ARGUMENT when undecodable, whatever the request means when they decode;
- after every example the health service answers SERVING and a plain execution succeeds.

Then the regressions found, and the CEL bound end to end: an expression that is too expensive
fails its step with INVALID_ARGUMENT naming the bound, and the gateway goes on.

``HYPOTHESIS_PROFILE=fuzz`` draws 50 times as many examples (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from maestro.v1 import gateway_pb2 as pb
from test_server import FakeTransports, collect

from maestro_gateway.codes import Code
from maestro_gateway.errors import ExecutionError
from maestro_gateway.expr import values
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.schema import check_input
from maestro_gateway.server.app import GatewayServer, create_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLES = settings.default.max_examples
GATEWAY = "maestro.v1.Gateway"
TYPED = """\
name: typed
input:
  type: object
  required: [id]
  properties:
    id: {type: string, maxLength: 64}
    qty: {type: integer, minimum: 1}
    lines:
      type: array
      items:
        type: object
        required: [sku]
        properties: {sku: {type: string}, qty: {type: integer}}
    meta: {type: object}
    flag: {type: boolean}
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: echo
    service: shop
    method: Echo
    input: "{{ input }}"
  - id: count
    service: shop
    method: Echo
    when: "{{ !has(input.flag) || input.flag }}"
    input:
      n: "{{ size(input) }}"
      twice: "{{ has(input.qty) ? input.qty * 2 : 0 }}"
      skus: "{{ has(input.lines) ? input.lines.map(l, l.sku) : [] }}"
      label: "{{ input.id }}-{{ has(input.meta) ? input.meta : null }}"
output:
  id: "{{ input.id }}"
  echo: "{{ echo }}"
  count: "{{ count }}"
"""
FREE = """\
name: free
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: echo
    service: shop
    method: Echo
    input: {all: "{{ input }}", text: "input: {{ input }}", keys: "{{ size(input) }}"}
    metadata: {x-input: "{{ input }}"}
output: "{{ echo }}"
"""
HEAVY = """\
name: heavy
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: products
    when: "{{ has(input.xs) }}"
    service: shop
    method: Echo
    input: {table: "{{ input.xs.map(x, input.xs.map(y, x * y)) }}"}
  - id: copies
    when: "{{ has(input.ys) }}"
    service: shop
    method: Echo
    input: {copies: "{{ input.ys.map(y, input.ys) }}"}
"""
BAD_STATUSES = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS)


async def echo(request: Any) -> Any:
    return request


@dataclass
class Gateway:
    server: GatewayServer
    channel: grpc.aio.Channel
    execute: Callable[..., Any]
    run: Callable[..., Any]
    health: health_pb2_grpc.HealthStub


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """One gateway for the module, serving ``typed`` and ``heavy``, with raw-bytes stubs."""
    directory: Path = tmp_path_factory.mktemp("fuzz-workflows")
    (directory / "typed.yaml").write_text(TYPED)
    (directory / "heavy.yaml").write_text(HEAVY)
    (directory / "free.yaml").write_text(FREE)
    server, problems = create_gateway(directory, transports=FakeTransports({"Echo": echo}))
    assert problems == []
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    identity: Callable[[bytes], bytes] = lambda raw: raw  # noqa: E731
    yield Gateway(
        server,
        channel,
        channel.unary_stream(
            f"/{GATEWAY}/Execute",
            request_serializer=identity,
            response_deserializer=pb.ExecutionEvent.FromString,
        ),
        channel.unary_unary(
            f"/{GATEWAY}/Run",
            request_serializer=identity,
            response_deserializer=pb.ExecutionResult.FromString,
        ),
        health_pb2_grpc.HealthStub(channel),
    )
    await channel.close()
    await server.shutdown(0)


# -- encoding requests by hand -------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@dataclass(frozen=True)
class BadText:
    """A string whose bytes are not UTF-8 (protobuf refuses to decode it)."""

    raw: bytes


def _value(value: Any) -> bytes:
    """A ``google.protobuf.Value``, at any depth (protobuf itself stops at 100)."""
    if value is None:
        return _varint(1 << 3) + _varint(0)
    if isinstance(value, bool):
        return _varint(4 << 3) + _varint(int(value))
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf if value > 0 else -math.inf
        return _varint(2 << 3 | 1) + struct.pack("<d", number)
    if isinstance(value, str):
        return _field(3, value.encode("utf-8"))
    if isinstance(value, BadText):
        return _field(3, value.raw)
    if isinstance(value, list):
        return _field(6, b"".join(_field(1, _value(v)) for v in value))
    return _field(5, _struct(value))


def _struct(value: dict[Any, Any] | list[tuple[Any, Any]]) -> bytes:
    pairs = value.items() if isinstance(value, dict) else value
    return b"".join(
        _field(
            1, _field(1, k.encode("utf-8") if isinstance(k, str) else k.raw) + _field(2, _value(v))
        )
        for k, v in pairs
    )


def request_bytes(workflow: str, value: dict[Any, Any] | list[tuple[Any, Any]]) -> bytes:
    """An ``ExecuteRequest`` for ``workflow`` with input ``value``, encoded by hand."""
    return _field(1, workflow.encode()) + _field(2, _struct(value))


# -- the values ----------------------------------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from(["id", "qty", "lines", "meta", "flag", "sku", "xs", "", "a.b", "\u202e"]),
    st.text(max_size=6),
)
EXTRA_KEYS = KEYS.filter(lambda k: k not in ("id", "qty", "lines", "meta", "flag"))
TEXT = st.one_of(
    st.text(max_size=12), st.sampled_from(["A-1", "", "\x00", "\U0010ffff", "é\u0301", "\u202e"])
)
NUMBERS = st.one_of(
    st.integers(-(2**64), 2**64),
    st.integers().map(lambda n: n * 10**300),  # beyond a double: sent as an infinity
    st.floats(allow_nan=False),
)
CLEAN = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
# not UTF-8: a stray byte, a cut sequence, a surrogate, beyond U+10FFFF, an overlong form
BAD_TEXT = st.sampled_from(
    [b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
).map(BadText)
SCALARS = st.one_of(CLEAN, BAD_TEXT)


def _json(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)
        ),
        max_leaves=12,
    )


JSON = _json(SCALARS)
CLEAN_JSON = _json(CLEAN)


@st.composite
def inputs(draw: st.DrawFn) -> dict[Any, Any] | list[tuple[Any, Any]]:
    """An execution input: half of the time shaped as ``typed`` wants it (so that executions run),
    else anything; sometimes nested ``depth`` levels deep (the limit is 32, protobuf's 100),
    sometimes with a duplicate key."""
    value: dict[Any, Any] = {}
    if draw(st.booleans()):
        value["id"] = draw(st.text(max_size=64))
        optional: dict[str, st.SearchStrategy[Any]] = {
            "qty": st.one_of(st.integers(1, 2**53), st.sampled_from([1.0, 2.0**53])),
            "lines": st.lists(
                st.fixed_dictionaries(
                    {"sku": st.text(max_size=5)}, optional={"qty": st.integers(-(2**60), 2**60)}
                ),
                max_size=5,
            ),
            "meta": st.dictionaries(KEYS, CLEAN_JSON, max_size=4),
            "flag": st.booleans(),
        }
        extra = CLEAN_JSON
    else:
        if draw(st.integers(0, 3)):
            value["id"] = draw(st.one_of(st.text(max_size=70), SCALARS))
        optional = {
            "qty": st.one_of(st.integers(-3, 2**60), SCALARS),
            "lines": st.lists(
                st.fixed_dictionaries({"sku": SCALARS}, optional={"qty": SCALARS}), max_size=5
            ),
            "meta": JSON,
            "flag": SCALARS,
        }
        extra = JSON
    for key, strategy in optional.items():
        if draw(st.booleans()):
            value[key] = draw(strategy)
    value.update(draw(st.dictionaries(EXTRA_KEYS, extra, max_size=3)))
    if draw(st.integers(0, 3)) == 0:
        depth = draw(st.integers(1, 140))
        nested: Any = draw(CLEAN)
        for _ in range(depth):
            nested = [nested] if draw(st.booleans()) else {"k": nested}
        value[draw(EXTRA_KEYS)] = nested
    if draw(st.integers(0, 7)) == 0:
        pairs = list(value.items())
        pairs.append(("id", draw(SCALARS)))
        return pairs
    return value


def nest(depth: int) -> Any:
    """``depth`` lists around a number."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def outcome(gw: Gateway, method: str, raw: bytes) -> grpc.StatusCode:
    """Send ``raw`` to ``method`` and return the status it ends with, checked to be clean."""
    code, details = grpc.StatusCode.OK, ""
    try:
        if method == "Execute":
            events = [event async for event in gw.execute(raw, timeout=30)]
            assert events
            assert events[-1].WhichOneof("event") == "finished"
            assert events[-1].finished.result.status == pb.EXECUTION_STATUS_SUCCEEDED
        else:
            result = await gw.run(raw, timeout=30)
            assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
    except grpc.aio.AioRpcError as err:
        code, details = err.code(), err.details() or ""
    assert code not in BAD_STATUSES, f"{method}: {code.name} {details!r}"
    assert code is grpc.StatusCode.OK or details.strip()
    return code


async def still_serving(gw: Gateway) -> None:
    """Health answers SERVING and a plain execution of ``typed`` succeeds."""
    reply = await gw.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert await outcome(gw, "Run", request_bytes("typed", {"id": "ok"})) is grpc.StatusCode.OK


# -- the properties ------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=inputs(),
    method=st.sampled_from(["Execute", "Run"]),
    workflow=st.sampled_from(["typed", "free"]),
)
@example(value={"id": "A", "meta": nest(31)}, method="Execute", workflow="typed")  # depth 32
@example(value={"id": "A", "meta": nest(32)}, method="Execute", workflow="typed")  # 33: over
@example(value={"id": "A", "meta": nest(120)}, method="Run", workflow="free")  # protobuf's 100
@example(value={"id": "A", "qty": 2**70}, method="Run", workflow="typed")
@example(
    value={"id": "A", "qty": 1e300, "lines": [{"sku": "s", "qty": math.inf}]},
    method="Execute",
    workflow="free",
)
async def test_any_json_input_gets_a_clean_status(
    gateway: Gateway, value: dict[Any, Any] | list[tuple[Any, Any]], method: str, workflow: str
) -> None:
    """Random JSON against a workflow with an input schema and one without: OK, or a client-error
    status with a message (INVALID_ARGUMENT for the schema, the depth limit, undecodable bytes or
    a step's expression), never UNKNOWN or INTERNAL; the gateway keeps serving."""
    note(repr(value)[:2000])
    code = await outcome(gateway, method, request_bytes(workflow, value))
    event(f"{workflow}: {code.name}")
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
    await still_serving(gateway)


def _valid_request() -> bytes:
    data = struct_pb2.Struct()
    data.update({"id": "A-1", "qty": 2, "lines": [{"sku": "s", "qty": 1}], "meta": {"a": [1]}})
    request = pb.ExecuteRequest(workflow="typed", input=data, labels={"team": "shop"})
    return bytes(request.SerializeToString())


@st.composite
def request_like_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid ``ExecuteRequest`` with bytes flipped, cut, inserted or removed."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    raw = bytearray(_valid_request())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        edit = draw(st.sampled_from(["flip", "cut", "insert", "remove"]))
        if edit == "flip" and at < len(raw):
            raw[at] ^= draw(st.integers(1, 255))
        elif edit == "cut":
            del raw[at:]
        elif edit == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "remove":
            del raw[at : at + draw(st.integers(1, 8))]
    return bytes(raw)


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=request_like_bytes(), method=st.sampled_from(["Execute", "Run"]))
@example(raw=b"\x0a\xff\xff\xff\xff\x0f", method="Execute")  # a length beyond the message
@example(raw=b"\x12\x02\x0a", method="Run")  # a truncated Struct entry
@example(raw=b"\x0a\x02\xc3\x28", method="Execute")  # a workflow name that is not UTF-8
async def test_random_bytes_as_a_request_get_a_clean_status(
    gateway: Gateway, raw: bytes, method: str
) -> None:
    """Bytes that do not decode are INVALID_ARGUMENT; bytes that do get whatever the request they
    decode to deserves (NOT_FOUND for an unknown workflow …); never UNKNOWN or INTERNAL."""
    note(raw.hex())
    code = await outcome(gateway, method, raw)
    event(code.name)
    try:
        pb.ExecuteRequest.FromString(raw)
    except Exception:  # any decode failure means the bytes are not a request
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    await still_serving(gateway)


# -- the CEL bound, end to end -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bound"),
    [
        ({"xs": list(range(100))}, "ran 10000 comprehension iterations"),
        ({"ys": list(range(110))}, "more than 10000 values (max_rendered_values)"),
    ],
)
async def test_too_expensive_an_expression_fails_its_step_and_the_gateway_goes_on(
    gateway: Gateway, value: dict[str, Any], bound: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expression over the input that CEL's budget or the rendered-size limit cuts fails its
    step with INVALID_ARGUMENT naming the bound; the gateway keeps serving. (The size limit is
    lowered from its 1,000,000 values to keep the test fast; tests/test_fuzz_language.py checks
    the default.)"""
    monkeypatch.setattr(values, "MAX_RENDERED_VALUES", 10_000)
    events, err = await collect(gateway.execute(request_bytes("heavy", value), timeout=30))
    assert err is not None
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bound in (err.details() or "")
    failed = [e.step_failed for e in events if e.WhichOneof("event") == "step_failed"]
    assert [f.error.code for f in failed] == ["INVALID_ARGUMENT"]
    assert bound in failed[0].error.message
    await still_serving(gateway)


async def test_just_under_the_iteration_budget_an_expression_runs() -> None:
    """99 × 99 products (9,900 iterations) are computed; 100 × 100 are not (above)."""
    workflow = load_string(HEAVY)
    step = workflow.steps[0]
    rendered = step.call.input.render({"input": {"xs": list(range(99))}})  # type: ignore[union-attr]
    assert rendered["table"][98][98] == 98 * 98


# -- regressions ---------------------------------------------------------------------------------


async def test_unresolvable_ref_at_execution_is_a_failed_precondition_not_an_exception() -> None:
    """A schema ``$ref`` that cannot be resolved made every execution raise jsonschema's
    ``_WrappedReferencingError`` (UNKNOWN to the client). The loader now refuses it
    (tests/test_fuzz_language.py); a workflow built another way still gets a clean error."""
    loaded = load_string(
        'name: w\ninput: {type: object}\nservices:\n  s: {type: grpc, endpoint: "x:1"}\n'
        "steps: [{id: a, service: s, method: M}]\n"
    )
    workflow = dataclasses.replace(loaded, input_schema={"$ref": "http://127.0.0.1:9/s.json"})
    with pytest.raises(ExecutionError) as info:
        check_input(workflow, {"a": 1})
    assert info.value.code is Code.FAILED_PRECONDITION
    assert "input schema of workflow 'w' cannot be used" in info.value.message


async def test_schema_looping_below_a_property_is_a_failed_precondition() -> None:
    """A ``$ref`` loop reached only through a property loads (no simple input reaches it); an
    input that reaches it raised RecursionError (UNKNOWN to the client): now FAILED_PRECONDITION."""
    workflow = load_string(
        "name: w\ninput: {$defs: {a: {$ref: '#/$defs/a'}}, properties: {x: {$ref: '#/$defs/a'}}}\n"
        'services:\n  s: {type: grpc, endpoint: "x:1"}\nsteps: [{id: a, service: s, method: M}]\n'
    )
    check_input(workflow, {"y": 1})
    with pytest.raises(ExecutionError) as info:
        check_input(workflow, {"x": 1})
    assert info.value.code is Code.FAILED_PRECONDITION
    assert "references loop without end" in info.value.message
