"""The loader's working state: the diagnostics found so far and typed readers of YAML nodes.

Every reader checks one node, reports what is wrong at the node's position and returns None
instead of raising, so one pass over the file collects every problem. Field paths in messages
(``services.inventory.retry.attempts``) say where the problem is even without the position.

Templates read the gateway's environment (``env.NAME``, DESIGN §9) through the context, once per
variable and load, under one of three policies (``EnvPolicy``): ``require`` (an unset variable
is an error: serve, execute, recovery), ``warn`` (a warning, and the template is compiled with an
empty value: ``maestro validate``) and ``skip`` (the environment is not read at all, every
variable is an empty value: ``maestro graph`` and the ``ValidateWorkflow`` RPC, which check a
text that may run elsewhere). Every value read is registered for redaction
(``maestro_gateway.redaction``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

from maestro_gateway import expr
from maestro_gateway.errors import Diagnostic
from maestro_gateway.model.durations import DurationError, parse_duration
from maestro_gateway.model.types import Position
from maestro_gateway.model.yamlnodes import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    STR,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    kind,
    pairs,
    position,
    to_python,
)
from maestro_gateway.redaction import SECRETS

_INDENT = re.compile(r"[ ]*")
# Characters a one-line message must not hold as they are: line breaks and other controls, which
# would split or garble a `file:line:col: message` line, and the bidirectional controls, which
# would reorder what a terminal shows of it.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\n": "\\n", "\r": "\\r"}
_VALUE_BREAK = re.compile("[\n\u2028\u2029]")
_T = TypeVar("_T")

EnvPolicy = Literal["require", "warn", "skip"]
"""What an unset ``env.NAME`` is at load: an error, a warning, or not looked up at all."""


class _Environment(Mapping[str, str]):
    """The environment as templates see it during one load: each variable read once.

    ``placeholder`` answers an empty string for a variable that is not set (or for every
    variable when the policy is ``skip``), so a template can be compiled without its value.
    """

    def __init__(self, source: Mapping[str, str], policy: EnvPolicy) -> None:
        self._source = source
        self._policy = policy
        self.read: dict[str, str | None] = {}
        self.placeholder = _Placeholder(self)

    def __getitem__(self, name: str) -> str:
        value = self.lookup(name)
        if value is None:
            raise KeyError(name)
        return value

    def lookup(self, name: str) -> str | None:
        """The value of ``name`` (None when unset), read from the source at most once."""
        if self._policy == "skip":
            return None
        if name not in self.read:
            value = self._source.get(name)
            self.read[name] = value
            if value is not None:
                SECRETS.add([value])
        return self.read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, v in self.read.items() if v is not None)

    def __len__(self) -> int:
        return sum(v is not None for v in self.read.values())


class _Placeholder(Mapping[str, str]):
    """The environment with an empty string for every variable that is not set."""

    def __init__(self, env: _Environment) -> None:
        self._env = env

    def __getitem__(self, name: str) -> str:
        value = self._env.lookup(name)
        return "" if value is None else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def printable(message: str) -> str:
    """``message`` on one line: line breaks and control characters (values quoted from the file
    may hold them) written as escapes, ``\\n`` or ``\\u2028``."""
    return _UNPRINTABLE.sub(lambda m: _ESCAPES.get(m[0], f"\\u{ord(m[0]):04x}"), message)


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string if none is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    if not close and word.lower() in {c.lower() for c in choices}:
        close = [c for c in choices if c.lower() == word.lower()]
    return f" (did you mean '{close[0]}'?)" if close else ""


class LoadContext:
    """Diagnostics and node readers for one workflow file.

    Attributes:
        path: the file name used in diagnostics, exactly as given.
        base_dir: the directory relative file paths in the workflow are resolved against.
        check_files: whether referenced files (TLS, descriptors) must exist.
        env_policy: what an unset ``env.NAME`` is (see the module docstring).
        diagnostics: every problem found so far.
        warnings: problems that do not stop the file from loading (``env_policy`` ``warn``).
    """

    def __init__(
        self,
        path: str,
        text: str,
        base_dir: str,
        *,
        check_files: bool,
        env_policy: EnvPolicy = "skip",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.base_dir = base_dir
        self.check_files = check_files
        self.env_policy: EnvPolicy = env_policy
        self.env = _Environment(os.environ if environ is None else environ, env_policy)
        self.diagnostics: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    # -- reporting ---------------------------------------------------------------------------

    def error_at(self, pos: Position, message: str) -> None:
        """Record a problem at ``pos``."""
        self.diagnostics.append(Diagnostic(self.path, pos.line, pos.column, printable(message)))

    def error(self, node: Node, message: str) -> None:
        """Record a problem at the start of ``node``."""
        self.error_at(position(node), message)

    def warning_at(self, pos: Position, message: str) -> None:
        """Record a warning at ``pos`` (it does not make the file invalid)."""
        self.warnings.append(
            Diagnostic(self.path, pos.line, pos.column, printable(message), "warning")
        )

    def offset_position(self, node: ScalarNode, offset: int) -> Position:
        """Where character ``offset`` of a scalar's value is in the file.

        Exact for plain and single-line quoted scalars (escape sequences such as ``\\n`` inside
        double quotes can shift it slightly) and for literal block scalars (``|``); other multi-line scalars
        (folded ``>`` or quoted strings spanning lines) report the start of the scalar.
        """
        line0, col0 = node.start_mark.line, node.start_mark.column
        single_line = node.end_mark.line == line0
        if node.style in (None, "'", '"') and single_line:
            quote = 1 if node.style else 0
            if node.style == "'":  # '' stands for one quote in the value
                offset += node.value[:offset].count("'")
            return self._within(Position(line0 + 1, col0 + 1 + quote + offset))
        if node.style == "|":
            # A literal block keeps U+2028 and U+2029 as they are, but YAML counts them as line
            # breaks, as it does \n.
            before = _VALUE_BREAK.split(node.value[:offset])
            source_line = line0 + len(before)  # the header line is line0; content starts below
            text = self.lines[source_line] if source_line < len(self.lines) else ""
            value_line = _VALUE_BREAK.split(node.value)[len(before) - 1]
            # The indentation is what the source line holds before the value's line (more than
            # the first line's when an indentation indicator such as |2 keeps leading spaces).
            if text.endswith(value_line) and len(text) > len(value_line):
                indent = len(text) - len(value_line)
            else:
                indent = self._block_indent(line0 + 1)
            return self._within(Position(source_line + 1, indent + len(before[-1]) + 1))
        return position(node)

    def _within(self, pos: Position) -> Position:
        """``pos`` moved, if needed, onto the text (the end of its line at most)."""
        line = min(max(pos.line, 1), max(len(self.lines), 1))
        text = self.lines[line - 1] if self.lines else ""
        return Position(line, min(max(pos.column, 1), len(text) + 1))

    def _block_indent(self, first_line: int) -> int:
        for line in self.lines[first_line:]:
            if line.strip():
                return len(_INDENT.match(line).group(0))  # type: ignore[union-attr]
        return 0

    # -- structure ---------------------------------------------------------------------------

    def fields(
        self,
        node: Node,
        where: str,
        allowed: Sequence[str],
        required: Sequence[str] = (),
    ) -> dict[str, Node] | None:
        """Read a mapping with known keys: report unknown keys (with a suggestion) and missing ones.

        Returns:
            The value nodes by key, or None when ``node`` is not a mapping.
        """
        if not isinstance(node, MappingNode):
            self.error(node, f"{where}: expected a mapping, got {kind(node)}")
            return None
        out: dict[str, Node] = {}
        for key, value in pairs(node):
            if not isinstance(key, ScalarNode):
                self.error(key, f"{where}: keys must be strings")
                continue
            if key.value not in allowed:
                hint = did_you_mean(key.value, allowed)
                self.error(key, f"{where}: unknown key '{key.value}'{hint}")
                continue
            out[key.value] = value
        for name in required:
            if name not in out:
                self.error(node, f"{where}: missing required key '{name}'")
        return out

    def mapping_items(self, node: Node, where: str) -> list[tuple[ScalarNode, Node]] | None:
        """The (key, value) pairs of a mapping with free-form string keys."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{where}: expected a mapping, got {kind(node)}")
            return None
        out: list[tuple[ScalarNode, Node]] = []
        for key, value in pairs(node):
            if not isinstance(key, ScalarNode) or key.tag == NULL:
                self.error(key, f"{where}: keys must be strings")
                continue
            out.append((key, value))
        return out

    def items(self, node: Node, where: str) -> list[Node] | None:
        """The element nodes of a list."""
        if not isinstance(node, SequenceNode):
            self.error(node, f"{where}: expected a list, got {kind(node)}")
            return None
        return list(node.value)

    # -- scalars -----------------------------------------------------------------------------

    def string(
        self, node: Node, where: str, *, scalars: bool = False, braces: bool = False
    ) -> str | None:
        """A non-empty string; with ``scalars`` a number or boolean is taken as its text.

        No string read here is a template, so one holding ``{{`` is refused (an ``env.NAME`` in
        an endpoint would otherwise be sent as written), unless ``braces`` allows it (free text
        such as a description).
        """
        accepted = (STR, INT, FLOAT, BOOL) if scalars else (STR,)
        if not isinstance(node, ScalarNode) or node.tag not in accepted:
            self.error(node, f"{where}: expected a string, got {kind(node)}")
            return None
        if not node.value.strip():
            self.error(node, f"{where}: must not be empty")
            return None
        if not braces and "{{" in node.value:
            self.error(
                node,
                f"{where}: templates are not evaluated here; {{{{ … }}}} (env.NAME included) "
                "works in input, output, metadata/headers, an HTTP method's path and when",
            )
            return None
        return str(node.value)

    def integer(self, node: Node, where: str, minimum: int) -> int | None:
        """An integer at least ``minimum``."""
        if not isinstance(node, ScalarNode) or node.tag != INT:
            self.error(node, f"{where}: expected an integer ≥ {minimum}, got {kind(node)}")
            return None
        value = int(to_python(node))
        if value < minimum:
            self.error(node, f"{where}: must be at least {minimum}, got {value}")
            return None
        return value

    def number(self, node: Node, where: str, minimum: float) -> float | None:
        """A number (integer or float) at least ``minimum``."""
        if not isinstance(node, ScalarNode) or node.tag not in (INT, FLOAT):
            self.error(node, f"{where}: expected a number ≥ {minimum:g}, got {kind(node)}")
            return None
        value = float(to_python(node))
        if not value >= minimum:  # also refuses NaN
            self.error(node, f"{where}: must be at least {minimum:g}, got {node.value}")
            return None
        return value

    def boolean(self, node: Node, where: str) -> bool | None:
        """``true`` or ``false``."""
        if not isinstance(node, ScalarNode) or node.tag != BOOL:
            self.error(node, f"{where}: expected true or false, got {kind(node)}")
            return None
        return bool(to_python(node))

    def duration(self, node: Node, where: str, *, positive: bool = True) -> float | None:
        """A duration such as ``30s`` in seconds; zero is refused when ``positive``."""
        if not isinstance(node, ScalarNode) or node.tag not in (STR, INT, FLOAT):
            self.error(node, f"{where}: expected a duration such as 30s, got {kind(node)}")
            return None
        try:
            seconds = parse_duration(node.value)
        except DurationError as exc:
            self.error(node, f"{where}: {exc}")
            return None
        if positive and seconds <= 0:
            self.error(node, f"{where}: must be greater than zero")
            return None
        return seconds

    def choice(self, node: Node, where: str, choices: Sequence[str]) -> str | None:
        """One of ``choices``."""
        value = self.string(node, where)
        if value is None:
            return None
        if value not in choices:
            listed = ", ".join(choices)
            self.error(
                node,
                f"{where}: must be one of {listed}, got '{value}'{did_you_mean(value, choices)}",
            )
            return None
        return value

    def file_path(self, node: Node, where: str) -> str | None:
        """A file path, resolved against the workflow's directory; must exist when checked."""
        value = self.string(node, where)
        if value is None:
            return None
        resolved = self.resolve(value)
        if self.check_files and not os.path.isfile(resolved):
            self.error(node, f"{where}: file not found: {value}")
            return None
        return resolved

    def resolve(self, path: str) -> str:
        """``path`` made absolute against the workflow file's directory."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(path)))

    # -- templates ---------------------------------------------------------------------------

    def template(self, node: Node, scope: expr.Scope, where: str) -> expr.Template | None:
        """Compile a value with ``{{ }}`` templates anywhere inside it.

        A value without templates becomes one constant. Every syntax or scope problem is
        reported at its position; None means at least one was found.
        """
        result = self._template(node, scope, where)
        return None if result is None else result[0]

    def _template(
        self, node: Node, scope: expr.Scope, where: str
    ) -> tuple[expr.Template, Any] | None:
        if isinstance(node, ScalarNode):
            if node.tag != STR:
                value = to_python(node)
                return expr.constant(value), value
            compiled = self.compile_text(node, node.value, 0, scope, where)
            return None if compiled is None else (compiled, node.value)
        if isinstance(node, MappingNode):
            items: dict[str, tuple[expr.Template, Any]] = {}
            failed = False
            for key, value in pairs(node):
                if not isinstance(key, ScalarNode) or key.tag == NULL:
                    self.error(key, f"{where}: keys must be strings")
                    failed = True
                    continue
                child = self._template(value, scope, f"{where}.{key.value}")
                if child is None:
                    failed = True
                else:
                    items[str(key.value)] = child
            if failed:
                return None
            plain = {k: v for k, (_, v) in items.items()}
            if all(t.is_constant for t, _ in items.values()):
                return expr.constant(plain), plain
            return expr.mapping({k: t for k, (t, _) in items.items()}), plain
        if isinstance(node, SequenceNode):
            elements = [self._template(v, scope, f"{where}[{i}]") for i, v in enumerate(node.value)]
            if any(e is None for e in elements):
                return None
            done = [e for e in elements if e is not None]
            plain_list = [v for _, v in done]
            if all(t.is_constant for t, _ in done):
                return expr.constant(plain_list), plain_list
            return expr.sequence([t for t, _ in done]), plain_list
        self.error(node, f"{where}: unsupported YAML value")
        return None

    def compile_text(
        self, node: ScalarNode, text: str, offset: int, scope: expr.Scope, where: str
    ) -> expr.Template | None:
        """Compile ``text`` (found at ``offset`` in ``node``'s value) as a template string."""
        return self._compile(node, offset, where, lambda env: expr.compile_string(text, scope, env))

    def condition(self, node: Node, scope: expr.Scope, where: str) -> expr.Condition | None:
        """Compile a ``when`` condition (``{{ expr }}`` or a bare CEL expression)."""
        if not isinstance(node, ScalarNode) or node.tag not in (STR, BOOL):
            self.error(node, f"{where}: expected an expression string, got {kind(node)}")
            return None
        text = str(node.value)
        return self._compile(node, 0, where, lambda env: expr.compile_condition(text, scope, env))

    def _compile(
        self,
        node: ScalarNode,
        offset: int,
        where: str,
        build: Callable[[Mapping[str, str]], _T],
    ) -> _T | None:
        """Run ``build`` with the environment; report its problems at their positions.

        An unset variable is reported without the field path (``environment variable X is not
        set``): an error, or under the ``warn`` policy a warning, after which the template is
        built again with an empty value so that the rest of the file is still checked.
        """
        env: Mapping[str, str] = self.env.placeholder if self.env_policy == "skip" else self.env
        try:
            return build(env)
        except expr.TemplateSyntaxError as exc:
            failed = False
            for problem in exc.problems:
                pos = self.offset_position(node, offset + problem.offset)
                if not problem.unset_env:
                    self.error_at(pos, f"{where}: {problem.message}")
                    failed = True
                elif self.env_policy == "warn":
                    self.warning_at(pos, problem.message)
                else:
                    self.error_at(pos, problem.message)
                    failed = True
            if failed:
                return None
        try:
            return build(self.env.placeholder)
        except expr.TemplateSyntaxError:  # pragma: no cover - only unset variables failed
            return None
