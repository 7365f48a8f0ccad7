"""Checking an execution input against the workflow's JSON Schema.

The validator is compiled once, when the ``Workflow`` is built (``Workflow.input_validator``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import jsonschema.validators
from jsonschema.protocols import Validator

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
    errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ExecutionError(Code.INVALID_ARGUMENT, "; ".join(_describe(e) for e in errors))


def compile_validator(schema: Mapping[str, Any]) -> Validator:
    """The validator of ``schema`` (its declared draft, else 2020-12), with format checking."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator: Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return validator


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
