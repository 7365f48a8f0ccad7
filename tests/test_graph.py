"""The Mermaid rendering of workflows: shape, escaping and a strict syntax check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from maestro_gateway.model.graph import escape, to_mermaid
from maestro_gateway.model.loader import load_file, load_string

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "workflows").glob("*.yaml"))
FIXTURES = ROOT / "tests" / "fixtures" / "workflows"
KINDS = [
    FIXTURES / f"{name}.pass.yaml"
    for name in ("foreach", "switch", "loop", "fail", "nested-kinds", "workflow-step")
]

_NODE = r"[a-z]+\d*"
_LABEL = r'"[^"\n]*"'
# Every line the renderer may emit, in Mermaid flowchart grammar.
_LINE_FORMS = [
    re.compile(r"flowchart TD"),
    re.compile(rf"    {_NODE}\(\[{_LABEL}\]\)"),  # stadium: start / end
    re.compile(rf"(?:    )+{_NODE}\[{_LABEL}\]"),  # step box
    re.compile(rf"(?:    )+{_NODE}\[\[{_LABEL}\]\]"),  # subroutine: a workflow step
    re.compile(rf"(?:    )+{_NODE}\[/{_LABEL}\\\]"),  # trapezoid: a fail step
    re.compile(rf"(?:    )+{_NODE}\{{{_LABEL}\}}"),  # decision
    re.compile(rf"(?:    )+{_NODE}\{{\{{{_LABEL}\}}\}}"),  # hexagon: a wait step
    re.compile(rf"(?:    )+{_NODE}>{_LABEL}\]"),  # asymmetric: an emit step, a trigger
    re.compile(rf"(?:    )+subgraph {_NODE}\[{_LABEL}\]"),
    re.compile(r"(?:    )+end"),
    re.compile(rf"    {_NODE} --> {_NODE}"),
    re.compile(rf"    {_NODE} -->\|{_LABEL}\| {_NODE}"),
    re.compile(rf"    {_NODE} -\.->\|{_LABEL}\| {_NODE}"),
    re.compile(rf"    {_NODE} -\.-> {_NODE}"),  # a trigger without a condition
]


def check_syntax(diagram: str) -> None:
    """Fail unless every line is a known Mermaid form and every edge joins declared nodes."""
    assert diagram.endswith("\n")
    declared: set[str] = set()
    edges: list[tuple[str, str]] = []
    depth = 0
    for line in diagram.splitlines():
        assert any(form.fullmatch(line) for form in _LINE_FORMS), f"unexpected line: {line!r}"
        if line.strip().startswith("subgraph"):
            depth += 1
        elif line.strip() == "end":
            depth -= 1
            assert depth >= 0
        elif m := re.fullmatch(rf"\s*({_NODE})[\[({{>].*", line):
            assert m.group(1) not in declared, f"declared twice: {line!r}"
            declared.add(m.group(1))
        elif m := re.fullmatch(rf"\s*({_NODE}) .*? ({_NODE})", line):
            edges.append((m.group(1), m.group(2)))
    assert depth == 0
    for source, target in edges:
        assert source in declared, source
        assert target in declared, target
    for label in re.findall(_LABEL, diagram):
        body = re.sub(r"#\w+;", "", label[1:-1]).replace("<br/>", "")
        assert not set(body) & set('"<>{}[]|`;#'), label


def test_escape_replaces_every_character_that_could_end_a_label() -> None:
    """Quotes, braces, angle brackets and pipes become Mermaid entity codes; text is one line."""
    assert escape('a "b" <c> {d} [e] |f| #g\nh') == (
        "a #quot;b#quot; #lt;c#gt; #123;d#125; #91;e#93; #124;f#124; #35;g h"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_render_valid_mermaid(path: Path) -> None:
    """Every example workflow renders to syntactically valid Mermaid."""
    check_syntax(to_mermaid(load_file(str(path))))


def test_checkout_diagram_has_every_construct() -> None:
    """Steps in order, a parallel subgraph, a decision for when and dashed compensation edges."""
    diagram = to_mermaid(load_file(str(ROOT / "workflows" / "checkout.yaml")))
    lines = diagram.splitlines()
    assert lines[0] == "flowchart TD"
    assert lines[1] == '    start(["checkout"])'
    assert '    subgraph p2["parallel: charge-and-notify"]' in lines
    assert '    s1 -.->|"compensate: shop.v1.Inventory/Release"| start' in lines
    assert '    s3 -.->|"compensate: shop.v1.Payments/Refund"| s1' in lines
    assert '    d5{"when payment.amount #gt; 0"}' in lines
    assert '    d5 -->|"yes"| s6' in lines
    assert '    d5 -->|"no"| finish' in lines
    assert "    s1 --> s3" in lines
    assert "    s1 --> s4" in lines
    assert "    s3 --> d5" in lines
    assert "    s4 --> d5" in lines
    assert "    s6 --> finish" in lines
    check_syntax(diagram)


def test_hostile_names_are_escaped_and_conditions_on_parallel_children_label_edges() -> None:
    """Quotes and braces in ids, paths and conditions cannot break the diagram."""
    workflow = load_string(
        """name: x
services:
  web: {type: http, endpoint: "http://127.0.0.1:1"}
steps:
  - id: end
    service: web
    method: 'POST /a/{{ input["k"] }}'
  - parallel:
      - {id: b.c, output: bc, service: web, method: /b, when: '{{ input.s == "<x>" }}'}
      - {id: d-e, output: de, service: web, method: /d}
"""
    )
    diagram = to_mermaid(workflow)
    check_syntax(diagram)
    assert '    s1 -->|"when input.s == #quot;#lt;x#gt;#quot;"| s3' in diagram.splitlines()
    assert "#91;#quot;k#quot;#93;" in diagram


@pytest.mark.parametrize("path", KINDS, ids=[p.name for p in KINDS])
def test_every_kind_renders_valid_mermaid(path: Path) -> None:
    """foreach, loop, switch, workflow and fail steps, nested or not, give valid diagrams."""
    check_syntax(to_mermaid(load_file(str(path))))


def test_kinds_are_drawn_as_subgraphs_decisions_and_boxes() -> None:
    """foreach/loop are subgraphs (loop with a repeat edge), switch a decision, workflow a link."""
    workflow = load_string(
        """name: kinds
services:
  web: {type: http, endpoint: "http://127.0.0.1:1"}
steps:
  - id: lines
    foreach: "{{ input.lines }}"
    steps: [{id: each, service: web, method: /each}]
  - id: route
    switch:
      - when: "{{ input.big }}"
        steps: [{id: big, service: web, method: /big}]
      - when: "{{ input.none }}"
  - id: poll
    loop:
      steps: [{id: check, service: web, method: /check}]
      until: "{{ check.done }}"
      max_iterations: 3
  - {id: pay, workflow: payment, when: "{{ input.pay }}"}
  - {id: stop, fail: {code: ABORTED, message: stop}}
"""
    )
    diagram = to_mermaid(workflow)
    check_syntax(diagram)
    lines = diagram.splitlines()
    assert lines[2:5] == [
        '    subgraph f1["foreach: lines #40;item in input.lines#41;"]',
        '        s2["each<br/>web: POST /each"]',
        "    end",
    ]
    assert "    start --> s2" in lines
    assert '    d3{"switch: route"}' in lines
    assert '    d3 -->|"when input.big"| s4' in lines
    assert '    d3 -->|"when input.none"| s6' in lines  # an empty branch goes straight on
    assert '    d3 -->|"no branch"| s6' in lines
    assert '    s6 -.->|"repeat unless check.done"| s6' in lines
    assert '    s8[["pay<br/>workflow: payment"]]' in lines
    assert '    d7 -->|"no"| s9' in lines
    assert '    s9[/"stop<br/>fail: ABORTED"\\]' in lines
    assert lines[-1] == '    finish(["end"])'  # nothing follows a fail step


def test_triggers_are_drawn_as_signals_into_the_start() -> None:
    """Each trigger is a signal node with a dashed edge into the start, its `when` on the edge."""
    path = Path(__file__).parent / "fixtures" / "workflows" / "triggers.pass.yaml"
    text = to_mermaid(load_file(str(path)))
    assert '    trigger1>"signal order.paid"]' in text
    assert '    trigger1 -.->|"signal.params.amount #gt; 0"| start' in text
    assert "    trigger2 -.-> start" in text
