"""YAML parsing with positions, for the loader.

PyYAML's ``compose`` returns a node tree where every node carries its ``start_mark`` (0-based
line and column), which is what lets every diagnostic point at the offending text. Scalars are
resolved with the YAML 1.2 core schema for booleans (only ``true``/``false``), as Go's yaml.v3
does in Maestro.go: ``country: NO`` stays the string ``"NO"``. Timestamps stay strings, because
a template context holds JSON-like values only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from maestro_gateway.model.types import Position

STR = "tag:yaml.org,2002:str"
BOOL = "tag:yaml.org,2002:bool"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
NULL = "tag:yaml.org,2002:null"
TIMESTAMP = "tag:yaml.org,2002:timestamp"
MERGE = "tag:yaml.org,2002:merge"


class _Resolver(Resolver):
    """The default resolver with YAML 1.2 booleans and no implicit timestamps."""


_Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (BOOL, TIMESTAMP)]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Resolver.add_implicit_resolver(
    BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Composer(Reader, Scanner, Parser, Composer, _Resolver):
    """A node composer: PyYAML's pieces, assembled without a constructor."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)


class _Constructor(SafeConstructor):
    """Builds plain values from nodes; booleans follow YAML 1.2, timestamps stay strings."""

    def construct_yaml_bool(self, node: Node) -> bool:
        """Read ``true``/``false`` in any of the three YAML 1.2 spellings."""
        return str(node.value).lower() == "true"


# The stubs type add_constructor's callback too narrowly for a subclass method.
_Constructor.add_constructor(BOOL, _Constructor.construct_yaml_bool)  # type: ignore[type-var]
_Constructor.add_constructor(TIMESTAMP, SafeConstructor.construct_yaml_str)  # type: ignore[type-var]


def compose(text: str) -> Node | None:
    """Parse one YAML document into a node tree (None for an empty document).

    Raises:
        yaml.MarkedYAMLError: on a syntax error (with ``problem_mark``).
        yaml.YAMLError: on anything else PyYAML refuses.
    """
    composer = _Composer(text)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


def position(node: Node) -> Position:
    """The 1-based position where ``node`` starts."""
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def to_python(node: Node) -> Any:
    """The plain value of ``node`` (dicts, lists, str, int, float, bool, None)."""
    return _Constructor().construct_document(node)


def kind(node: Node) -> str:
    """A user-facing name for what ``node`` is: mapping, list, string, number, boolean, null."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        STR: "a string",
        INT: "a number",
        FLOAT: "a number",
        BOOL: "a boolean",
        NULL: "null",
    }.get(node.tag, "a string")


def is_null(node: Node) -> bool:
    """True for an explicit or empty null scalar."""
    return isinstance(node, ScalarNode) and node.tag == NULL


def pairs(node: MappingNode) -> Iterator[tuple[Node, Node]]:
    """Key/value node pairs of a mapping, with ``<<`` merge keys applied (explicit keys win)."""
    merged: list[tuple[Node, Node]] = []
    explicit: list[tuple[Node, Node]] = []
    for key, value in node.value:
        if key.tag == MERGE:
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if isinstance(source, MappingNode):
                    merged.extend(pairs(source))
        else:
            explicit.append((key, value))
    names = {k.value for k, _ in explicit if isinstance(k, ScalarNode)}
    yield from ((k, v) for k, v in merged if not (isinstance(k, ScalarNode) and k.value in names))
    yield from explicit


def duplicate_keys(root: Node) -> Iterator[tuple[ScalarNode, ScalarNode]]:
    """Every (first, duplicate) key pair of every mapping in the tree, in document order."""
    seen_nodes: set[int] = set()
    stack: list[Node] = [root]
    found: list[tuple[ScalarNode, ScalarNode]] = []
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, ScalarNode] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.tag != MERGE:
                    if key.value in first:
                        found.append((first[key.value], key))
                    else:
                        first[key.value] = key
                stack.extend((key, value))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    found.sort(key=lambda p: (p[1].start_mark.line, p[1].start_mark.column))
    yield from found


__all__ = [
    "BOOL",
    "FLOAT",
    "INT",
    "NULL",
    "STR",
    "MappingNode",
    "Node",
    "ScalarNode",
    "SequenceNode",
    "compose",
    "duplicate_keys",
    "is_null",
    "kind",
    "pairs",
    "position",
    "to_python",
    "yaml",
]
