"""Unit tests of the workflow language pieces: durations, scopes, retry merge, input schema, and
the step kinds of DESIGN §12 (their defaults, their built values and their scopes)."""

from __future__ import annotations

import pytest

from maestro_gateway.codes import DEFAULT_RETRY_CODES, Code
from maestro_gateway.errors import DefinitionError, ExecutionError
from maestro_gateway.model.durations import DurationError, format_duration, parse_duration
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.schema import check_input
from maestro_gateway.model.scopes import Scopes, StepInfo
from maestro_gateway.model.types import (
    DEFAULT_MAX_ITEMS,
    MAX_NESTING,
    CallStep,
    FailStep,
    ForeachStep,
    HttpMethod,
    LoopStep,
    ParallelStep,
    RetryPolicy,
    SwitchStep,
    WorkflowStep,
    level_outputs,
)

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


def test_foreach_defaults_and_built_values() -> None:
    """A foreach's names, concurrency, limit and output default as DESIGN §12 says."""
    workflow = load_string(
        HEAD
        + """steps:
  - id: lines
    foreach: "{{ input.lines }}"
    steps: [{id: each, service: inv, method: M, input: {v: "{{ item }}", i: "{{ index }}"}}]
  - id: fixed
    foreach: [1, "{{ input.x }}"]
    as: n
    index_as: at
    concurrency: 3
    max_items: 5
    continue_on_error: true
    steps: [{id: each2, service: inv, method: M, input: {v: "{{ n }}", i: "{{ at }}"}}]
"""
    )
    lines, fixed = workflow.steps
    assert isinstance(lines, ForeachStep)
    assert isinstance(fixed, ForeachStep)
    assert (lines.output, lines.item_name, lines.index_name) == ("lines", "item", "index")
    assert lines.concurrency is None
    assert lines.max_items == DEFAULT_MAX_ITEMS
    assert lines.continue_on_error is False
    assert lines.items.render({"input": {"lines": [1, 2]}}) == [1, 2]
    assert (fixed.item_name, fixed.index_name, fixed.max_items) == ("n", "at", 5)
    assert fixed.concurrency is not None
    assert fixed.concurrency.render({}) == 3
    assert fixed.items.render({"input": {"x": "y"}}) == [1, "y"]
    assert fixed.continue_on_error is True
    assert [s.id for s in workflow.call_steps()] == ["each", "each2"]


def test_switch_loop_fail_and_workflow_steps_are_built() -> None:
    """Branches keep their order (default last, empty ones too); loop and fail fields are typed."""
    workflow = load_string(
        HEAD
        + """steps:
  - id: route
    switch:
      - when: "{{ input.big }}"
        steps: [{id: big, service: inv, method: M}]
      - when: "{{ input.zero }}"
      - steps: [{id: small, service: inv, method: M}]
  - id: poll
    loop:
      steps: [{id: check, service: inv, method: M, input: {n: "{{ iteration }}"}}]
      until: "{{ check.done }}"
      max_iterations: 4
  - {id: stop, fail: {code: failed_precondition, message: "at {{ input.x }}"}}
  - id: pay
    workflow: payment
    continue_on_error: true
"""
    )
    route, poll, stop, pay = workflow.steps
    assert isinstance(route, SwitchStep)
    assert route.output == "route"
    assert [b.when is None for b in route.branches] == [False, False, True]
    assert [len(b.steps) for b in route.branches] == [1, 0, 1]
    assert isinstance(poll, LoopStep)
    assert (poll.max_iterations, poll.delay, poll.index_name) == (4, 0.0, "iteration")
    assert poll.until.evaluate({"check": {"done": True}}) is True
    assert isinstance(stop, FailStep)
    assert stop.code is Code.FAILED_PRECONDITION
    assert stop.message.render_text({"input": {"x": 3}}) == "at 3"
    assert isinstance(pay, WorkflowStep)
    assert (pay.workflow, pay.output, pay.child, pay.continue_on_error) == (
        "payment",
        "pay",
        None,
        True,
    )
    assert pay.input.render({}) == {}
    assert (pay.position.line, pay.position.column) == (22, 15)  # the workflow: value
    assert workflow.outputs() == ("route", "big", "small", "poll", "pay")


def test_later_steps_see_what_each_kind_leaves() -> None:
    """After a switch: its branch steps; after a loop: its body; after a foreach: only its output."""
    base = (
        HEAD
        + """steps:
  - id: route
    switch:
      - {when: "{{ input.a }}", steps: [{parallel: [{id: p1, service: inv, method: M}]}]}
      - steps: [{id: other, service: inv, method: M}]
  - id: poll
    loop: {steps: [{id: body, service: inv, method: M}], until: "{{ body.ok }}", max_iterations: 2}
  - {id: fan, foreach: [1], steps: [{id: inner, service: inv, method: M}]}
  - {id: after, service: inv, method: M, input: {x: "{{ REF }}"}}
"""
    )
    for visible in ("route", "p1", "other", "steps.p1.status", "poll", "body", "fan"):
        assert problems(base.replace("REF", visible)) == [], visible
    (found,) = problems(base.replace("REF", "inner"))
    assert "inside foreach 'fan', which is not visible outside it" in found
    assert found.endswith("read it through 'fan' output 'fan'")


def test_body_and_its_compensations_see_the_item_and_what_came_before() -> None:
    """A body step sees the enclosing scope, its item and index, and earlier body steps."""
    workflow = load_string(
        HEAD
        + """steps:
  - {id: before, service: inv, method: M}
  - id: lines
    foreach: "{{ before.lines }}"
    as: line
    steps:
      - id: reserve
        service: inv
        method: M
        input: {sku: "{{ line.sku }}", first: "{{ before.id }}"}
        compensate: {method: Undo, input: {r: "{{ reserve.id }}", i: "{{ index }}", e: "{{ error }}"}}
      - {id: label, service: inv, method: M, input: {r: "{{ reserve.id }}", s: "{{ steps.reserve }}"}}
"""
    )
    lines = workflow.steps[1]
    assert isinstance(lines, ForeachStep)
    assert [s.id for s in lines.steps] == ["reserve", "label"]


def test_parallel_children_may_be_any_kind_and_groups_are_numbered_in_file_order() -> None:
    """A parallel child can be a foreach or a switch; unnamed groups are numbered depth first."""
    workflow = load_string(
        HEAD
        + """steps:
  - parallel:
      - {id: fan, foreach: [1], steps: [{parallel: [{id: x, service: inv, method: M}]}]}
      - {id: pick, switch: [{steps: [{id: y, service: inv, method: M}]}]}
  - parallel: [{id: z, service: inv, method: M}]
"""
    )
    first, second = workflow.steps
    assert isinstance(first, ParallelStep)
    assert isinstance(second, ParallelStep)
    assert first.id == "parallel-1"
    fan = first.steps[0]
    assert isinstance(fan, ForeachStep)
    assert fan.steps[0].id == "parallel-2"
    assert second.id == "parallel-3"
    assert level_outputs(workflow.steps) == ("fan", "pick", "y", "z")


def nested(levels: int) -> str:
    """A workflow with ``levels`` foreach steps, each inside the previous one."""
    lines = [HEAD + "steps:"]
    indent = "  "
    for level in range(levels):
        lines.append(f"{indent}- id: f{level}")
        lines.append(f"{indent}  foreach: [1]")
        lines.append(f"{indent}  as: x{level}")
        lines.append(f"{indent}  index_as: i{level}")
        lines.append(f"{indent}  steps:")
        indent += "    "
    lines.append(f"{indent}- {{id: leaf, service: inv, method: M, input: {{v: '{{{{ x0 }}}}'}}}}")
    return "\n".join(lines) + "\n"


def test_kinds_nest_up_to_the_limit() -> None:
    """MAX_NESTING levels of kinds load (the innermost body sees every item); one more does not."""
    assert problems(nested(MAX_NESTING)) == []
    found = problems(nested(MAX_NESTING + 1))
    assert found == [
        f"steps.f{MAX_NESTING}: steps nest at most {MAX_NESTING} levels deep (foreach, loop, "
        f"switch and parallel); this foreach would be level {MAX_NESTING + 1}"
    ]


def test_hints_are_a_lazy_mapping_of_the_names_not_visible() -> None:
    """A scope's hints answer for the names that exist elsewhere, and only for those."""
    a = StepInfo("a", "a")
    b = StepInfo("b", "out_b", index=1)
    scopes = Scopes([a, b])
    scope = scopes.step(a)
    assert scope.names == {"input", "workflow", "steps", "env"}
    assert "out_b" in scope.hints
    assert "nosuch" not in scope.hints
    assert scope.hints["b"] == "step 'b' cannot have run before this point (a later step)"
    assert set(scope.hints) == {"error", "signal", "a", "out_b", "b"}
    assert len(scope.hints) == 5
    assert "a" in scopes.step(b).names
