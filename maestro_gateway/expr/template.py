"""Compiled templates and conditions (DESIGN §3 "Templates and expressions").

A string holding no ``{{`` is a constant. A string that is exactly one ``{{ expr }}`` renders to
the expression's value with its type; any other mix renders to text. Expressions are compiled
once, when the workflow loads, and evaluated per execution with an activation holding only the
names they read.

Constants and values taken straight from the context are returned as they are, not copied: the
rendered value may share structure with the definition or the context, and callers treat it as
immutable (copying on every render would cost more than the expression itself).

``env.NAME`` (DESIGN §9) is bound when the template is compiled: the caller passes the values
of the environment, each expression keeps only the variables it names literally, and evaluation
hands CEL that fixed map. An execution's context cannot reach the environment.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from maestro_gateway.errors import EvaluationError
from maestro_gateway.expr.compiler import ENV, Compiled, Scope, compile_expression
from maestro_gateway.expr.scan import Segment, split_template
from maestro_gateway.expr.values import (
    TooLarge,
    from_cel,
    plain,
    reason,
    to_text,
    type_name,
    walk_path,
)

_PATH = re.compile(r"\s*\.?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*")


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """One problem in a template string.

    Attributes:
        offset: 0-based character offset in the source string where the problem is.
        message: what is wrong, e.g. ``undeclared reference to 'nosuch'``.
        unset_env: the variable's name when the problem is an ``env.NAME`` that is not set
            (callers may treat it as a warning and compile again with a placeholder).
    """

    offset: int
    message: str
    unset_env: str = ""


class TemplateSyntaxError(Exception):
    """A template string does not compile; ``problems`` lists every problem, in order."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"at {p.offset}: {p.message}" for p in problems))


class _Expression:
    """One compiled expression; evaluation returns plain Python or raises EvaluationError."""

    __slots__ = ("_compiled", "_env", "_inputs", "_path", "env_names", "references", "source")

    def __init__(self, compiled: Compiled, env: dict[str, str]) -> None:
        """``env`` holds the value of each ``env.NAME`` of ``compiled`` (kept, not copied)."""
        self._compiled = compiled
        self.source = compiled.source.strip()
        self.references = compiled.references
        self._env = env or None
        self.env_names = frozenset(name for name, _ in compiled.env)
        self._inputs = tuple(
            (name, compiled.selected.get(name)) for name in sorted(compiled.references)
        )
        # A bare path such as `.reservation.id` is answered by a dict walk: same result, no CEL
        # conversion of the (possibly large) value in and out.
        m = _PATH.fullmatch(compiled.source)
        self._path: tuple[str, ...] | None = None
        if m and m.group(1).split(".")[0] in compiled.references:
            # CEL rejects keywords as field names at compile time, so any path here is plain.
            self._path = tuple(m.group(1).split("."))

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        if self._path is not None:
            try:
                return plain(walk_path(self._path, context))
            except LookupError as exc:
                raise EvaluationError(self.source, str(exc)) from None
        data: dict[str, Any] = {}
        for name, fields in self._inputs:
            if name in context:
                value = context[name]
                if fields is not None and isinstance(value, dict):
                    value = {f: value[f] for f in fields if f in value}
                data[name] = value
        if self._env is not None:
            data[ENV] = self._env
        try:
            value = self._compiled.program.eval(data=data)
            if value.type().name() != "ERROR":
                return from_cel(value)
            message = str(value.value())
        except TooLarge as exc:
            raise EvaluationError(self.source, str(exc)) from None
        except (RuntimeError, TypeError, ValueError) as exc:
            message = str(exc)
        raise EvaluationError(self.source, reason(message, self._compiled.tokens, context))


class Template(ABC):
    """A compiled, immutable template, safe to share across executions.

    Attributes:
        is_constant: true when there is nothing to evaluate (render returns the literal).
        references: top-level names of the context the template reads (leading dots stripped;
            ``env`` is not one of them: its values are part of the template).
        expressions: the source text of each ``{{ … }}`` inside, in order.
        env_names: the environment variables the template reads (``env.NAME``).
    """

    __slots__ = ("env_names", "expressions", "is_constant", "references")

    def __init__(
        self,
        references: frozenset[str],
        expressions: tuple[str, ...],
        env_names: frozenset[str] = frozenset(),
    ) -> None:
        self.references = references
        self.expressions = expressions
        self.env_names = env_names
        self.is_constant = not expressions

    @abstractmethod
    def render(self, context: Mapping[str, Any]) -> Any:
        """Evaluate the template in ``context``.

        A string that is exactly one template keeps the expression's type; text mixed with
        templates gives text; containers render recursively.

        Raises:
            EvaluationError: an expression failed (missing field, type mismatch …).
        """

    def render_text(self, context: Mapping[str, Any]) -> str:
        """Render, then convert the value with ``to_text`` (for headers and paths)."""
        return to_text(self.render(context))


class _Constant(Template):
    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        super().__init__(frozenset(), ())
        self._value = value

    def render(self, context: Mapping[str, Any]) -> Any:
        return self._value

    def __repr__(self) -> str:
        return f"constant({self._value!r})"


class _Single(Template):
    __slots__ = ("_expr",)

    def __init__(self, expr: _Expression) -> None:
        super().__init__(expr.references, (expr.source,), expr.env_names)
        self._expr = expr

    def render(self, context: Mapping[str, Any]) -> Any:
        return self._expr.evaluate(context)

    def __repr__(self) -> str:
        return f"template('{{{{ {self._expr.source} }}}}')"


class _Interpolated(Template):
    __slots__ = ("_parts",)

    def __init__(self, parts: list[str | _Expression]) -> None:
        exprs = [p for p in parts if isinstance(p, _Expression)]
        super().__init__(
            frozenset().union(*(e.references for e in exprs)),
            tuple(e.source for e in exprs),
            frozenset().union(*(e.env_names for e in exprs)),
        )
        self._parts = tuple(parts)

    def render(self, context: Mapping[str, Any]) -> str:
        return "".join(
            p if isinstance(p, str) else to_text(p.evaluate(context)) for p in self._parts
        )


class _Mapping(Template):
    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Template]) -> None:
        super().__init__(
            frozenset().union(*(t.references for t in items.values())),
            tuple(e for t in items.values() for e in t.expressions),
            frozenset().union(*(t.env_names for t in items.values())),
        )
        self._items = tuple(items.items())

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, template in self._items:
            try:
                out[key] = template.render(context)
            except EvaluationError as exc:
                raise exc.within(key) from None
        return out


class _Sequence(Template):
    __slots__ = ("_items",)

    def __init__(self, items: Sequence[Template]) -> None:
        super().__init__(
            frozenset().union(*(t.references for t in items)),
            tuple(e for t in items for e in t.expressions),
            frozenset().union(*(t.env_names for t in items)),
        )
        self._items = tuple(items)

    def render(self, context: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for index, template in enumerate(self._items):
            try:
                out.append(template.render(context))
            except EvaluationError as exc:
                raise exc.within(f"[{index}]") from None
        return out


class Condition:
    """A compiled condition (a step's ``when``) that must yield a bool.

    Attributes:
        expression: the CEL source.
        references: top-level names of the context the condition reads.
        env_names: the environment variables it reads (``env.NAME``).
    """

    __slots__ = ("_expr", "env_names", "expression", "references")

    def __init__(self, expr: _Expression) -> None:
        self._expr = expr
        self.expression = expr.source
        self.references = expr.references
        self.env_names = expr.env_names

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """Evaluate in ``context``.

        Raises:
            EvaluationError: the expression failed or did not yield a bool.
        """
        value = self._expr.evaluate(context)
        if not isinstance(value, bool):
            raise EvaluationError(
                self.expression, f"condition must yield a bool, got {type_name(value)}"
            )
        return value

    def __repr__(self) -> str:
        return f"Condition({self.expression!r})"


def _compile_segment(
    segment: Segment,
    scope: Scope,
    problems: list[TemplateProblem],
    env: Mapping[str, str] | None,
) -> _Expression | None:
    compiled, found = compile_expression(segment.text, scope)
    problems.extend(TemplateProblem(segment.start + at, message) for at, message in found)
    if compiled is None:
        return None
    values: dict[str, str] = {}
    unset = False
    for name, at in compiled.env:
        value = None if env is None else env.get(name)
        if value is None:
            problems.append(
                TemplateProblem(
                    segment.start + at, f"environment variable {name} is not set", unset_env=name
                )
            )
            unset = True
        else:
            values[name] = value
    return None if unset else _Expression(compiled, values)


def compile_string(text: str, scope: Scope, env: Mapping[str, str] | None = None) -> Template:
    """Compile a string that may hold ``{{ … }}`` templates.

    Args:
        text: the definition string.
        scope: the names its expressions may read.
        env: the environment ``env.NAME`` reads (only the names used are kept); None reads none.

    Raises:
        TemplateSyntaxError: with every problem of the string, in order of offset.
    """
    if "{{" not in text:
        return _Constant(text)
    segments, found = split_template(text)
    problems = [TemplateProblem(at, message) for at, message in found]
    parts: list[str | _Expression] = []
    for segment in segments:
        if not segment.is_expr:
            parts.append(segment.text)
        elif segment.text.strip():
            expr = _compile_segment(segment, scope, problems, env)
            if expr is not None:
                parts.append(expr)
    if problems:
        problems.sort(key=lambda p: p.offset)
        raise TemplateSyntaxError(problems)
    if len(parts) == 1 and isinstance(parts[0], _Expression):
        return _Single(parts[0])
    return _Interpolated(parts)


def compile_condition(text: str, scope: Scope, env: Mapping[str, str] | None = None) -> Condition:
    """Compile a condition: ``"{{ expr }}"`` or a bare CEL expression.

    ``env`` is as for :func:`compile_string`.

    Raises:
        TemplateSyntaxError: the expression does not compile, mixes text with templates, or is
            known at load time not to yield a bool.
    """
    if "{{" in text:
        segments, found = split_template(text)
        problems = [TemplateProblem(at, message) for at, message in found]
        exprs = [s for s in segments if s.is_expr]
        text_around = [s for s in segments if not s.is_expr and s.text.strip()]
        if not problems and (len(exprs) != 1 or text_around):
            problems.append(TemplateProblem(0, "a condition must be a single expression"))
        if problems:
            raise TemplateSyntaxError(problems)
        segment = exprs[0]
    else:
        segment = Segment(text, 0, True, 0)
    problems = []
    if not segment.text.strip():
        problems.append(TemplateProblem(segment.open_offset, "empty condition"))
        raise TemplateSyntaxError(problems)
    expr = _compile_segment(segment, scope, problems, env)
    if expr is None:
        raise TemplateSyntaxError(problems)
    result = expr._compiled.result_type
    if result not in ("BOOL", "DYN"):
        start = segment.start + len(segment.text) - len(segment.text.lstrip())
        got = result.split("<")[0].lower()
        raise TemplateSyntaxError(
            [TemplateProblem(start, f"condition must yield a bool, got {got}")]
        )
    return Condition(expr)


def constant(value: Any) -> Template:
    """A template that renders ``value`` itself (a literal dict, list or scalar)."""
    return _Constant(value)


def mapping(items: Mapping[str, Template]) -> Template:
    """A dict of templates; renders each value. All-constant items give a constant."""
    if all(t.is_constant for t in items.values()):
        return _Constant({key: t.render({}) for key, t in items.items()})
    return _Mapping(items)


def sequence(items: Sequence[Template]) -> Template:
    """A list of templates; renders each item. All-constant items give a constant."""
    if all(t.is_constant for t in items):
        return _Constant([t.render({}) for t in items])
    return _Sequence(items)
