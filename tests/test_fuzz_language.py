"""Fuzzing the workflow language: whatever the text, loading ends in a workflow or in diagnostics.

Hypothesis draws workflow documents from the language's grammar (``fuzz_yaml``), breaks them
(wrong types, unknown and duplicate keys, broken templates, deep nesting, huge numbers, odd
Unicode, anchors and aliases) and writes them in varied YAML. Whatever comes out, each reader of
workflow text returns a workflow or reports diagnostics, never raising anything else:
``load_string``, ``validate_source`` (the ``ValidateWorkflow`` RPC's check) and ``maestro
validate`` run in-process on a file beside a sub-workflow. Every diagnostic has a non-empty
message and a line and column inside the text (a column may be one past the end of its line).

CEL gets pathological expressions of its own: loading them ends in a workflow or a diagnostic,
and evaluating them over large inputs ends in a value or in an ``INVALID_ARGUMENT`` naming the
bound that cut it (CEL's comprehension budget, or the size of the value an expression may yield:
``maestro_gateway.expr.values``).

The tests after the properties are regressions, one per bug found while building the fuzzers.

``HYPOTHESIS_PROFILE=fuzz`` draws 50 times as many examples (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fuzz_yaml import Grammar, emit, workflow_texts
from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from maestro_gateway import cli, expr
from maestro_gateway.errors import DefinitionError, Diagnostic, EvaluationError
from maestro_gateway.expr import compiler, values
from maestro_gateway.model.durations import parse_duration
from maestro_gateway.model.graph import to_mermaid
from maestro_gateway.model.loader import load_file, load_string
from maestro_gateway.model.scopes import Scopes
from maestro_gateway.model.types import CallStep, Workflow
from maestro_gateway.server.registry import validate_source

EXAMPLES = settings.default.max_examples
LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
PROBLEM_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.+)$")
CHILD = """\
name: child
services:
  shop: {type: grpc, endpoint: "127.0.0.1:50051"}
steps:
  - {id: pay, service: shop, method: Pay, input: {id: "{{ input.id }}"}}
"""
HEAD = 'name: w\nservices:\n  s: {type: grpc, endpoint: "x:1"}\n'


def lines_of(text: str) -> list[str]:
    """The lines of ``text`` as YAML counts them (``\\r\\n``, ``\\r``, NEL, LS and PS break)."""
    return LINE_BREAK.split(text)


def check_diagnostics(text: str, diagnostics: Sequence[Diagnostic]) -> None:
    """Every diagnostic has a message and a position inside ``text``."""
    lines = lines_of(text)
    for d in diagnostics:
        assert d.message.strip(), d
        assert not LINE_BREAK.search(d.message), d  # one problem, one line
        assert d.message.encode("utf-8"), d  # printable, and sendable in a protobuf string
        assert d.severity in ("error", "warning"), d
        assert 1 <= d.line <= len(lines), (str(d), len(lines))
        assert 1 <= d.column <= len(lines[d.line - 1]) + 1, (str(d), lines[d.line - 1])


def load(text: str) -> Workflow | list[Diagnostic]:
    """``load_string``'s workflow, or its diagnostics (checked)."""
    try:
        return load_string(text, environ={})
    except DefinitionError as exc:
        diagnostics = exc.diagnostics
    assert diagnostics
    check_diagnostics(text, diagnostics)
    return diagnostics


CONTEXT: dict[str, Any] = {
    "input": {"id": "A-1", "x": 2, "qty": 3, "sku": "k", "amount": 150, "flag": True},
    "workflow": {"name": "fuzzed", "version": "", "execution_id": "e-1"},
    "steps": {},
    "signal": {"signal_id": "g", "name": "order.paid", "params": {"id": "A-1", "amount": 1}},
}
CONTEXT["input"]["lines"] = [{"sku": "s", "qty": 1}, {"sku": "t", "qty": 4}]


def _compiled(value: Any, seen: set[int]) -> Iterator[expr.Template | expr.Condition]:
    """Every template and condition inside a loaded step (or service, or trigger)."""
    if id(value) in seen or isinstance(value, Workflow | str | bytes):
        return
    seen.add(id(value))
    if isinstance(value, expr.Template | expr.Condition):
        yield value
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _compiled(getattr(value, f.name), seen)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _compiled(item, seen)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _compiled(item, seen)


def render_everything(workflow: Workflow) -> None:
    """Render every template of ``workflow`` in a sample context: a value or EvaluationError."""
    seen: set[int] = set()
    parts = [*workflow.steps, *workflow.services.values(), *workflow.triggers, workflow.output]
    for compiled in _compiled(parts, seen):
        with contextlib.suppress(EvaluationError):  # INVALID_ARGUMENT, by construction
            if isinstance(compiled, expr.Condition):
                compiled.evaluate(CONTEXT)
            else:
                compiled.render(CONTEXT)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory holding ``child.yaml``, the sub-workflow the fuzzed files may call."""
    with tempfile.TemporaryDirectory() as name:
        (Path(name) / "child.yaml").write_text(CHILD)
        yield Path(name)


# -- the properties ------------------------------------------------------------------------------


@given(text=workflow_texts())
@example(text=HEAD + "steps: &x [{id: a, foreach: '{{ [1] }}', steps: *x}]\n")
@example(text=HEAD + "steps: [{id: a, service: s, method: M, input: !!binary aGk=}]\n")
@example(text=HEAD + "input: {[a]: b}\nsteps: [{id: a, service: s, method: M}]\n")
def test_load_string_returns_a_workflow_or_positioned_diagnostics(text: str) -> None:
    """``load_string`` and ``validate_source`` end in a workflow or in diagnostics inside the text;
    a workflow that loads can be drawn."""
    note(repr(text))
    loaded = load(text)
    problems = validate_source(text)
    check_diagnostics(text, problems)
    if isinstance(loaded, Workflow):
        to_mermaid(loaded)
        render_everything(loaded)
        # The RPC's check adds only what needs the served set: sub-workflows it does not serve.
        assert all("workflow" in d.message for d in problems)
    else:
        assert problems


@settings(max_examples=EXAMPLES // 2)
@given(text=workflow_texts())
def test_maestro_validate_prints_positioned_problems_and_exits_0_or_1(
    workdir: Path, text: str
) -> None:
    """``maestro validate`` in-process, beside a sub-workflow: every line it prints is a problem at
    a position inside its file, and it exits 1 exactly when one is an error."""
    note(repr(text))
    path = workdir / "main.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["validate", str(path)])
    assert status in (0, 1), err.getvalue()
    texts = {
        str(path): path.read_bytes().decode("utf-8", errors="replace"),
        str(workdir / "child.yaml"): CHILD,
    }
    errors = 0
    for line in out.getvalue().splitlines():
        m = PROBLEM_LINE.match(line)
        assert m is not None, line
        assert m["file"] in texts, line
        severity = "warning" if m["message"].startswith("warning: ") else "error"
        errors += severity == "error"
        problem = Diagnostic(m["file"], int(m["line"]), int(m["column"]), m["message"], severity)
        check_diagnostics(texts[m["file"]], [problem])
    assert (status == 1) == (errors > 0), out.getvalue()


def _nested(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 200))
    opening, closing = draw(
        st.sampled_from([("(", ")"), ("[", "]"), ("{'k': ", "}"), ("size([", "])"), ("-(", ")")])
    )
    return opening * depth + "input.x" + closing * depth


@st.composite
def pathological(draw: st.DrawFn) -> str:
    """A CEL expression that is deep, long or expensive, written as a template."""
    form = draw(st.integers(0, 5))
    if form == 0:
        source = _nested(draw)
    elif form == 1:
        terms = draw(st.integers(1, 6000))
        source = " + ".join(["input.s"] * terms)
    elif form == 2:
        source = "'" + "x" * draw(st.integers(0, 120_000)) + "'"
    elif form == 3:
        depth = draw(st.integers(1, 12))
        source = "input.xs"
        for level in range(depth):
            source = f"input.xs.map(v{level}, {source})"
    elif form == 4:
        source = "[" + ", ".join(["input.xs"] * draw(st.integers(1, 30_000))) + "]"
    else:
        source = "!" * draw(st.integers(1, 3000)) + "true"
    return "{{ " + source + " }}"


@settings(max_examples=EXAMPLES // 4)
@given(template=pathological())
def test_pathological_expressions_load_or_fail_with_a_diagnostic(template: str) -> None:
    """Deep, long and expensive CEL loads into a workflow or into positioned diagnostics."""
    text = HEAD + f"steps:\n  - {{id: a, service: s, method: M, input: {{v: '{template}'}}}}\n"
    loaded = load(text)
    if not isinstance(loaded, Workflow):
        assert all(d.message for d in loaded)


EXPENSIVE = (
    "input.xs.map(x, input.xs.map(y, x * y))",
    "input.xs.map(x, input.xs)",
    "input.xs.filter(x, input.xs.exists(y, y == x))",
    "input.xs.all(x, input.xs.all(y, input.xs.all(z, x + y + z >= 0)))",
    "input.xs.map(x, input.s + input.s + input.s + input.s)",
    "size(input.xs.map(x, [x, x, x, x, x, x, x, x]))",
    "input.xs.map(x, {'a': input.xs, 'b': input.s})",
)
BOUNDS = ("comprehension iterations", "max_rendered_values", "max_rendered_chars")


@settings(max_examples=EXAMPLES // 2)
@given(
    source=st.sampled_from(EXPENSIVE),
    size=st.integers(0, 160),
    text=st.integers(0, 5000),
)
@example(source=EXPENSIVE[0], size=99, text=0)  # 9,900 iterations: under the budget
@example(source=EXPENSIVE[0], size=100, text=0)  # 10,100: over it
def test_expensive_expressions_yield_a_value_or_invalid_argument_naming_the_bound(
    source: str, size: int, text: int
) -> None:
    """Evaluating an expensive expression over a large input gives its value, or fails with
    INVALID_ARGUMENT naming the bound that cut it (limits lowered to keep the test fast)."""
    scope = expr.Scope(frozenset({"input"}), frozenset())
    template = expr.compile_string("{{ " + source + " }}", scope)
    context = {"input": {"xs": list(range(size)), "s": "é" * text}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(values, "MAX_RENDERED_VALUES", 20_000)
        patch.setattr(values, "MAX_RENDERED_CHARS", 200_000)
        try:
            template.render(context)
        except EvaluationError as exc:
            failure: EvaluationError | None = exc
        else:
            failure = None
    if failure is not None:
        assert failure.code.name == "INVALID_ARGUMENT"
        assert any(bound in failure.message for bound in BOUNDS), failure.message


# -- regressions: each bug the fuzzers found -----------------------------------------------------


def problems_of(text: str) -> list[str]:
    """``line:column: message`` of each problem of ``text`` (checked to be inside it)."""
    loaded = load(text)
    assert not isinstance(loaded, Workflow), "expected the text not to load"
    return [f"{d.line}:{d.column}: {d.message}" for d in loaded]


def step_input(workflow: Workflow, context: dict[str, Any]) -> Any:
    """The first step's input, rendered in ``context``."""
    step = workflow.steps[0]
    assert isinstance(step, CallStep)
    return step.call.input.render(context)


def one_step(input_value: str) -> str:
    return HEAD + f"steps:\n  - {{id: a, service: s, method: M, input: {input_value}}}\n"


@pytest.mark.parametrize(
    "text",
    [
        one_step("&x [1, *x]"),
        one_step("&x {a: *x}"),
        one_step("&x {a: 1, <<: *x}"),
        HEAD
        + "input: &x {type: object, properties: {a: *x}}\nsteps: [{id: a, service: s, method: M}]\n",
        HEAD + "steps: &x [{id: a, foreach: '{{ [1] }}', steps: *x}]\n",
    ],
)
def test_recursive_alias_is_a_diagnostic_not_a_recursion_error(text: str) -> None:
    """An alias inside the node its anchor marks was a RecursionError in every reader."""
    (problem,) = problems_of(text)
    assert "recursive alias" in problem
    assert validate_source(text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{v: !foo bar}", "unsupported YAML tag !foo"),
        ("{v: !!binary aGk=}", "unsupported YAML tag !!binary"),
        ("{v: !!set {a, b}}", "unsupported YAML tag !!set"),
        ("{v: !!omap [{a: 1}]}", "unsupported YAML tag !!omap"),
        ("{v: !!python/object:os.system x}", "unsupported YAML tag !!python/object:os.system"),
        ("{v: !!int abc}", "'abc' is not an integer"),
        ("{v: !!float x}", "'x' is not a number"),
        ("{v: !!bool yes}", "'yes' is not a boolean"),
    ],
)
def test_unsupported_or_malformed_yaml_tag_is_a_diagnostic(value: str, message: str) -> None:
    """A tag the constructor does not know, or ``!!int abc``, was a ConstructorError or a
    ValueError out of ``load_string``; bytes and sets from ``!!binary`` and ``!!set`` loaded."""
    (problem,) = problems_of(one_step(value))
    assert problem.startswith("5:47: ")
    assert message in problem


def test_tag_of_a_tag_directive_is_a_diagnostic() -> None:
    """A ``%TAG`` handle expanded to a custom tag was a ConstructorError."""
    text = "%TAG !e! tag:example.com,2000:\n---\n" + one_step("{v: !e!x 1}")
    (problem,) = problems_of(text)
    assert "unsupported YAML tag tag:example.com,2000:x" in problem


def test_scalars_yaml_1_1_types_oddly_stay_strings() -> None:
    """``=`` (YAML 1.1's value key), ``<<`` as a value and ``! x`` were ConstructorErrors; they are
    the strings they read as."""
    workflow = load_string(one_step("{a: =, b: <<, c: ! x}"))
    assert step_input(workflow, {}) == {"a": "=", "b": "<<", "c": "x"}


def test_integer_over_the_conversion_limit_is_a_diagnostic() -> None:
    """A 5,000-digit integer was a ValueError (Python converts at most 4,300 digits)."""
    (problem,) = problems_of(one_step("{v: " + "9" * 5000 + "}"))
    assert problem == "5:47: an integer of 5000 digits, more than the 4300 a number may have"
    assert load_string(one_step("{v: " + "9" * 4300 + "}"))


def test_non_scalar_key_in_input_schema_is_a_diagnostic() -> None:
    """``input: {[a]: b}`` was a ConstructorError ("found unhashable key")."""
    text = HEAD + "input: {[a]: b}\nsteps: [{id: a, service: s, method: M}]\n"
    assert problems_of(text) == ["4:9: input: keys must be strings"]


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ('{$ref: "http://127.0.0.1:9/schema.json"}', "4:15: input.$ref"),
        ('{$ref: "#/nowhere"}', "4:15: input.$ref"),
        ('{type: object, properties: {a: {$ref: "other.json"}}}', "4:46: input.properties.a.$ref"),
    ],
)
def test_unresolvable_schema_ref_is_a_load_error(schema: str, where: str) -> None:
    """A ``$ref`` that cannot be resolved loaded, then failed every execution with an exception
    out of jsonschema (the request fuzzer's regression: tests/test_fuzz_requests.py)."""
    text = HEAD + f"input: {schema}\nsteps: [{{id: a, service: s, method: M}}]\n"
    (problem,) = problems_of(text)
    assert problem.startswith(f"{where}: cannot resolve $ref")


def test_references_inside_the_schema_and_to_meta_schemas_resolve() -> None:
    """References into the schema (``$id`` scoped too) and to a meta-schema still load."""
    schema = (
        "{$defs: {n: {type: integer}}, properties: {a: {$ref: '#/$defs/n'}, "
        "b: {$id: 'http://x/b', $defs: {m: {}}, $ref: '#/$defs/m'}, "
        "c: {$ref: 'https://json-schema.org/draft/2020-12/schema'}, "
        "d: {enum: [{$ref: nowhere}]}}}"
    )
    assert load_string(HEAD + f"input: {schema}\nsteps: [{{id: a, service: s, method: M}}]\n")


def test_lone_surrogate_escape_is_a_diagnostic() -> None:
    """``"\\ud800"`` loaded a string no encoder takes (a TypeError from the CEL compiler, a
    diagnostic unprintable as UTF-8); a pair of escapes is the character it stands for."""
    for value in ('{v: "\\ud800"}', "{v: \"{{ '\\udfff' }}\"}", '{"\\ud800": 1}'):
        (problem,) = problems_of(one_step(value))
        assert "lone surrogate (\\ud" in problem
    workflow = load_string(one_step('{v: "\\ud83d\\ude00 {{ input.x }}"}'))
    assert step_input(workflow, {"input": {"x": 1}}) == {"v": "\U0001f600 1"}


def test_invalid_ipv6_http_endpoint_is_a_diagnostic() -> None:
    """``http://[::1`` was a ValueError out of urllib."""
    text = 'name: w\nservices:\n  s: {type: http, endpoint: "http://[::1"}\nsteps: [{id: a, service: s, method: "GET /"}]\n'
    assert problems_of(text) == [
        "3:29: services.s.endpoint: invalid HTTP endpoint 'http://[::1': Invalid IPv6 URL"
    ]


def test_duration_beyond_go_range_is_a_diagnostic() -> None:
    """``timeout: 999…9s`` (400 digits) loaded as an infinite timeout."""
    (problem,) = problems_of(
        HEAD + f"timeout: {'9' * 400}s\nsteps: [{{id: a, service: s, method: M}}]\n"
    )
    assert problem.endswith("is longer than the maximum of 2562047h47m16s")
    assert parse_duration("2562047h47m16s") == 2562047 * 3600 + 47 * 60 + 16
    with pytest.raises(ValueError, match="longer than the maximum"):
        parse_duration("2562047h47m17s")


def test_position_after_a_line_separator_in_a_literal_block_is_on_its_line() -> None:
    """In a ``|`` block, U+2028 breaks the line for YAML but not in the value: the position of an
    expression after one was on the line before, past its end."""
    text = (
        HEAD + "steps:\n  - id: a\n    service: s\n    method: M\n    input:\n      v: |\n"
        "        aaaaaaaaaaaaaaaaaaaa\u2028        {{ nosuch }}\n"
    )
    assert problems_of(text) == ["11:12: steps.a.input.v: undeclared reference to 'nosuch'"]


def test_position_in_a_literal_block_with_an_indentation_indicator() -> None:
    """``|2`` keeps the content's extra indentation: the column counts it once, not twice."""
    text = (
        HEAD
        + "steps:\n  - id: a\n    service: s\n    method: M\n    input:\n      v: |2\n          {{ nosuch }}\n"
    )
    assert problems_of(text) == ["10:14: steps.a.input.v: undeclared reference to 'nosuch'"]


@pytest.mark.parametrize(("char", "code"), [("\x00", "#x0000"), ("\x1b", "#x001b")])
def test_special_character_is_reported_at_its_position(char: str, code: str) -> None:
    """A character YAML does not allow was reported at 1:1 with a message spanning lines."""
    text = one_step(f"{{v: 'a{char}'}}")
    assert problems_of(text) == [
        f"5:49: YAML error: unacceptable character {code}: special characters are not allowed"
    ]


def test_cel_limits_are_diagnostics_in_words() -> None:
    """CEL's own bounds were reported as ``CANCELLED: … [CANCELLED]`` status text."""
    deep = "(" * 40 + "1" + ")" * 40
    (problem,) = problems_of(one_step(f"{{v: '{{{{ {deep} }}}}'}}"))
    assert problem.endswith("v: the expression nests deeper than 32 levels (CEL's limit)")
    long = "'" + "x" * 100_001 + "'"
    (problem,) = problems_of(one_step(f'{{v: "{{{{ {long} }}}}"}}'))
    assert "characters long, over CEL's limit of 100000" in problem


def test_expression_holding_a_lone_surrogate_is_a_template_problem() -> None:
    """Given straight to ``expr``, a lone surrogate was a TypeError out of the CEL binding."""
    with pytest.raises(expr.TemplateSyntaxError, match="lone surrogate"):
        expr.compile_string("{{ '\ud800' }}", expr.Scope(frozenset({"input"}), frozenset()))


def test_long_workflows_compile_against_only_the_names_each_expression_reads() -> None:
    """Loading was quadratic in the number of steps (5,000 steps: 100 s): each expression got a
    CEL environment declaring every name in scope, and each scope listed every earlier step.
    Now an environment declares the names its expression mentions, and no scope is listed."""
    steps = "".join(
        f"  - {{id: s{i}, service: s, method: M, input: {{a: '{{{{ s{max(i - 1, 0)}.id }}}}'}}}}\n"
        for i in range(1, 400)
    )
    listed = 0
    original = Scopes.chain

    def chain(self: Scopes, kind: int, layer: Any) -> Iterator[str]:
        nonlocal listed
        listed += 1
        return original(self, kind, layer)

    compiler._ENVS.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Scopes, "chain", chain)
        workflow = load_string(HEAD + "steps:\n  - {id: s0, service: s, method: M}\n" + steps)
    assert len(workflow.steps) == 400
    assert listed == 0
    assert len(compiler._ENVS) <= 400
    assert all(len(names) == 1 for names in compiler._ENVS)


def test_a_name_the_scanner_misses_is_declared_when_cel_asks_for_it() -> None:
    """Declaring only the names the scanner finds must never make a name in scope undeclared:
    when CEL reports one that is in scope, it is declared and the expression compiled again."""
    program = compiler._compile("a + 1", frozenset(), frozenset({"a", "input"}))
    assert program.eval(data={"a": 1}).value() == 2
    with pytest.raises(RuntimeError, match="undeclared reference to 'b'"):
        compiler._compile("b + 1", frozenset(), frozenset({"a"}))


def test_rendered_values_are_bounded() -> None:
    """``input.xs.map(x, input.xs)`` is n² values from n: the conversion stops at the limit
    (1,000,000 values and 16 MiB of text by default; lowered here to keep the test fast)."""
    assert (values.RenderBudget().max_values, values.RenderBudget().max_chars) == (
        1_000_000,
        16 * 1024 * 1024,
    )
    scope = expr.Scope(frozenset({"input"}), frozenset())
    template = expr.compile_string("{{ input.xs.map(x, input.xs) }}", scope)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(values, "MAX_RENDERED_VALUES", 1000)
        assert len(template.render({"input": {"xs": list(range(30))}})) == 30
        with pytest.raises(EvaluationError, match=r"more than 1000 values \(max_rendered_values\)"):
            template.render({"input": {"xs": list(range(40))}})


def test_iteration_budget_is_named_in_the_step_error() -> None:
    """CEL's iteration budget was reported as ``iteration budget exceeded [INTERNAL]``."""
    scope = expr.Scope(frozenset({"input"}), frozenset())
    template = expr.compile_string("{{ input.xs.map(x, input.xs.map(y, x * y)) }}", scope)
    with pytest.raises(EvaluationError) as info:
        template.render({"input": {"xs": list(range(100))}})
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert "ran 10000 comprehension iterations" in info.value.message
    assert "[INTERNAL]" not in info.value.message


def test_grammar_draws_valid_workflows_and_files_load_them(tmp_path: Path) -> None:
    """The generator's valid mode stays valid (else the fuzzers would test only refusals)."""
    for seed in range(20):
        text = emit(Grammar(random.Random(seed), valid=True).workflow(), random.Random(seed))
        path = tmp_path / f"w{seed}.yaml"
        path.write_text(text)
        assert isinstance(load_file(str(path)), Workflow), text


def test_message_quoting_a_line_break_stays_on_one_line(workdir: Path) -> None:
    """A value holding a line break (here U+2028 from an escape) was quoted raw, so ``maestro
    validate`` printed one problem on two lines; line breaks and controls are now escaped."""
    text = 'name: "\\u2028w\\u202e"\nservices:\n  s: {type: grpc, endpoint: "x:1"}\nsteps: [{id: a, service: s, method: M}]\n'
    assert problems_of(text) == [
        "1:7: name: '\\u2028w\\u202e' may hold only letters, digits, '_', '.' and '-'"
    ]
    path = workdir / "main.yaml"
    path.write_text(text)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["validate", str(path)]) == 1
    assert out.getvalue().splitlines() == [
        f"{path}:1:7: name: '\\u2028w\\u202e' may hold only letters, digits, '_', '.' and '-'"
    ]


@pytest.mark.parametrize(
    "schema",
    [
        "{$defs: {a: {$ref: '#/$defs/a'}}, $ref: '#/$defs/a'}",
        "{$ref: '#'}",
        "{$defs: {a: {allOf: [{$ref: '#/$defs/b'}]}, b: {anyOf: [{$ref: '#/$defs/a'}]}}, $ref: '#/$defs/a'}",
    ],
)
def test_schema_whose_references_loop_is_a_load_error(schema: str) -> None:
    """``$ref`` loops that never go into the input loaded, then every execution raised a
    RecursionError out of jsonschema (UNKNOWN to the client)."""
    text = HEAD + f"input: {schema}\nsteps: [{{id: a, service: s, method: M}}]\n"
    assert problems_of(text) == [
        "4:8: input: the schema's references loop without end ($ref to itself)"
    ]
    tree = "{$defs: {n: {type: object, properties: {kids: {type: array, items: {$ref: '#/$defs/n'}}}}}, $ref: '#/$defs/n'}"
    assert load_string(HEAD + f"input: {tree}\nsteps: [{{id: a, service: s, method: M}}]\n")


def test_missing_name_beside_an_unreadable_section_is_a_diagnostic() -> None:
    """Without ``name`` and with ``services`` not a mapping, the rest reading well, the loader
    built a ``Workflow`` without a name: a TypeError."""
    text = "services: 0\nsteps:\n  - {id: s1, fail: {code: UNAVAILABLE, message: x}}\n"
    assert problems_of(text) == [
        "1:1: workflow: missing required key 'name'",
        "1:11: services: expected a mapping, got a number",
    ]
