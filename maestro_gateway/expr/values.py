"""Values leaving CEL as plain Python, values rendered as text, and CEL errors made readable.

cel-expr-python 0.1.3 drops a reference to ``None`` each time ``Value.value()`` or
``Value.plain_value()`` converts a CEL ``null`` (checked: the interpreter aborts with
"deallocating None" after a few thousand null results). So results are converted here by walking
the ``Value`` tree and never asking the binding to convert a null.

The conversion is bounded (:class:`RenderBudget`): CEL bounds an evaluation to fewer than
``CEL_ITERATIONS`` comprehension iterations, but not what they build, and a small input can make
an enormous value (``input.xs.map(x, input.xs)`` over 5,000 numbers is 25 million of them,
about 45 s and gigabytes to convert). A result of more than ``MAX_RENDERED_VALUES`` values or
``MAX_RENDERED_CHARS`` characters of text is refused (:class:`TooLarge`) once the conversion
reaches the limit, after at most about 2 s of work.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from maestro_gateway.expr.scan import Token, paths

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

CEL_ITERATIONS = 10_000
"""Comprehension iterations (``map``, ``filter``, ``all``, ``exists`` …, nested ones counted
together) at which CEL stops one evaluation: its runtime's fixed budget, not configurable through
cel-expr-python 0.1.3."""
MAX_RENDERED_VALUES = 1_000_000
"""Most values (scalars, lists and maps, map keys included) one expression may yield."""
MAX_RENDERED_CHARS = 16 * 1024 * 1024
"""Most characters of text (strings and map keys) one expression may yield: the gateway's
largest message, which a bigger value could not cross anyway."""


class TooLarge(Exception):
    """A CEL result is over one of the :class:`RenderBudget` limits; the message says which."""


class RenderBudget:
    """What is left of the limits (by default the module's) while converting one result."""

    __slots__ = ("chars", "max_chars", "max_values", "values")

    def __init__(self, values: int | None = None, chars: int | None = None) -> None:
        self.max_values = self.values = MAX_RENDERED_VALUES if values is None else values
        self.max_chars = self.chars = MAX_RENDERED_CHARS if chars is None else chars

    def spend(self, values: int, chars: int = 0) -> None:
        """Count ``values`` more values and ``chars`` more characters.

        Raises:
            TooLarge: either limit is crossed.
        """
        self.values -= values
        self.chars -= chars
        if self.values < 0:
            raise TooLarge(
                f"the result has more than {self.max_values} values (max_rendered_values)"
            )
        if self.chars < 0:
            raise TooLarge(
                f"the result holds more than {self.max_chars} characters of text "
                "(max_rendered_chars)"
            )


def _fraction(nanos: int) -> str:
    """Proto3 JSON fractional seconds: none, or 3, 6 or 9 digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def timestamp_text(value: dt.datetime) -> str:
    """A timestamp as in proto3 JSON (RFC 3339 in UTC, ``Z`` suffix)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(value.microsecond * 1000) + "Z"


def duration_text(value: dt.timedelta) -> str:
    """A duration as in proto3 JSON (seconds with a ``s`` suffix, e.g. ``1.500s``)."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    seconds, rest = divmod(abs(micros), 1_000_000)
    return f"{sign}{seconds}{_fraction(rest * 1000)}s"


def plain(value: Any) -> Any:
    """Map values that have no JSON form (bytes, timestamps, durations) to their proto3 JSON text."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime):
        return timestamp_text(value)
    if isinstance(value, dt.timedelta):
        return duration_text(value)
    return value


def from_cel(value: Any, budget: RenderBudget | None = None) -> Any:
    """Convert a ``cel.Value`` (not an error) to plain Python, without converting nulls natively.

    Raises:
        TooLarge: the value is over the limits of ``budget`` (default: a fresh one).
    """
    return _from_cel(value, budget or RenderBudget())


def _from_cel(value: Any, budget: RenderBudget) -> Any:
    name: str = value.type().name()
    if name == "NULL":
        budget.spend(1)
        return None
    if name.startswith("MAP"):
        items = value.value()
        budget.spend(1 + len(items))
        out: dict[Any, Any] = {}
        for k, v in items.items():
            key = plain(k)
            if isinstance(key, str):
                budget.spend(0, len(key))
            out[key] = _from_cel(v, budget)
        return out
    if name.startswith("LIST"):
        elements = value.value()
        budget.spend(1)
        return [_from_cel(v, budget) for v in elements]
    if name == "TYPE":
        budget.spend(1)
        return str(value.value().name()).split("<")[0].lower()
    converted = plain(value.value())
    budget.spend(1, len(converted) if isinstance(converted, str) else 0)
    return converted


def _json_default(value: Any) -> Any:
    converted = plain(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return converted


def to_text(value: Any) -> str:
    """Render a value as text, as templates do inside a string.

    Strings are themselves; integral floats are integers (``2.0`` → ``"2"``); booleans, null
    and numbers are JSON (``true``, ``null``, ``2.5``); dicts and lists are compact JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return json.dumps(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    converted = plain(value)
    return converted if isinstance(converted, str) else str(value)


def type_name(value: Any) -> str:
    """The CEL-style name of a plain value's type (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, Sequence):
        return "list"
    return type(value).__name__


def walk_path(names: Sequence[str], context: Mapping[str, Any]) -> Any:
    """Follow ``names`` through nested mappings, raising ``LookupError`` with a readable reason."""
    root = names[0]
    if root not in context:
        raise LookupError(f"'{root}' has no value in this execution")
    current = context[root]
    for depth, name in enumerate(names[1:], start=1):
        where = ".".join(names[:depth])
        if isinstance(current, Mapping):
            if name not in current:
                raise LookupError(f"no field '{name}' in '{where}'")
            current = current[name]
        elif current is None:
            raise LookupError(f"'{where}' is null, it has no field '{name}'")
        else:
            raise LookupError(f"'{where}' is a {type_name(current)}, it has no field '{name}'")
    return current


_STATUS = re.compile(r"^[A-Z_]+: ")
_CODE_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]$")
_KEY_NOT_FOUND = re.compile(r'Key not found in map : "(.*)"')
_NO_VALUE = re.compile(r'No value with name "(.*)" found')
_OVERLOAD = re.compile(r"No matching overloads found : (\S+?)\((.*)\)")
_INDEX = re.compile(r"Index error: index=(-?\d+) size=(\d+)")
_NON_CEL = re.compile(r"Non-CEL value type for '(.*?)(?: -> .*)?': (\w+)\.?$")
_OPERATORS = {
    "_+_": "+",
    "_-_": "-",
    "_*_": "*",
    "_/_": "/",
    "_%_": "%",
    "_<_": "<",
    "_<=_": "<=",
    "_>_": ">",
    "_>=_": ">=",
    "_==_": "==",
    "_!=_": "!=",
    "_[_]": "[]",
    "@in": "in",
    "-_": "unary -",
    "!_": "!",
}
_CEL_TYPES = {"int64": "int", "uint64": "uint", "double": "double", "string": "string"}


def _missing_key_reason(
    key: str, tokens: list[Token], context: Mapping[str, Any], fallback: str
) -> str:
    """Name the object missing ``key`` by re-walking the selections in the expression."""
    for names, _ in paths(tokens):
        for depth in range(1, len(names)):
            if names[depth] != key:
                continue
            try:
                walk_path(names[: depth + 1], context)
            except LookupError as exc:
                return str(exc)
    return fallback


def _select_reason(tokens: list[Token], context: Mapping[str, Any]) -> str:
    for names, _ in paths(tokens):
        try:
            walk_path(names, context)
        except LookupError as exc:
            return str(exc)
    return "selecting a field of a value that is not an object"


def reason(message: str, tokens: list[Token], context: Mapping[str, Any]) -> str:
    """Turn a CEL evaluation error message into a short reason naming what was wrong."""
    text = _STATUS.sub("", message.strip())
    if m := _KEY_NOT_FOUND.search(text):
        return _missing_key_reason(m.group(1), tokens, context, f"no field '{m.group(1)}'")
    if m := _NO_VALUE.search(text):
        return f"'{m.group(1)}' has no value in this execution"
    if m := _OVERLOAD.search(text):
        op = _OPERATORS.get(m.group(1), m.group(1))
        args = ", ".join(_CEL_TYPES.get(a.strip(), a.strip()) for a in m.group(2).split(","))
        if op == "<jump_condition>":
            return "the condition of '? :' is not a bool"
        hint = " (convert with int() or double())" if "double" in args and "int" in args else ""
        return f"type mismatch: no '{op}' for ({args}){hint}"
    if m := _INDEX.search(text):
        return f"index {m.group(1)} out of range (size {m.group(2)})"
    if m := _NON_CEL.search(text):
        return f"unsupported value of type {m.group(2)} at {m.group(1)}"
    if "SELECT to non-message" in text:
        return _select_reason(tokens, context)
    if "divide by zero" in text or "modulus by zero" in text:
        return "division by zero"
    if "Iteration budget exceeded" in text:
        return (
            f"the expression ran {CEL_ITERATIONS} comprehension iterations (map, filter, all, "
            "exists …, nested ones counted together), CEL's budget for one evaluation"
        )
    text = _CODE_SUFFIX.sub("", text)
    return text[:1].lower() + text[1:]
