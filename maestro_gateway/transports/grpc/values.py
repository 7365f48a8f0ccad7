"""Plain values ⇄ protobuf messages, by the value rules of DESIGN §3.

Requests go through ``json_format.ParseDict`` (proto3 JSON: proto and lowerCamel names, int64 as
number or string, enums by name or number, integral floats for integer fields); a value that
does not fit becomes INVALID_ARGUMENT naming the field path, before anything is sent.

Responses are the hot path. ``to_plain`` walks the message with a converter compiled once per
message type from its descriptor: every field present (an unset message, ``optional`` or oneof
member is ``None``, so that a field reference checked against the schema always finds its key),
keys are proto field names, 64-bit integers stay Python ints, enums are names, bytes are base64,
map keys are strings, and well-known types (Timestamp, Duration, wrappers, Struct, Value,
ListValue, FieldMask, Any, Empty) take their proto3 JSON form.
"""

from __future__ import annotations

import base64
import operator
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError

try:
    from google.protobuf.internal.type_checkers import ToShortestFloat as _shortest_float
except ImportError:  # pragma: no cover - internal helper; keep a portable fallback

    def _shortest_float(value: float) -> float:
        return float(f"{value:.9g}")


Converter = Callable[[Any], Any]

_WRAPPERS = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_STRING_WKT = frozenset(f"google.protobuf.{n}" for n in ("Timestamp", "Duration", "FieldMask"))
_JSON_WKT = frozenset(f"google.protobuf.{n}" for n in ("Struct", "Value", "ListValue", "Empty"))

_converters: dict[Descriptor, Converter] = {}


def to_plain(message: Message) -> Any:
    """Convert a response message to a plain value (a dict for ordinary messages)."""
    return message_converter(message.DESCRIPTOR)(message)


def message_converter(descriptor: Descriptor) -> Converter:
    """Return the (cached) converter of one message type."""
    found = _converters.get(descriptor)
    if found is None:
        found = _converters[descriptor] = _compile_message(descriptor)
    return found


def _wkt_string(message: Any) -> str:
    return str(message.ToJsonString())


def _json_wkt(message: Any) -> Any:
    return json_format.MessageToDict(message)


def _float32(value: float) -> float:
    return float(_shortest_float(value))


def _any_to_plain(message: Any) -> Any:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        descriptor_pool=message.DESCRIPTOR.file.pool,
    )


def _compile_message(descriptor: Descriptor) -> Converter:
    name = descriptor.full_name
    if name in _WRAPPERS:
        inner = _scalar(descriptor.fields_by_name["value"])
        return (lambda m: inner(m.value)) if inner else operator.attrgetter("value")
    if name in _STRING_WKT:
        return _wkt_string
    if name in _JSON_WKT:
        return _json_wkt
    if name == "google.protobuf.Any":
        return _any_to_plain
    plan: tuple[tuple[str, Converter], ...] = tuple((f.name, _field(f)) for f in descriptor.fields)

    def convert(message: Any) -> dict[str, Any]:
        return {name: get(message) for name, get in plan}

    return convert


def _scalar(field: FieldDescriptor) -> Converter | None:
    """Return the conversion of one scalar value, or None when it is the identity."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda n: names.get(n, n)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda b: base64.b64encode(b).decode("ascii")
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return _float32
    return None


def _map_key(field: FieldDescriptor) -> Converter:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return lambda k: "true" if k else "false"
    if field.type == FieldDescriptor.TYPE_STRING:
        return lambda k: k
    return str


def _field(field: FieldDescriptor) -> Converter:
    name = field.name
    get = operator.attrgetter(name)
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        key = _map_key(message_type.fields_by_name["key"])
        value_field = message_type.fields_by_name["value"]
        if value_field.message_type is not None:
            sub = _lazy(value_field.message_type)
            return lambda m: {key(k): sub(v) for k, v in get(m).items()}
        value_scalar = _scalar(value_field)
        if value_scalar is None:
            return lambda m: {key(k): v for k, v in get(m).items()}
        convert_value: Converter = value_scalar
        return lambda m: {key(k): convert_value(v) for k, v in get(m).items()}
    if message_type is not None:
        sub = _lazy(message_type)
        if _is_repeated(field):
            return lambda m: [sub(v) for v in get(m)]
        return lambda m: sub(get(m)) if m.HasField(name) else None
    scalar = _scalar(field)
    if _is_repeated(field):
        if scalar is None:
            return lambda m: list(get(m))
        return lambda m: [scalar(v) for v in get(m)]
    if field.has_presence:
        if scalar is None:
            return lambda m: get(m) if m.HasField(name) else None
        return lambda m: scalar(get(m)) if m.HasField(name) else None
    if scalar is None:
        return get
    return lambda m: scalar(get(m))


def _lazy(descriptor: Descriptor) -> Converter:
    """Return a converter compiled on first use: a message type may contain itself."""
    cache: list[Converter] = []

    def convert(value: Any) -> Any:
        if not cache:
            cache.append(message_converter(descriptor))
        return cache[0](value)

    return convert


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


_AT = re.compile(r' at "?([\w.\[\]]+?)"?\.*$')
_NO_FIELD = re.compile(r'has no field named "([^"]+)"')
_PARSE_PREFIX = re.compile(r"Failed to parse (\w+) field: ")


def _describe_parse_error(text: str) -> str:
    """Turn json_format's message into one naming the field path."""
    first = text.splitlines()[0].strip() if text else ""
    prefixes: list[str] = []
    while match := _PARSE_PREFIX.match(first):
        prefixes.append(match.group(1))
        first = first[match.end() :]
    at = _AT.search(first)
    if at:
        first = first[: at.start()]
        path = at.group(1).partition(".")[2] or ".".join(prefixes)
    else:
        path = ".".join(prefixes)
    unknown = _NO_FIELD.search(first)
    if unknown:
        field = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return f"unknown field {field!r}"
    reason = first.rstrip(". ")
    return f"invalid value for field {path!r}: {reason}" if path else reason


def build_request(message_class: type[Message], value: Any, *, what: str) -> Message:
    """Build one request message from a plain value.

    Args:
        message_class: the request message class.
        value: a dict (proto3 JSON mapping) or None for the empty message.
        what: names the call in error messages (``pkg.Svc/Method``).

    Raises:
        CallError: INVALID_ARGUMENT (permanent), naming the field path, when the value does
            not fit the message.
    """
    message = message_class()
    if value is None:
        return message
    if not isinstance(value, dict):
        raise CallError(
            Code.INVALID_ARGUMENT,
            f"request to {what} must be an object, got {type(value).__name__}",
            permanent=True,
        )
    try:
        json_format.ParseDict(value, message, descriptor_pool=message.DESCRIPTOR.file.pool)
    except json_format.ParseError as exc:
        raise CallError(
            Code.INVALID_ARGUMENT,
            f"request to {what}: {_describe_parse_error(str(exc))}",
            permanent=True,
        ) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise CallError(Code.INVALID_ARGUMENT, f"request to {what}: {exc}", permanent=True) from exc
    return message
