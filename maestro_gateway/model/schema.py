"""Checking an execution input against the workflow's JSON Schema.

The validator is compiled once per workflow and kept in a small cache keyed by the workflow
object's identity (``Workflow`` holds dicts, so it is neither hashable nor weak-referenceable);
entries hold the workflow itself, so an identity check makes a recycled ``id`` harmless.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import jsonschema
import jsonschema.validators
from jsonschema.protocols import Validator

from maestro_gateway.codes import Code
from maestro_gateway.errors import ExecutionError
from maestro_gateway.model.types import Workflow

_CACHE_SIZE = 256
_cache: OrderedDict[int, tuple[Workflow, Validator]] = OrderedDict()
_lock = threading.Lock()
_REQUIRED = re.compile(r"'((?:[^'\\]|\\.)*)' is a required property")


def check_input(workflow: Workflow, value: Any) -> None:
    """Check ``value`` against ``workflow.input_schema``; accept anything when there is none.

    Raises:
        ExecutionError: INVALID_ARGUMENT naming every failing field path, e.g.
            ``input.order_id: 'order_id' is a required property``.
    """
    if workflow.input_schema is None:
        return
    errors = sorted(
        _validator(workflow).iter_errors(value), key=lambda e: list(map(str, e.absolute_path))
    )
    if errors:
        raise ExecutionError(Code.INVALID_ARGUMENT, "; ".join(_describe(e) for e in errors))


def _validator(workflow: Workflow) -> Validator:
    key = id(workflow)
    with _lock:
        entry = _cache.get(key)
        if entry is not None and entry[0] is workflow:
            _cache.move_to_end(key)
            return entry[1]
    schema = workflow.input_schema if workflow.input_schema is not None else True
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator: Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    with _lock:
        _cache[key] = (workflow, validator)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
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
