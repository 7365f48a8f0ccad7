"""YAML parsing with positions, for the loader.

PyYAML's ``compose`` returns a node tree where every node carries its ``start_mark`` (0-based
line and column), which is what lets every diagnostic point at the offending text. Scalars are
resolved with the YAML 1.2 core schema for booleans (only ``true``/``false``), as Go's yaml.v3
does in Maestro.go: ``country: NO`` stays the string ``"NO"``. Timestamps stay strings, because
a template context holds JSON-like values only.

Parsing is bounded (:class:`YamlLimits`): the text's size, the number of nodes *after* alias
expansion and the nesting depth (also after expansion) are checked while the tree is composed,
before anything is expanded, so a kilobyte-sized "billion laughs" document is refused after
reading a few hundred events, with :class:`LimitExceeded` at the offending node. An alias inside
the node its anchor marks (``&a [*a]``) is refused too: nothing JSON-like is recursive.

A workflow holds JSON-like values only. :func:`check_values` finds, in a composed tree, what the
readers could not take as such (a tag other than the core ones, ``!!int abc``, an integer
longer than Python converts, a lone surrogate from a ``"\\ud800"`` escape) and neutralises
each node in place after reporting it, so that the rest of the file is still checked.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
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
MAP = "tag:yaml.org,2002:map"
SEQ = "tag:yaml.org,2002:seq"
# Scalars YAML 1.1 gives a type that YAML 1.2 (and Go) reads as a string: "=", a lone "!",
# and an explicit !!timestamp (timestamps stay strings).
_AS_STRING = frozenset({TIMESTAMP, "tag:yaml.org,2002:value", "tag:yaml.org,2002:yaml", "!"})
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Resolver(Resolver):
    """The default resolver with YAML 1.2 booleans and no implicit timestamps."""


_Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (BOOL, TIMESTAMP)]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Resolver.add_implicit_resolver(
    BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


DEFAULT_MAX_BYTES = 1024 * 1024
"""Largest workflow text accepted, in bytes of UTF-8 (``--max-yaml-bytes``)."""
DEFAULT_MAX_NODES = 100_000
"""Most YAML nodes in a document once its aliases are expanded (``--max-yaml-nodes``)."""
DEFAULT_MAX_DEPTH = 64
"""Deepest nesting of mappings and lists, aliases expanded (``--max-yaml-depth``)."""


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """Bounds on one YAML document; each must be at least 1.

    Attributes:
        max_bytes: the size of the text in bytes (UTF-8).
        max_nodes: the number of nodes after expanding aliases (``*a`` counts every node of
            what ``&a`` anchors, each time it is used).
        max_depth: the nesting depth of mappings and lists after expanding aliases (a scalar
            at the top is depth 1).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_nodes: int = DEFAULT_MAX_NODES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_nodes", "max_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


_default_limits = YamlLimits()


def default_limits() -> YamlLimits:
    """The limits used when a caller gives none (the process-wide setting)."""
    return _default_limits


def set_default_limits(limits: YamlLimits) -> None:
    """Change the process-wide limits (the CLI does, from its flags, before loading anything).

    Process-wide because every reader of workflow text must apply the same bounds, including
    recovery, which loads stored definitions deep inside the engine.
    """
    global _default_limits
    _default_limits = limits


class LimitExceeded(yaml.YAMLError):
    """A document is over one of its :class:`YamlLimits`; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def check_size(text: str, limits: YamlLimits) -> None:
    """Refuse ``text`` when it is larger than ``limits.max_bytes``.

    Raises:
        LimitExceeded: at 1:1, naming the limit.
    """
    # A str has at most 4 bytes per character: skip the encoding when it cannot be too big.
    if len(text) * 4 <= limits.max_bytes:
        return
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limits.max_bytes:
        raise LimitExceeded(
            f"the workflow is {size} bytes, over the limit of {limits.max_bytes} bytes "
            "(max_yaml_bytes)",
            1,
            1,
        )


class _Composer(Reader, Scanner, Parser, Composer, _Resolver):
    """A node composer: PyYAML's pieces, assembled without a constructor, counting as it goes.

    Every composed node records its expanded size (nodes, itself included) and height; an alias
    adds its anchor's size to the running total and its height to the current depth, so the
    bounds hold for the expanded document while nothing is ever expanded.
    """

    def __init__(self, stream: str, limits: YamlLimits) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)
        self._limits = limits
        self._nodes = 0
        self._depth = 0
        self._sizes: dict[int, tuple[int, int]] = {}

    def _count(self, size: int, height: int, at: Any) -> None:
        limits = self._limits
        line, column = (at.line + 1, at.column + 1) if at is not None else (1, 1)
        self._nodes += size
        if self._nodes > limits.max_nodes:
            raise LimitExceeded(
                f"the document expands to more than {limits.max_nodes} nodes (max_yaml_nodes); "
                "check its aliases",
                line,
                column,
            )
        if self._depth + height > limits.max_depth:
            raise LimitExceeded(
                f"nesting deeper than {limits.max_depth} levels (max_yaml_depth)",
                line,
                column,
            )

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node as PyYAML does, checking the limits first."""
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                if id(anchored) not in self._sizes:
                    # Its node is still being composed: the alias would make it contain itself.
                    mark: Any = event.start_mark
                    raise ComposerError(
                        None,
                        None,
                        f"found the alias *{event.anchor} inside the node its anchor marks "
                        "(a recursive alias)",
                        mark,
                    )
                size, height = self._sizes[id(anchored)]
                self._count(size, height, event.start_mark)
            return super().compose_node(parent, index)
        self._count(1, 1, event.start_mark)
        before = self._nodes
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        height = 1 + max((self._sizes.get(id(c), (1, 1))[1] for c in children), default=0)
        self._sizes[id(node)] = (self._nodes - before + 1, height)
        return node


class _Constructor(SafeConstructor):
    """Builds plain values from nodes; booleans follow YAML 1.2, timestamps stay strings."""

    def construct_yaml_bool(self, node: Node) -> bool:
        """Read ``true``/``false`` in any of the three YAML 1.2 spellings."""
        return str(node.value).lower() == "true"


# The stubs type add_constructor's callback too narrowly for a subclass method.
_Constructor.add_constructor(BOOL, _Constructor.construct_yaml_bool)  # type: ignore[type-var]
_Constructor.add_constructor(TIMESTAMP, SafeConstructor.construct_yaml_str)  # type: ignore[type-var]


def compose(text: str, limits: YamlLimits | None = None) -> Node | None:
    """Parse one YAML document into a node tree (None for an empty document).

    Args:
        text: the document.
        limits: its bounds (default: :func:`default_limits`).

    Raises:
        LimitExceeded: the text is over one of ``limits``.
        yaml.MarkedYAMLError: on a syntax error (with ``problem_mark``).
        yaml.YAMLError: on anything else PyYAML refuses.
    """
    limits = limits or default_limits()
    check_size(text, limits)
    composer = _Composer(text, limits)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


def check_values(root: Node) -> list[tuple[Node, str]]:
    """Every node of ``root`` that is not a JSON-like value, with what is wrong, in any order.

    Each such node is changed in place into one the readers take (a string, a plain mapping or
    list), so that loading can go on and report the file's other problems. Valid surrogate
    pairs written as two escapes (``"\\ud83d\\ude00"``, as JSON does) become their character.
    """
    problems: list[tuple[Node, str]] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, is_key = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            if node.tag == MERGE and not is_key:
                node.tag = STR  # "<<" merges only as a key; elsewhere it is text
            problems.extend((node, message) for message in _check_scalar(node))
            continue
        default = SEQ if isinstance(node, SequenceNode) else MAP
        if node.tag not in (default, "!"):
            problems.append((node, _unsupported(node.tag)))
        node.tag = default
        if isinstance(node, SequenceNode):
            stack.extend((item, False) for item in node.value)
        else:
            for key, value in node.value:
                stack.extend(((key, True), (value, False)))
    return problems


def _unsupported(tag: str) -> str:
    short = tag.replace("tag:yaml.org,2002:", "!!")
    return (
        f"unsupported YAML tag {short}: a workflow holds only strings, numbers, booleans, null, "
        "lists and mappings"
    )


def _check_scalar(node: ScalarNode) -> list[str]:
    problems: list[str] = []
    if _SURROGATE.search(node.value):
        try:  # pairs become their character; a lone surrogate raises
            node.value = node.value.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            lone = next(c for c in node.value if _SURROGATE.match(c))
            problems.append(
                f"the text holds a lone surrogate (\\u{ord(lone):04x}), which is not a "
                "Unicode character; write a character above U+FFFF as \\U followed by 8 hex "
                "digits or as a pair of \\u escapes"
            )
            node.value = node.value.encode("utf-16", "surrogatepass").decode(
                "utf-16", errors="replace"
            )
    tag = node.tag
    if tag in _AS_STRING:
        node.tag = STR
    elif tag not in (STR, INT, FLOAT, BOOL, NULL, MERGE):
        problems.append(_unsupported(tag))
        node.tag = STR
    elif tag == INT:
        digits = node.value.replace("_", "").lstrip("+-")
        limit = sys.get_int_max_str_digits()
        if digits.isdigit() and limit and len(digits) > limit:
            problems.append(
                f"an integer of {len(digits)} digits, more than the {limit} a number may have"
            )
            node.tag = STR
        else:
            problems.extend(_constructible(node, "an integer"))
    elif tag == FLOAT:
        problems.extend(_constructible(node, "a number"))
    elif tag == BOOL and node.value.lower() not in ("true", "false"):
        problems.append(f"'{node.value}' is not a boolean (true or false)")
        node.tag = STR
    return problems


def _constructible(node: ScalarNode, what: str) -> list[str]:
    """An explicitly tagged ``!!int abc`` is not one: report it and keep it as a string."""
    try:
        to_python(node)
    except (ValueError, yaml.YAMLError):
        node.tag = STR
        return [f"'{node.value}' is not {what}"]
    return []


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
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NODES",
    "FLOAT",
    "INT",
    "MAP",
    "NULL",
    "SEQ",
    "STR",
    "LimitExceeded",
    "MappingNode",
    "Node",
    "ScalarNode",
    "SequenceNode",
    "YamlLimits",
    "check_size",
    "check_values",
    "compose",
    "default_limits",
    "duplicate_keys",
    "is_null",
    "kind",
    "pairs",
    "position",
    "set_default_limits",
    "to_python",
    "yaml",
]
