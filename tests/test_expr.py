"""Templates and CEL conditions: compile-time problems, rendering, runtime errors."""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest

from maestro_gateway.codes import Code
from maestro_gateway.errors import EvaluationError
from maestro_gateway.expr import (
    Scope,
    Template,
    TemplateProblem,
    TemplateSyntaxError,
    compile_condition,
    compile_string,
    constant,
    mapping,
    sequence,
    to_text,
)

HINTS = {
    "payment": "'payment' is the output of step 'charge', which cannot have run before this step",
    "charge": "step 'charge' cannot have run before this step (a parallel sibling)",
}
SCOPE = Scope(
    names=frozenset({"input", "workflow", "steps", "reservation", "skipped"}),
    step_ids=frozenset({"reserve", "skip-me"}),
    hints=HINTS,
)
CONTEXT: dict[str, Any] = {
    "input": {"sku": "A-1", "qty": 2.0, "count": 3, "flag": True, "none": None, "price": 2.5},
    "workflow": {"name": "checkout", "version": "1.0", "execution_id": "e-1"},
    "steps": {
        "reserve": {"output": {"id": "R1"}, "status": "SUCCEEDED", "attempts": 1, "error": None},
        "skip-me": {"output": None, "status": "SKIPPED", "attempts": 0, "error": None},
    },
    "reservation": {"id": "R1", "items": [{"sku": "A-1", "qty": 2}], "meta": {}},
    "skipped": None,
}


def render(text: str, context: dict[str, Any] | None = None) -> Any:
    return compile_string(text, SCOPE).render(CONTEXT if context is None else context)


def problems(text: str, scope: Scope = SCOPE) -> list[tuple[int, str]]:
    with pytest.raises(TemplateSyntaxError) as info:
        compile_string(text, scope)
    return [(p.offset, p.message) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ input.sku }}", "A-1"),
        ("{{ input.qty }}", 2.0),
        ("{{ input.count }}", 3),
        ("{{ input.flag }}", True),
        ("{{ input.none }}", None),
        ("{{ skipped }}", None),
        ("{{ reservation }}", CONTEXT["reservation"]),
        ("{{ reservation.items }}", [{"sku": "A-1", "qty": 2}]),
        ("{{ input.count + 1 }}", 4),
        ("{{ input.count * 2 > 5 }}", True),
        ("{{ [input.sku, input.none] }}", ["A-1", None]),
        ('{{ {"id": reservation.id, "n": null} }}', {"id": "R1", "n": None}),
        ("{{ reservation.items.map(i, i.qty) }}", [2]),
        ("{{ steps.reserve.output.id }}", "R1"),
        ('{{ steps["skip-me"].status }}', "SKIPPED"),
        ("{{ workflow.execution_id }}", "e-1"),
        ("{{ 9223372036854775807 }}", 9223372036854775807),
        ("{{ 3u }}", 3),
        ("{{ b'\\x00\\x01' }}", "AAE="),
        ('{{ timestamp("2024-01-01T00:00:00Z") }}', "2024-01-01T00:00:00Z"),
        ('{{ timestamp("2024-01-01T00:00:00.5Z") }}', "2024-01-01T00:00:00.500Z"),
        ('{{ duration("1.5s") }}', "1.500s"),
        ('{{ duration("-90s") }}', "-90s"),
        ("{{ type(1) }}", "int"),
    ],
)
def test_single_template_keeps_type(text: str, expected: Any) -> None:
    """A string that is exactly one template renders to the expression's typed value."""
    value = render(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sku={{ input.sku }}", "sku=A-1"),
        ("{{ input.qty }} items", "2 items"),
        ("{{ input.price }}/{{ input.count }}", "2.5/3"),
        ("flag={{ input.flag }} none={{ input.none }}", "flag=true none=null"),
        ("r={{ reservation.items }}", 'r=[{"sku":"A-1","qty":2}]'),
        ("m={{ reservation.meta }}", "m={}"),
        ("/orders/{{ .input.sku }}/mail", "/orders/A-1/mail"),
        (" {{ input.sku }}", " A-1"),
        ("{{ input.sku }}{{ input.sku }}", "A-1A-1"),
        ("no templates } here {", "no templates } here {"),
        ("a }} b", "a }} b"),
    ],
)
def test_mixed_text_renders_text(text: str, expected: str) -> None:
    """Text mixed with templates renders each value as text (JSON for objects, 2.0 as 2)."""
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "references"),
    [
        ("{{ .input.sku }}", {"input"}),
        ("{{ has(.reservation.id) && .input.flag }}", {"input", "reservation"}),
        ("{{ .steps.reserve.output }}", {"steps"}),
        ("{{ [1].map(x, x + input.count) }}", {"input"}),
        ("{{ size(reservation.items) }} {{ workflow.name }}", {"reservation", "workflow"}),
        ('{{ "input.sku" }}', set()),
        ("plain", set()),
    ],
)
def test_references_strip_leading_dots(text: str, references: set[str]) -> None:
    """``references`` lists the top-level names read, leading dots stripped, strings ignored."""
    assert compile_string(text, SCOPE).references == references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ .input.sku }}", "A-1"),
        ("{{ has(.reservation.id) }}", True),
        ("{{ .input.qty > 1 }}", True),
        ("{{ .reservation.items[0].sku }}", "A-1"),
    ],
)
def test_leading_dots_evaluate(text: str, expected: Any) -> None:
    """Go-template leading dots mean the same name without the dot."""
    assert render(text) == expected


def test_expressions_and_constant_flag() -> None:
    """``expressions`` lists each template's source in order; no template means a constant."""
    template = compile_string("a {{ input.sku }} b {{ .reservation.id }}", SCOPE)
    assert template.expressions == ("input.sku", ".reservation.id")
    assert not template.is_constant
    literal = compile_string("just text", SCOPE)
    assert literal.is_constant
    assert literal.render(CONTEXT) == "just text"
    assert literal.expressions == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{ "{{" }}', "{{"),
        ("{{ '}}' + input.sku }}", "}}A-1"),
        ('{{ "a }} b" }} and {{ input.sku }}', "a }} b and A-1"),
        ('{{ {"a": {"b": 1}} }}', {"a": {"b": 1}}),
        ('{{ {"a": 1}}}', {"a": 1}),
        ("{{ '''x}}y''' }}", "x}}y"),
        ('{{ r"\\d}}" }}', "\\d}}"),
        ('{{ "say \\"}}\\"" }}', 'say "}}"'),
    ],
)
def test_braces_inside_strings_and_maps(text: str, expected: Any) -> None:
    """A ``}}`` or ``{{`` inside a CEL string literal or map does not end or start a template."""
    assert render(text) == expected


def test_nested_containers_render_recursively() -> None:
    """mapping/sequence render every item; constants inside are returned as they are."""
    inner = mapping({"sku": compile_string("{{ input.sku }}", SCOPE), "fixed": constant([1, 2])})
    template = sequence([inner, compile_string("n={{ input.count }}", SCOPE), constant(None)])
    assert template.render(CONTEXT) == [{"sku": "A-1", "fixed": [1, 2]}, "n=3", None]
    assert template.references == {"input"}
    assert template.expressions == ("input.sku", "input.count")
    assert not template.is_constant


def test_all_constant_containers_are_constant() -> None:
    """A container of constants is itself a constant that returns the same literal each time."""
    template = mapping({"a": constant(1), "b": sequence([constant("x")])})
    assert template.is_constant
    first = template.render({})
    assert first == {"a": 1, "b": ["x"]}
    assert template.render(CONTEXT) is first


def test_render_text_converts() -> None:
    """render_text applies to_text to the rendered value (for headers and paths)."""
    assert compile_string("{{ input.count }}", SCOPE).render_text(CONTEXT) == "3"
    assert compile_string("{{ reservation.meta }}", SCOPE).render_text(CONTEXT) == "{}"
    assert constant(2.0).render_text(CONTEXT) == "2"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (2, "2"),
        (2.0, "2"),
        (-0.0, "0"),
        (2.5, "2.5"),
        (1e20, "100000000000000000000"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ({"a": [1, None, True]}, '{"a":[1,null,true]}'),
        ([], "[]"),
        ({"é": "ü"}, '{"é":"ü"}'),
        (b"\x00\x01", "AAE="),
    ],
)
def test_to_text(value: Any, text: str) -> None:
    """to_text: strings as themselves, integral floats as integers, the rest as compact JSON."""
    assert to_text(value) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ nosuch }}", [(3, "undeclared reference to 'nosuch'")]),
        ("{{ nosuch.field }}", [(3, "undeclared reference to 'nosuch'")]),
        ("{{ .nosuch.field }}", [(4, "undeclared reference to 'nosuch'")]),
        (
            "a {{ nosuch }} b {{ input.sku + }} c {{ other }}",
            [
                (5, "undeclared reference to 'nosuch'"),
                (32, "syntax error: unexpected end of expression"),
                (40, "undeclared reference to 'other'"),
            ],
        ),
        ("{{ input.sku +\n  nosuch }}", [(17, "undeclared reference to 'nosuch'")]),
        ('{{ "éé" + nosuch }}', [(10, "undeclared reference to 'nosuch'")]),
        ("{{ payment.amount }}", [(3, HINTS["payment"])]),
        ("x {{ input.sku }} {{ }}", [(18, "empty template '{{ }}'")]),
        ("ok {{ input.sku", [(3, "unclosed '{{': no matching '}}'")]),
        (
            "{{ 'abc }}",
            [(0, "unclosed '{{': no matching '}}' (a string literal inside it is not terminated)")],
        ),
        ("{{ input.sku + }}", [(15, "syntax error: unexpected end of expression")]),
        ("{{ @x }}", [(3, "syntax error: token recognition error at: '@'")]),
    ],
)
def test_compile_problems_with_offsets(text: str, expected: list[tuple[int, str]]) -> None:
    """Syntax errors and undeclared names are reported together, each at its offset."""
    assert problems(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ steps.later.output }}", [(9, "unknown step 'later'")]),
        ("{{ .steps.later }}", [(10, "unknown step 'later'")]),
        ('{{ steps["later"].output }}', [(9, "unknown step 'later'")]),
        ("{{ steps.charge.output.id }}", [(9, HINTS["charge"])]),
        (
            "{{ steps.reserve.output }} {{ steps.a.x + steps.b.y }}",
            [(36, "unknown step 'a'"), (48, "unknown step 'b'")],
        ),
    ],
)
def test_unknown_steps_rejected(text: str, expected: list[tuple[int, str]]) -> None:
    """``steps.<id>`` for a step that cannot have run is a compile problem, with its hint."""
    assert problems(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{{ "steps.later" }}',
        "{{ reservation.steps.later }}",
        "{{ steps.reserve.output }}",
        "{{ steps['skip-me'].status }}",
    ],
)
def test_steps_in_strings_and_fields_are_not_checked(text: str) -> None:
    """Only a top-level ``steps`` is checked; text in string literals and field names is not."""
    compile_string(text, SCOPE)


def test_problem_is_a_value() -> None:
    """TemplateProblem is a frozen value and the error message lists every problem."""
    with pytest.raises(TemplateSyntaxError) as info:
        compile_string("{{ a }}{{ b }}", SCOPE)
    assert info.value.problems == [
        TemplateProblem(3, "undeclared reference to 'a'"),
        TemplateProblem(10, "undeclared reference to 'b'"),
    ]
    assert "at 10: undeclared reference to 'b'" in str(info.value)


def test_scope_limits_names() -> None:
    """A name is only visible in a scope that declares it (one env per distinct name set)."""
    narrow = Scope(frozenset({"input"}), frozenset())
    assert problems("{{ reservation.id }}", narrow) == [
        (3, "undeclared reference to 'reservation'")
    ]
    assert compile_string("{{ reservation.id }}", SCOPE).render(CONTEXT) == "R1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ reservation.nope }}", "no field 'nope' in 'reservation'"),
        ("{{ reservation.nope + 1 }}", "no field 'nope' in 'reservation'"),
        ("{{ .reservation.meta.id }}", "no field 'id' in 'reservation.meta'"),
        ("x {{ reservation.meta.id == 1 }}", "no field 'id' in 'reservation.meta'"),
        ("{{ input.sku.x }}", "'input.sku' is a string, it has no field 'x'"),
        ("{{ skipped.id }}", "'skipped' is null, it has no field 'id'"),
        ("{{ size(skipped.id) }}", "'skipped' is null, it has no field 'id'"),
        ("{{ input.qty + 1 }}", "type mismatch: no '+' for (double, int)"),
        ("{{ input.sku + 1 }}", "type mismatch: no '+' for (string, int)"),
        ("{{ reservation.items[3] }}", "index 3 out of range (size 1)"),
        ("{{ input.count / 0 }}", "division by zero"),
        ("{{ input.count % 0 }}", "division by zero"),
        ('{{ int("x") }}', "cannot convert string to int"),
        ("{{ input.count * 9223372036854775807 }}", "integer overflow"),
        ("{{ input.sku }}", "'input' has no value in this execution"),
        ("{{ input.sku == 'a' }}", "'input' has no value in this execution"),
    ],
)
def test_runtime_errors_name_expression_and_field(text: str, reason: str) -> None:
    """Evaluation failures raise EvaluationError naming the expression and a readable reason."""
    context = {k: v for k, v in CONTEXT.items() if k != "input"} if "no value" in reason else None
    template = compile_string(text, SCOPE)
    with pytest.raises(EvaluationError) as info:
        template.render(CONTEXT if context is None else context)
    error = info.value
    assert error.reason.startswith(reason)
    assert error.expression == template.expressions[0]
    assert error.code is Code.INVALID_ARGUMENT
    assert error.expression in error.message


def test_mixed_numbers_compare() -> None:
    """Integral floats (JSON numbers) compare equal to CEL ints; arithmetic needs conversion."""
    for text in ("input.qty == 2", "input.qty > 1", "input.qty in [2]", "input.count == 3.0"):
        assert compile_condition(text, SCOPE).evaluate(CONTEXT) is True, text
    assert render("{{ int(input.qty) + 1 }}") == 3
    assert render("{{ input.qty + 1.0 }}") == 3.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input.flag", True),
        ("{{ input.flag }}", True),
        ("  {{ !input.flag }}  ", False),
        ("has(reservation.id)", True),
        ("has(reservation.nope)", False),
        ("has(.reservation.meta.id)", False),
        ("skipped == null", True),
        ("steps.reserve.status == 'SUCCEEDED' && input.count >= 3", True),
        ("reservation.items.exists(i, i.sku == input.sku)", True),
        ("reservation.items.all(i, i.qty > 5)", False),
        ("input.sku.startsWith('A')", True),
        ("input.sku.matches('^A-[0-9]+$')", True),
        ("false && reservation.nope == 1", False),
    ],
)
def test_conditions(text: str, expected: bool) -> None:
    """Conditions accept ``{{ expr }}`` or bare CEL, including has() and macros."""
    assert compile_condition(text, SCOPE).evaluate(CONTEXT) is expected


def test_condition_attributes() -> None:
    """A condition exposes its expression source and references."""
    condition = compile_condition("{{ .input.count > 1 && has(reservation.id) }}", SCOPE)
    assert condition.expression == ".input.count > 1 && has(reservation.id)"
    assert condition.references == {"input", "reservation"}


@pytest.mark.parametrize(
    ("text", "got"),
    [("input.count", "int"), ("{{ input.sku }}", "string"), ("skipped", "null")],
)
def test_condition_must_yield_bool_at_runtime(text: str, got: str) -> None:
    """A condition whose value is not a bool fails with EvaluationError."""
    with pytest.raises(EvaluationError, match=f"condition must yield a bool, got {got}"):
        compile_condition(text, SCOPE).evaluate(CONTEXT)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2", [(0, "condition must yield a bool, got int")]),
        ("{{ 'x' }}", [(3, "condition must yield a bool, got string")]),
        ("{{ a }} and {{ b }}", [(0, "a condition must be a single expression")]),
        ("x {{ input.flag }}", [(0, "a condition must be a single expression")]),
        ("input.flag &&", [(13, "syntax error: unexpected end of expression")]),
        ("{{ nosuch }}", [(3, "undeclared reference to 'nosuch'")]),
        ("payment.ok", [(0, HINTS["payment"])]),
        ("   ", [(0, "empty condition")]),
        ("{{ input.flag", [(0, "unclosed '{{': no matching '}}'")]),
    ],
)
def test_condition_compile_problems(text: str, expected: list[tuple[int, str]]) -> None:
    """Condition problems are reported with offsets; a non-bool type is caught at load."""
    with pytest.raises(TemplateSyntaxError) as info:
        compile_condition(text, SCOPE)
    assert [(p.offset, p.message) for p in info.value.problems] == expected


def test_input_is_never_compiled() -> None:
    """Template syntax inside execution data is returned as data, never evaluated."""
    context = dict(CONTEXT, input={"sku": "{{ workflow.name }}", "qty": 1})
    assert render("{{ input.sku }}", context) == "{{ workflow.name }}"
    assert render("x={{ input.sku }}", context) == "x={{ workflow.name }}"


def test_activation_only_holds_references() -> None:
    """Names the expression does not read are never converted (a bad value there is harmless)."""
    context = dict(CONTEXT, reservation=object())
    assert render("{{ input.count + 1 }}", context) == 4


def test_unsupported_context_value_is_an_evaluation_error() -> None:
    """A context value CEL cannot represent fails the expression with a readable reason."""
    context = dict(CONTEXT, reservation={"id": (1, 2)})
    with pytest.raises(EvaluationError, match="unsupported value of type tuple"):
        render("{{ size(reservation.id) }}", context)


def test_null_results_keep_none_alive() -> None:
    """Many null results do not corrupt None's reference count (a cel-expr-python 0.1.3 bug)."""
    template = compile_string("{{ [skipped, {'a': null}, input.none] }}", SCOPE)
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(2000):
        assert template.render(CONTEXT) == [None, {"a": None}, None]
    gc.collect()
    assert sys.getrefcount(None) >= before - 50


def test_templates_are_reusable_across_contexts() -> None:
    """One compiled template renders independently for different contexts."""
    template: Template = compile_string("{{ input.count * 2 }}", SCOPE)
    for count in range(5):
        assert template.render(dict(CONTEXT, input={"count": count})) == count * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ has(reservation.id) && reservation.id == 'R1' }}", True),
        ("{{ has(reservation.nope) }}", False),
        ('{{ reservation["id"] }}', "R1"),
        ("{{ steps.reserve.output.id }}", "R1"),
        ("{{ size(reservation) }}", 4),
        ("{{ reservation.id + string(size(reservation)) }}", "R14"),
    ],
)
def test_only_selected_fields_reach_cel(text: str, expected: Any) -> None:
    """A name read only through fields is passed to CEL with just those fields, same result."""
    context = dict(CONTEXT, reservation=dict(CONTEXT["reservation"], blob=[1, 2]))
    assert render(text, context) == expected
    poisoned = dict(context, reservation=dict(context["reservation"], bad=(1, 2)))
    if "size(reservation)" in text:
        with pytest.raises(EvaluationError, match="unsupported value of type tuple"):
            render(text, poisoned)
    else:
        assert render(text, poisoned) == expected
