"""The lexical scanner behind templates: template boundaries, roots, selections."""

from __future__ import annotations

import pytest

from maestro_gateway.expr.scan import paths, root_indexes, split_template, tokenize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", [("plain", 0, False)]),
        ("{{ a }}", [(" a ", 2, True)]),
        ("x{{a}}y", [("x", 0, False), ("a", 3, True), ("y", 6, False)]),
        ("{{ '}}' }}", [(" '}}' ", 2, True)]),
        ('{{ """a}}\n""" }}', [(' """a}}\n""" ', 2, True)]),
        ("{{ r'\\' }}", [(" r'\\' ", 2, True)]),
        ("{{ '\\'}}' }}", [(" '\\'}}' ", 2, True)]),
        ("{{ {'a': {}} }}", [(" {'a': {}} ", 2, True)]),
        ("{{ a }}{{ b }}", [(" a ", 2, True), (" b ", 9, True)]),
        ("}} {{ a }}", [("}} ", 0, False), (" a ", 5, True)]),
    ],
)
def test_split_template(text: str, expected: list[tuple[str, int, bool]]) -> None:
    """Templates end at the first ``}}`` outside strings and unbalanced braces."""
    segments, problems = split_template(text)
    assert problems == []
    assert [(s.text, s.start, s.is_expr) for s in segments] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ a", [(0, "unclosed '{{': no matching '}}'")]),
        (
            "ok {{ a }} {{ 'x }}",
            [
                (
                    11,
                    "unclosed '{{': no matching '}}' (a string literal inside it is not terminated)",
                )
            ],
        ),
        ("{{}} {{ b }} {{\t}}", [(0, "empty template '{{ }}'"), (13, "empty template '{{ }}'")]),
    ],
)
def test_split_template_problems(text: str, expected: list[tuple[int, str]]) -> None:
    """Unclosed and empty templates are reported at the offset of their ``{{``."""
    _, problems = split_template(text)
    assert problems == expected


@pytest.mark.parametrize(
    ("source", "roots"),
    [
        ("a.b + c", ["a", "c"]),
        (".a.b", ["a"]),
        ("has(.a.b) && f(x)", ["a", "x"]),
        ("'a.b' + b\"c\" + d", ["d"]),
        ("x // a comment naming y\n + z", ["x", "z"]),
        ("(a).b.c", ["a"]),
        ("[1].map(v, v + a)", ["v", "v", "a"]),
        ("true || null == x in [1]", ["x"]),
        ("1.5 + .5 + a.`b-c`", ["a"]),
        ("m[a].b", ["m", "a"]),
    ],
)
def test_roots(source: str, roots: list[str]) -> None:
    """Root identifiers exclude fields, functions, keywords, strings and comments."""
    tokens = tokenize(source)
    assert [tokens[k].text for k in root_indexes(tokens)] == roots


def test_paths() -> None:
    """Selection chains follow ``.name``, back-quoted names and ``["name"]``, with offsets."""
    chains = paths(tokenize('a.b["c"].`d-e`.f() + .g.h'))
    assert chains == [(["a", "b", "c", "d-e"], [0, 2, 4, 9]), (["g", "h"], [22, 24])]
