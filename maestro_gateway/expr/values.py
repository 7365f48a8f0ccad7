"""Values leaving CEL as plain Python, values rendered as text, and CEL errors made readable.

cel-expr-python 0.1.3 drops a reference to ``None`` each time ``Value.value()`` or
``Value.plain_value()`` converts a CEL ``null`` (checked: the interpreter aborts with
"deallocating None" after a few thousand null results). So results are converted here by walking
the ``Value`` tree and never asking the binding to convert a null.
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


def from_cel(value: Any) -> Any:
    """Convert a ``cel.Value`` (not an error) to plain Python, without converting nulls natively."""
    name: str = value.type().name()
    if name == "NULL":
        return None
    if name.startswith("MAP"):
        return {plain(k): from_cel(v) for k, v in value.value().items()}
    if name.startswith("LIST"):
        return [from_cel(v) for v in value.value()]
    if name == "TYPE":
        return str(value.value().name()).split("<")[0].lower()
    return plain(value.value())


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
    return text[:1].lower() + text[1:]
