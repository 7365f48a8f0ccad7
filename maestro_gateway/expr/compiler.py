"""Compiling one CEL expression against a scope, with every problem mapped to an offset.

CEL environments are cached per distinct set of declared names: the steps of a workflow share a
handful of scopes, and building an environment costs more than compiling a small expression.

``env`` (the gateway's environment, DESIGN §9) is declared as a ``map(string, string)`` so the
type checker knows ``env.NAME`` is a string, and every use of it is checked here to be a literal
``env.NAME``: the expression is compiled as written (columns stay exact) and its values are bound
at load by the template (``maestro_gateway.expr.template``), never looked up per execution.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel

from maestro_gateway.expr.scan import Token, member_after, root_indexes, tokenize


@dataclass(frozen=True, slots=True)
class Scope:
    """What an expression may read at one point of a workflow.

    Attributes:
        names: top-level variables visible here: ``input``, ``workflow``, ``steps``, the output
            names of steps that can have run, and ``error`` in compensations.
        step_ids: ids valid after ``steps.`` (steps that can have run before this point).
        hints: name → explanation for a name that exists but is not visible here; used for
            undeclared top-level names and for unknown ``steps.<id>``.
    """

    names: AbstractSet[str]
    step_ids: AbstractSet[str]
    hints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A checked CEL program with what evaluation needs to know about its source."""

    source: str
    program: Any
    tokens: list[Token]
    references: frozenset[str]
    result_type: str
    selected: Mapping[str, frozenset[str]]
    env: tuple[tuple[str, int], ...] = ()
    """Each ``env.NAME`` read, as (NAME, offset of ``env`` in ``source``), in order."""


ENV = "env"
"""The name under which expressions read the gateway's environment: only as ``env.NAME``."""

ENV_RULE = (
    "only a literal env.NAME can read the environment (an execution must never choose "
    "which variable is read)"
)


_ENV_LOCK = threading.Lock()
_ENVS: dict[frozenset[str], Any] = {}
_MAX_ENVS = 1024
_ERROR_LINE = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_UNDECLARED = re.compile(r"undeclared reference to '([^']*)'")
_EXPECTING = re.compile(r" expecting (\{[^}]*\}|\S+)$")
_STATUS = re.compile(r"^[A-Z_]+: |\s*\[[A-Z_]+\]$")
# CEL's own bounds on an expression, in words.
_LIMITS = (
    (
        re.compile(r"(?:Exceeded max recursion depth of|recursion limit exceeded\. limit:) (\d+)"),
        "the expression nests deeper than {0} levels (CEL's limit)",
    ),
    (
        re.compile(r"codepoint limit\. input size: (\d+), limit: (\d+)"),
        "the expression is {0} characters long, over CEL's limit of {1}",
    ),
)


def _env(names: frozenset[str]) -> Any:
    with _ENV_LOCK:
        env = _ENVS.get(names)
        if env is None:
            if len(_ENVS) >= _MAX_ENVS:
                _ENVS.clear()
            variables = dict.fromkeys(sorted(names), cel.Type.DYN)
            if ENV in variables:
                variables[ENV] = cel.Type.Map(cel.Type.STRING, cel.Type.STRING)
            env = cel.NewEnv(variables=variables)
            _ENVS[names] = env
        return env


def _compile(source: str, declared: frozenset[str], names: AbstractSet[str]) -> Any:
    """Compile ``source`` declaring the names of ``declared``.

    When CEL reports an undeclared reference to a name of ``names`` (which the scanner, not a
    CEL parser, missed), it is declared too and the expression compiled again, so a name in
    scope is never reported undeclared.
    """
    while True:
        try:
            return _env(declared).compile(source)
        except RuntimeError as exc:
            missed = {
                root
                for m in _UNDECLARED.finditer(str(exc))
                if (root := m.group(1).lstrip(".").split(".")[0]) in names
            } - declared
            if not missed:
                raise
            declared |= missed


def _offset_in(source: str, line: int, column: int) -> int:
    """0-based offset in ``source`` of CEL's 1-based line and (code point) column."""
    start = 0
    for _ in range(line - 1):
        newline = source.find("\n", start)
        if newline < 0:
            break
        start = newline + 1
    return min(start + max(column - 1, 0), len(source))


def _clean(message: str) -> str:
    message = _STATUS.sub("", message.replace(" (in container '')", ""))
    for pattern, words in _LIMITS:
        if m := pattern.search(message):
            return words.format(*m.groups())
    if message.startswith("Syntax error: "):
        message = "syntax error: " + message[len("Syntax error: ") :]
        message = message.replace("'<EOF>'", "end of expression")
        message = message.replace("mismatched input ", "unexpected ")
        message = message.replace("extraneous input ", "unexpected ")
        expecting = _EXPECTING.search(message)
        if expecting and expecting.group(1).count(",") > 3:
            message = message[: expecting.start()]
    return message


def _undeclared(
    name: str, at: int, tokens: list[Token], roots: list[int], scope: Scope
) -> tuple[int, str]:
    """Point an undeclared reference at its root identifier, with the hint when there is one."""
    root = name.lstrip(".").split(".")[0]
    offset = at
    for k in roots:
        if tokens[k].text == root and tokens[k].start <= at:
            offset = tokens[k].start
    if root in scope.hints:
        return offset, scope.hints[root]
    return offset, f"undeclared reference to '{root}'"


def compile_expression(source: str, scope: Scope) -> tuple[Compiled | None, list[tuple[int, str]]]:
    """Compile ``source`` in ``scope``.

    Returns:
        The compiled expression (None when there are problems) and every problem as
        ``(offset in source, message)``, ordered by offset.
    """
    if not source.isascii():
        try:
            source.encode("utf-8")
        except UnicodeEncodeError as exc:  # CEL takes UTF-8: a lone surrogate cannot be passed
            return None, [(exc.start, "the expression holds a lone surrogate, not a character")]
    tokens = tokenize(source)
    roots = root_indexes(tokens)
    problems: list[tuple[int, str]] = []
    program: Any = None
    # Only the names the expression mentions are declared: an environment costs time in the
    # number of its variables, and a step late in a long workflow sees thousands of names
    # (declaring them all made loading quadratic: 5000 steps took 100 s).
    mentioned = {tokens[k].text for k in roots}
    declared = frozenset(name for name in mentioned if name in scope.names)
    try:
        program = _compile(source, declared, scope.names)
    except RuntimeError as exc:
        found = False
        for line in str(exc).splitlines():
            m = _ERROR_LINE.search(line)
            if m is None:
                continue
            found = True
            at = _offset_in(source, int(m.group(1)), int(m.group(2)))
            message = m.group(3)
            undeclared = _UNDECLARED.search(message)
            if undeclared:
                problems.append(_undeclared(undeclared.group(1), at, tokens, roots, scope))
            else:
                problems.append((at, _clean(message)))
        if not found:
            problems.append((0, _clean(str(exc))))
    if "steps" in scope.names:
        for k in roots:
            if tokens[k].text != "steps":
                continue
            member = member_after(tokens, k)
            if member is not None and member[0] not in scope.step_ids:
                step_id, at = member
                problems.append((at, scope.hints.get(step_id, f"unknown step '{step_id}'")))
    env: list[tuple[str, int]] = []
    if ENV in scope.names:
        env, misused = env_references(tokens, roots)
        problems.extend(misused)
    if problems:
        return None, sorted(set(problems))
    references = declared - {ENV}
    result_type = str(program.return_type().name())
    selected = _selected(tokens, roots)
    selected.pop(ENV, None)
    return (
        Compiled(source, program, tokens, references, result_type, selected, tuple(env)),
        [],
    )


def env_references(
    tokens: list[Token], roots: list[int]
) -> tuple[list[tuple[str, int]], list[tuple[int, str]]]:
    """Every ``env.NAME`` among the references, and every other use of ``env`` as a problem.

    Allowed: ``env.NAME`` and ``.env.NAME`` with NAME an identifier, anywhere an expression may
    stand. Refused: ``env`` alone, ``env[…]``, a method called on ``env`` and ``has(env.NAME)``
    (a variable is read at load, and an unset one is a load error: there is nothing to test).

    Returns:
        (NAME, offset of ``env``) for each literal read, and (offset, message) for each misuse.
    """
    found: list[tuple[str, int]] = []
    problems: list[tuple[int, str]] = []
    for k in roots:
        tok = tokens[k]
        if tok.text != ENV:
            continue
        literal = (
            k + 2 < len(tokens)
            and tokens[k + 1].kind == "."
            and tokens[k + 2].kind == "ident"
            and not (k + 3 < len(tokens) and tokens[k + 3].kind == "(")
        )
        if not literal:
            problems.append((tok.start, f"dynamic use of env: {ENV_RULE}"))
            continue
        before = k - 1 if k > 0 and tokens[k - 1].kind == "." else k
        if (
            before >= 2
            and tokens[before - 1].kind == "("
            and tokens[before - 2].kind == "ident"
            and tokens[before - 2].text == "has"
        ):
            problems.append(
                (
                    tok.start,
                    "has() cannot test an environment variable: env.NAME is read when the "
                    "workflow loads, and one that is not set is a load error",
                )
            )
            continue
        found.append((tokens[k + 2].text, tok.start))
    return found, problems


def _selected(tokens: list[Token], roots: list[int]) -> dict[str, frozenset[str]]:
    """For each name only ever used as ``name.field`` (or ``name["field"]``), those fields.

    Evaluation then hands CEL a map with just these fields: converting a large step output
    into CEL costs far more than the expression when it reads one field of it.
    """
    fields: dict[str, set[str]] = {}
    whole: set[str] = set()
    for k in roots:
        name = tokens[k].text
        member = member_after(tokens, k)
        if member is None:
            whole.add(name)
        else:
            fields.setdefault(name, set()).add(member[0])
    return {name: frozenset(f) for name, f in fields.items() if name not in whole}
