"""Unit tests of the workflow language pieces: durations, scopes, retry merge, input schema."""

from __future__ import annotations

import pytest

from maestro_gateway.codes import DEFAULT_RETRY_CODES, Code
from maestro_gateway.errors import DefinitionError, ExecutionError
from maestro_gateway.model.durations import DurationError, format_duration, parse_duration
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.schema import check_input
from maestro_gateway.model.types import CallStep, HttpMethod, ParallelStep, RetryPolicy

HEAD = """name: t
services:
  inv:
    endpoint: "127.0.0.1:50051"
    timeout: 5s
    retry: {attempts: 3, backoff: constant, initial: 200ms, max: 1s, codes: [UNAVAILABLE]}
  web: {type: http, endpoint: "http://127.0.0.1:8081"}
"""


def problems(text: str) -> list[str]:
    """The messages of every diagnostic of ``text`` (empty when it loads)."""
    try:
        load_string(text)
    except DefinitionError as exc:
        return [d.message for d in exc.diagnostics]
    return []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("1m30s", 90), ("1h", 3600), ("1.5s", 1.5), ("2h3m4s", 7384)],
)
def test_duration_parses(text: str, seconds: float) -> None:
    """Durations with units parse into seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("30", "must have a unit, e.g. 30s"),
        ("-1s", "negative"),
        ("1d", "invalid duration"),
        ("", "empty"),
        ("1s1m", "largest to smallest"),
    ],
)
def test_duration_errors(text: str, needle: str) -> None:
    """Bare numbers, negatives, unknown units and disordered parts are refused with a hint."""
    with pytest.raises(DurationError, match=needle):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    """format_duration writes what parse_duration reads back."""
    for seconds in (0.25, 1.5, 90, 3600, 7384):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_step_retry_overrides_service_retry_field_by_field() -> None:
    """A step's retry block replaces only the fields it names; timeout falls back to the service's."""
    workflow = load_string(
        HEAD
        + """steps:
  - {id: a, service: inv, method: M, retry: {attempts: 5}}
  - {id: b, service: inv, method: M, timeout: 1s}
  - {id: c, service: web, method: /c}
"""
    )
    a, b, c = workflow.call_steps()
    assert a.call.retry == RetryPolicy(
        attempts=5, backoff="constant", initial=0.2, max=1.0, codes=frozenset({Code.UNAVAILABLE})
    )
    assert a.call.timeout == 5.0
    assert b.call.retry.attempts == 3
    assert b.call.timeout == 1.0
    assert c.call.retry == RetryPolicy()
    assert c.call.retry.codes == DEFAULT_RETRY_CODES


def test_compensation_inherits_the_steps_effective_policy() -> None:
    """A compensation on the step's service starts from the step's retry/timeout, then its own."""
    workflow = load_string(
        HEAD
        + """steps:
  - id: a
    service: inv
    method: M
    timeout: 2s
    retry: {attempts: 4}
    compensate: {method: Undo, retry: {jitter: false}}
  - id: b
    service: inv
    method: M
    compensate: {service: web, method: "DELETE /b/{{ b.id }}"}
"""
    )
    a, b = workflow.call_steps()
    assert a.compensate is not None
    assert a.compensate.timeout == 2.0
    assert a.compensate.retry.attempts == 4
    assert a.compensate.retry.jitter is False
    assert a.compensate.service.name == "inv"
    assert b.compensate is not None
    assert b.compensate.service.name == "web"
    assert b.compensate.retry == RetryPolicy()
    method = b.compensate.method
    assert isinstance(method, HttpMethod)
    assert (method.verb, method.source) == ("DELETE", "/b/{{ b.id }}")
    assert method.path.render_text({"b": {"id": 7}}) == "/b/7"


def test_later_step_is_not_visible_and_hint_says_why() -> None:
    """Referencing a later step is a load error explaining it is a later step."""
    found = problems(
        HEAD
        + """steps:
  - {id: a, service: inv, method: M, input: {x: "{{ b.id }}"}}
  - {id: b, service: inv, method: M}
"""
    )
    assert found == [
        "steps.a.input.x: 'b' is the output of step 'b', which cannot have run before this point (a later step)"
    ]


def test_parallel_sibling_is_not_visible_but_earlier_group_members_are() -> None:
    """A parallel child sees everything before its group but not its siblings."""
    base = (
        HEAD
        + """steps:
  - {id: a, service: inv, method: M}
  - parallel:
      - {id: b, service: inv, method: M, input: {x: "{{ a.id }}", s: "{{ steps.a.status }}"}}
      - {id: c, service: inv, method: M, input: {x: "{{ REF }}"}}
"""
    )
    assert problems(base.replace("REF", "a.id")) == []
    found = problems(base.replace("REF", "steps.b.output"))
    assert len(found) == 1
    assert "step 'b'" in found[0]
    assert "parallel sibling" in found[0]


def test_compensation_sees_own_output_and_error_but_not_later_steps() -> None:
    """A compensation reads its own output and error; a later step stays invisible."""
    base = (
        HEAD
        + """steps:
  - id: a
    service: inv
    method: M
    output: res
    compensate: {method: Undo, input: {id: "{{ res.id }}", why: "{{ error.code }}", x: "{{ REF }}"}}
  - {id: b, service: inv, method: M}
"""
    )
    assert problems(base.replace("REF", "steps.a.attempts")) == []
    found = problems(base.replace("REF", "b.id"))
    assert len(found) == 1
    assert "(a later step)" in found[0]


def test_workflow_output_sees_every_step_and_structure_is_kept() -> None:
    """The workflow output may read all steps; parallel groups keep their children in order."""
    workflow = load_string(
        HEAD
        + """steps:
  - parallel:
      - {id: a, service: inv, method: M}
      - {id: b, service: inv, method: M, when: "{{ input.go }}"}
output: {a: "{{ a }}", b: "{{ .b }}", n: 1}
"""
    )
    (group,) = workflow.steps
    assert isinstance(group, ParallelStep)
    assert group.id == "parallel-1"
    assert [s.id for s in group.steps] == ["a", "b"]
    second = group.steps[1]
    assert isinstance(second, CallStep)
    assert second.when is not None
    assert second.when.evaluate({"input": {"go": True}}) is True
    assert workflow.output is not None
    assert workflow.output.render({"a": {"v": 1}, "b": None}) == {"a": {"v": 1}, "b": None, "n": 1}


def test_static_input_becomes_one_constant_and_types_are_kept() -> None:
    """An input without templates is a constant; a lone template keeps the value's type."""
    workflow = load_string(
        HEAD
        + """steps:
  - {id: a, service: inv, method: M, input: {qty: 2, tags: [x, y], ok: true}}
  - {id: b, service: inv, method: M, input: {qty: "{{ input.qty }}", all: "{{ a }}"}}
"""
    )
    a, b = workflow.call_steps()
    assert a.call.input.is_constant
    assert a.call.input.render({}) == {"qty": 2, "tags": ["x", "y"], "ok": True}
    assert not b.call.input.is_constant
    assert b.call.input.render({"input": {"qty": 3}, "a": {"k": [1]}}) == {
        "qty": 3,
        "all": {"k": [1]},
    }


def test_grpc_metadata_keys_are_lowercased_and_values_are_text() -> None:
    """gRPC metadata keys are normalised to lowercase; scalar values become text."""
    workflow = load_string(
        """name: t
services:
  inv: {endpoint: "inv:1", headers: {X-Team: shop, X-Retries: 3}}
steps:
  - {id: a, service: inv, method: M}
"""
    )
    metadata = workflow.services["inv"].metadata
    assert sorted(metadata) == ["x-retries", "x-team"]
    assert metadata["x-retries"].render({}) == "3"


def test_check_input_names_the_failing_field() -> None:
    """Schema failures are INVALID_ARGUMENT naming the field path; no schema accepts anything."""
    workflow = load_string(
        HEAD
        + """input:
  type: object
  required: [order_id]
  properties:
    qty: {type: integer, minimum: 1}
steps:
  - {id: a, service: inv, method: M}
"""
    )
    with pytest.raises(ExecutionError) as info:
        check_input(workflow, {})
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.message == "input.order_id: 'order_id' is a required property"
    with pytest.raises(ExecutionError, match=r"^input\.qty: 0 is less than the minimum of 1$"):
        check_input(workflow, {"order_id": "o", "qty": 0})
    check_input(workflow, {"order_id": "o", "qty": 2.0})  # Struct numbers arrive as doubles
    check_input(workflow, {"order_id": "o", "qty": 2.0})  # second call uses the cached validator
    no_schema = load_string(HEAD + "steps:\n  - {id: a, service: inv, method: M}\n")
    check_input(no_schema, ["anything", 1])
