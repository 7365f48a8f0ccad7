"""Static checks of workflow values against protobuf message descriptors (``validate --connect``).

Two checks, both pure (no I/O), both reporting at the YAML node concerned:

* ``RequestChecker`` walks a step's ``input`` node against the request message: every key must
  name a field (proto or lowerCamel name, as proto3 JSON accepts), nested mappings are checked
  against nested messages, lists against repeated fields, and literal values must fit the
  field's type (modelled on ``json_format.ParseDict``, which builds the request at run time;
  a few edge cases differ: bools into doubles, ``.inf``, bytes that are not base64).
  A value that is exactly one template has a type known only at run time and is accepted.
* ``ReferenceChecker`` finds every ``<output>.<field>…`` and ``steps.<id>.output.<field>…``
  selection in a template and walks it through the response message of the step that produces
  the output; a repeated field, a map or a well-known type ends the walk (their plain forms are
  lists, maps, strings or free-form JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from maestro_gateway.expr.scan import paths, split_template, tokenize
from maestro_gateway.model.context import LoadContext, did_you_mean
from maestro_gateway.model.yamlnodes import (
    BOOL,
    FLOAT,
    INT,
    STR,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    is_null,
    kind,
    pairs,
    to_python,
)

FD = FieldDescriptor
_INTEGERS = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_TYPE_NAMES = {
    FD.TYPE_DOUBLE: "double",
    FD.TYPE_FLOAT: "float",
    FD.TYPE_INT32: "int32",
    FD.TYPE_SINT32: "sint32",
    FD.TYPE_SFIXED32: "sfixed32",
    FD.TYPE_UINT32: "uint32",
    FD.TYPE_FIXED32: "fixed32",
    FD.TYPE_INT64: "int64",
    FD.TYPE_SINT64: "sint64",
    FD.TYPE_SFIXED64: "sfixed64",
    FD.TYPE_UINT64: "uint64",
    FD.TYPE_FIXED64: "fixed64",
    FD.TYPE_BOOL: "bool",
    FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes",
}
_WRAPPERS = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_FREE_FORM = frozenset({"google.protobuf.Value"})
_OBJECT_WKT = frozenset({"google.protobuf.Struct", "google.protobuf.Any", "google.protobuf.Empty"})
_STRING_WKT = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})


def is_well_known(descriptor: Descriptor) -> bool:
    """True for ``google.protobuf`` types whose JSON form is not a plain object of their fields."""
    return str(descriptor.full_name).startswith("google.protobuf.")


def field_type(field: FieldDescriptor) -> str:
    """A readable type: ``int32``, ``testing.v1.Inner``, ``repeated string``, ``map<string, int64>``."""
    if _is_map(field):
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return f"map<{_single_type(key)}, {_single_type(value)}>"
    single = _single_type(field)
    return f"repeated {single}" if field.is_repeated else single


def _single_type(field: FieldDescriptor) -> str:
    if field.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
        return str(field.message_type.full_name)
    if field.type == FD.TYPE_ENUM:
        return str(field.enum_type.full_name)
    return _TYPE_NAMES.get(field.type, "scalar")


def _is_map(field: FieldDescriptor) -> bool:
    return bool(
        field.type == FD.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
        and field.is_repeated
    )


def is_template(node: Node) -> bool:
    """True for a string scalar holding ``{{``."""
    return isinstance(node, ScalarNode) and node.tag == STR and "{{" in node.value


def is_whole_template(text: str) -> bool:
    """True when ``text`` is exactly one ``{{ … }}`` (its value keeps the expression's type)."""
    segments, problems = split_template(text)
    nonblank = [s for s in segments if s.is_expr or s.text.strip()]
    return not problems and len(nonblank) == 1 and nonblank[0].is_expr


class RequestChecker:
    """Checks input nodes against request messages, reporting into a ``LoadContext``."""

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx

    def message(self, node: Node, descriptor: Descriptor, where: str) -> None:
        """Check ``node`` as a value of message type ``descriptor``."""
        if self._dynamic(node):
            return
        if is_well_known(descriptor):
            self._well_known(node, descriptor, where)
            return
        if not isinstance(node, MappingNode):
            self.ctx.error(
                node, f"{where}: expected a mapping for {descriptor.full_name}, got {_got(node)}"
            )
            return
        by_name: dict[str, FieldDescriptor] = {}
        for field in descriptor.fields:
            by_name.setdefault(field.json_name, field)
        for field in descriptor.fields:
            by_name[field.name] = field
        for key, value in pairs(node):
            if not isinstance(key, ScalarNode):
                continue
            name = str(key.value)
            field = by_name.get(name)
            if field is None:
                names = [f.name for f in descriptor.fields]
                self.ctx.error(
                    key,
                    f"{where}.{name}: unknown field '{name}' in {descriptor.full_name}"
                    f"{did_you_mean(name, names)}",
                )
                continue
            self.field(value, field, f"{where}.{name}")

    def field(self, node: Node, field: FieldDescriptor, where: str) -> None:
        """Check ``node`` as the value of ``field`` (repeated, map or single)."""
        if self._dynamic(node):
            return
        if _is_map(field):
            self._map(node, field, where)
        elif field.is_repeated:
            if not isinstance(node, SequenceNode):
                self._mismatch(node, field, where, "a list")
                return
            for i, element in enumerate(node.value):
                self.single(element, field, f"{where}[{i}]")
        else:
            self.single(node, field, where)

    def _map(self, node: Node, field: FieldDescriptor, where: str) -> None:
        if not isinstance(node, MappingNode):
            self._mismatch(node, field, where, "a mapping")
            return
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        for key, value in pairs(node):
            if not isinstance(key, ScalarNode):
                continue
            text = str(key.value)
            expected = ""
            if key_field.type in _INTEGERS and _integer(text) is None:
                expected = "integers"
            elif key_field.type == FD.TYPE_BOOL and text not in ("true", "false"):
                expected = "true or false"
            if expected:
                owner = field.containing_type.full_name
                self.ctx.error(
                    key,
                    f"{where}.{text}: field '{field.name}' of {owner} is {field_type(field)}; "
                    f"its keys must be {expected}, got '{text}'",
                )
            self.single(value, value_field, f"{where}.{text}", outer=field)

    def single(
        self,
        node: Node,
        field: FieldDescriptor,
        where: str,
        *,
        outer: FieldDescriptor | None = None,
    ) -> None:
        """Check ``node`` as one (non-repeated) value of ``field``'s type.

        ``outer`` is the field named in messages when ``field`` is the value field of a map
        entry or of a wrapper type.
        """
        if self._dynamic(node) or is_null(node):
            return
        if field.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            if field.message_type.full_name in _WRAPPERS:
                value = field.message_type.fields_by_name["value"]
                self.single(node, value, where, outer=outer or field)
            else:
                self.message(node, field.message_type, where)
        elif field.type == FD.TYPE_ENUM:
            self._enum(node, field, where)
        elif not isinstance(node, ScalarNode):
            self._mismatch(node, outer or field, where, _expected(field, node))
        elif is_template(node):
            # Text mixed with templates is a string, whose content is known only at run time.
            if field.type == FD.TYPE_BOOL:
                got = "text with templates"
                self._mismatch(node, outer or field, where, "true or false", got=got)
        elif not _scalar_fits(node, field):
            self._mismatch(node, outer or field, where, _expected(field, node))

    def _enum(self, node: Node, field: FieldDescriptor, where: str) -> None:
        enum: EnumDescriptor = field.enum_type
        if enum.full_name == "google.protobuf.NullValue":
            return
        if isinstance(node, ScalarNode) and node.tag == INT:
            return  # proto3 enums are open: any number is accepted
        if isinstance(node, ScalarNode) and node.tag == STR:
            if is_template(node) or node.value in enum.values_by_name:
                return
            names = list(enum.values_by_name)
            self.ctx.error(
                node,
                f"{where}: '{node.value}' is not a value of {enum.full_name}"
                f"{did_you_mean(node.value, names)} (values: {', '.join(names)})",
            )
            return
        self._mismatch(node, field, where, f"a {enum.full_name} name")

    def _well_known(self, node: Node, descriptor: Descriptor, where: str) -> None:
        name = descriptor.full_name
        if name in _FREE_FORM or is_null(node):
            return
        if name in _WRAPPERS:
            self.single(node, descriptor.fields_by_name["value"], where)
        elif name == "google.protobuf.ListValue":
            if not isinstance(node, SequenceNode):
                self.ctx.error(node, f"{where}: expected a list for {name}, got {_got(node)}")
        elif name in _STRING_WKT:
            self._string_wkt(node, name, where)
        elif not isinstance(node, MappingNode):
            expected = "a mapping" if name in _OBJECT_WKT else "a value"
            self.ctx.error(node, f"{where}: expected {expected} for {name}, got {_got(node)}")

    def _string_wkt(self, node: Node, name: str, where: str) -> None:
        if not isinstance(node, ScalarNode) or node.tag != STR:
            self.ctx.error(node, f"{where}: expected a string for {name}, got {_got(node)}")
            return
        if is_template(node):
            return
        parser = {
            "google.protobuf.Timestamp": timestamp_pb2.Timestamp,
            "google.protobuf.Duration": duration_pb2.Duration,
        }.get(name)
        if parser is None:
            return
        try:
            parser().FromJsonString(node.value)
        except ValueError as exc:
            self.ctx.error(node, f"{where}: '{node.value}' is not a valid {name}: {exc}")

    def _dynamic(self, node: Node) -> bool:
        """True when the value is exactly one template: its type is known only at run time."""
        return is_template(node) and is_whole_template(str(node.value))

    def _mismatch(
        self, node: Node, field: FieldDescriptor, where: str, expected: str, *, got: str = ""
    ) -> None:
        owner = field.containing_type.full_name if field.containing_type else "?"
        self.ctx.error(
            node,
            f"{where}: field '{field.name}' of {owner} is {field_type(field)}; "
            f"expected {expected}, got {got or _got(node)}",
        )


def _got(node: Node) -> str:
    if isinstance(node, ScalarNode) and node.tag in (STR, INT, FLOAT, BOOL):
        what = kind(node)
        if len(node.value) > 40:
            return what
        shown = f"'{node.value}'" if node.tag == STR else node.value
        return f"{what.replace('a ', 'the ', 1)} {shown}"
    return kind(node)


def _expected(field: FieldDescriptor, node: Node) -> str:
    if field.type == FD.TYPE_BOOL:
        return "true or false"
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return "a string"
    if field.type in _INTEGERS:
        if isinstance(node, ScalarNode) and node.tag == INT:
            low, high = _INTEGERS[field.type]
            return f"an integer in [{low}, {high}]"
        return "an integer"
    return "a number"


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _scalar_fits(node: ScalarNode, field: FieldDescriptor) -> bool:
    """Whether a literal scalar is accepted by ``ParseDict`` for a scalar ``field``."""
    tag, text = node.tag, str(node.value)
    if field.type == FD.TYPE_BOOL:
        return tag == BOOL
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return tag == STR
    if field.type in _INTEGERS:
        if tag == STR:
            value = _integer(text)
        elif tag in (INT, FLOAT):
            number = to_python(node)
            integral = math.isfinite(number) and float(number).is_integer()
            value = int(number) if integral else None
        else:
            return False
        low, high = _INTEGERS[field.type]
        return value is not None and low <= value <= high
    if tag in (INT, FLOAT):
        return True
    if tag == STR:
        if text in _FLOAT_WORDS:
            return True
        try:
            float(text)
        except ValueError:
            return False
        return True
    return False


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """What a gRPC step leaves in the context: its response message, or None for a list."""

    step_id: str
    method: str
    response: Descriptor | None


class ReferenceChecker:
    """Checks field selections on gRPC step outputs inside templates.

    Args:
        ctx: where diagnostics go.
        outputs: output name → schema, for every gRPC step whose method resolved.
        by_step: step id → schema, for ``steps.<id>.output`` selections.
    """

    def __init__(
        self,
        ctx: LoadContext,
        outputs: Mapping[str, OutputSchema],
        by_step: Mapping[str, OutputSchema],
    ) -> None:
        self.ctx = ctx
        self.outputs = outputs
        self.by_step = by_step

    def value(self, node: Node, where: str) -> None:
        """Check every template string anywhere inside ``node`` (a value tree)."""
        if isinstance(node, MappingNode):
            for key, child in pairs(node):
                self.value(child, f"{where}.{key.value}")
        elif isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                self.value(child, f"{where}[{i}]")
        elif is_template(node):
            assert isinstance(node, ScalarNode)
            self.text(node, where)

    def text(self, node: ScalarNode, where: str, *, bare: bool = False) -> None:
        """Check the templates of a string scalar; ``bare`` means it is one CEL expression."""
        text = str(node.value)
        if bare and "{{" not in text:
            sources = [(text, 0)]
        else:
            segments, _ = split_template(text)
            sources = [(s.text, s.start) for s in segments if s.is_expr]
        for source, start in sources:
            for names, offsets in paths(tokenize(source)):
                self._path(node, names, [start + o for o in offsets], where)

    def _path(self, node: ScalarNode, names: list[str], offsets: list[int], where: str) -> None:
        if names[0] in self.outputs:
            schema, first = self.outputs[names[0]], 1
        elif len(names) >= 3 and names[0] == "steps" and names[2] == "output":
            found = self.by_step.get(names[1])
            if found is None:
                return
            schema, first = found, 3
        else:
            return
        descriptor = schema.response
        for i in range(first, len(names)):
            if descriptor is None:
                return
            name = names[i]
            selection = ".".join(names[: i + 1])
            field = descriptor.fields_by_name.get(name)
            if field is None:
                choices = [f.name for f in descriptor.fields]
                self.ctx.error_at(
                    self.ctx.offset_position(node, offsets[i]),
                    f"{where}: {selection}: {descriptor.full_name} has no field '{name}'"
                    f"{did_you_mean(name, choices)}",
                )
                return
            if field.is_repeated:
                return
            if field.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
                descriptor = None if is_well_known(field.message_type) else field.message_type
                continue
            if i + 1 < len(names):
                self.ctx.error_at(
                    self.ctx.offset_position(node, offsets[i + 1]),
                    f"{where}: {'.'.join(names[: i + 2])}: {selection} is "
                    f"{field_type(field)}, which has no fields",
                )
            return
