"""Checking an execution input against the workflow's JSON Schema.

The validator is compiled once, when the ``Workflow`` is built (``Workflow.input_validator``).
Every ``$ref`` of the schema is resolved when the workflow loads (:func:`unresolvable_refs`):
nothing is ever fetched, so a reference outside the schema (and the JSON Schema meta-schemas)
is a load error rather than a failure of every execution. So is a schema whose references loop
without going into the input (``{$ref: "#"}``: :func:`endless`), which no input could pass; one
that loops only below some property is caught when an input reaches it (FAILED_PRECONDITION).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jsonschema
import jsonschema.validators
import referencing.jsonschema
from jsonschema.protocols import Validator
from jsonschema_specifications import (  # type: ignore[import-untyped]  # no py.typed
    REGISTRY as SPECIFICATIONS,
)
from referencing.exceptions import Unresolvable

from maestro_gateway.codes import Code
from maestro_gateway.errors import ExecutionError
from maestro_gateway.model.types import Workflow

_REQUIRED = re.compile(r"'((?:[^'\\]|\\.)*)' is a required property")


def check_input(workflow: Workflow, value: Any) -> None:
    """Check ``value`` against ``workflow.input_schema``; accept anything when there is none.

    Raises:
        ExecutionError: INVALID_ARGUMENT naming every failing field path, e.g.
            ``input.order_id: 'order_id' is a required property``.
    """
    validator = workflow.input_validator
    if validator is None:
        return
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    except Unresolvable as exc:  # refused at load (unresolvable_refs); kept as a last guard
        raise ExecutionError(
            Code.FAILED_PRECONDITION,
            f"the input schema of workflow '{workflow.name}' cannot be used: {exc}",
        ) from None
    except RecursionError:  # the input is at most 32 levels deep: the schema loops on itself
        raise ExecutionError(
            Code.FAILED_PRECONDITION,
            f"the input schema of workflow '{workflow.name}' cannot be used: its references "
            "loop without end",
        ) from None
    if errors:
        raise ExecutionError(Code.INVALID_ARGUMENT, "; ".join(_describe(e) for e in errors))


def compile_validator(schema: Mapping[str, Any]) -> Validator:
    """The validator of ``schema`` (its declared draft, else 2020-12), with format checking."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator: Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return validator


_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})
"""Keywords whose values are instances, not schemas: a ``$ref`` key inside them is data."""


def unresolvable_refs(schema: Any, validator: type[Validator]) -> Iterator[tuple[list[Any], str]]:
    """The path (inside ``schema``) and text of every ``$ref`` that cannot be resolved.

    References resolve as ``validator`` resolves them: within the schema (``$id`` changing the
    base URI of what it holds) and the JSON Schema meta-schemas; nothing is retrieved.
    """
    specification = referencing.jsonschema.specification_with(
        str(validator.META_SCHEMA.get("$schema", "")), default=referencing.jsonschema.DRAFT202012
    )
    resolver = SPECIFICATIONS.resolver_with_root(specification.create_resource(schema))
    stack: list[tuple[Any, list[Any], Any]] = [(schema, [], resolver)]
    while stack:
        node, path, here = stack.pop()
        if isinstance(node, list):
            stack.extend((item, [*path, i], here) for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        if path and specification.id_of(node):
            here = here.in_subresource(specification.create_resource(node))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                here.lookup(ref)
            except Unresolvable:
                yield [*path, "$ref"], ref
        stack.extend(
            (value, [*path, key], here)
            for key, value in node.items()
            if key not in _DATA_KEYWORDS and key != "$ref"
        )


_SAMPLES: tuple[Any, ...] = (None, True, 0, "", [], {})


def endless(schema: Mapping[str, Any]) -> bool:
    """Whether checking a simple input against ``schema`` never ends (its references loop)."""
    validator = compile_validator(schema)
    try:
        for sample in _SAMPLES:
            list(validator.iter_errors(sample))
    except RecursionError:
        return True
    return False


def _describe(error: jsonschema.ValidationError) -> str:
    path: list[Any] = list(error.absolute_path)
    if error.validator == "required":
        match = _REQUIRED.search(error.message)
        if match:
            path.append(match.group(1))
    return f"{format_path(path)}: {error.message}"


def format_path(parts: Iterable[Any]) -> str:
    """``input.items[0].sku`` for the path ``["items", 0, "sku"]``."""
    out = "input"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out
