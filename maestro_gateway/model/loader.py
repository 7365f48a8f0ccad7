"""Load a workflow file into a validated, immutable ``Workflow``.

``load_file`` and ``load_string`` either return a workflow that every later layer can trust, or
raise ``DefinitionError`` carrying *every* problem of the file, each at its 1-based line and
column: YAML syntax, duplicate keys, unknown keys (with a did-you-mean), missing or mistyped
fields, invalid durations and policies, unknown services, malformed methods, duplicate step ids,
output-name collisions, an invalid input schema, the step kinds of DESIGN §12 (foreach, workflow,
switch, loop and fail steps, nested up to ``MAX_NESTING`` levels: ``maestro_gateway.model.steps``)
and every expression problem (syntax, unknown names, references to steps that cannot have run
yet, a dynamic use of ``env``: ``maestro_gateway.model.scopes``).

One file is loaded at a time, so a ``workflow`` step's ``child`` stays None here; workflows loaded
together are linked by ``maestro_gateway.model.bundle``.

``env.NAME`` reads the process environment once, at load (DESIGN §9). ``env`` chooses what an
unset variable is: ``"require"`` (the default: an error, as for ``maestro serve``, ``maestro
execute`` and recovery), ``"warn"`` (a warning in ``Workflow.warnings``, the variable compiled as
an empty string: ``maestro validate``) or ``"skip"`` (the environment is not read; every variable
is an empty string: for a text checked or drawn away from the gateway that will run it).

Parsing is bounded by ``YamlLimits`` (size, nodes after alias expansion, nesting depth; the
process-wide :func:`~maestro_gateway.model.yamlnodes.default_limits` unless ``limits`` is
given): a document over one is refused with a single positioned diagnostic naming the limit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import jsonschema.validators

from maestro_gateway import expr
from maestro_gateway.errors import DefinitionError, Diagnostic
from maestro_gateway.model.context import EnvPolicy, LoadContext, printable
from maestro_gateway.model.names import WORKFLOW_NAME
from maestro_gateway.model.schema import endless, unresolvable_refs
from maestro_gateway.model.scopes import Scopes
from maestro_gateway.model.services import read_service
from maestro_gateway.model.steps import StepReader
from maestro_gateway.model.triggers import read_triggers
from maestro_gateway.model.types import Service, Trigger, Workflow
from maestro_gateway.model.yamlnodes import (
    LimitExceeded,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    YamlLimits,
    check_size,
    check_values,
    compose,
    default_limits,
    duplicate_keys,
    is_null,
    pairs,
    position,
    to_python,
    yaml,
)

WORKFLOW_KEYS = (
    "name",
    "version",
    "description",
    "timeout",
    "compensation_timeout",
    "input",
    "services",
    "steps",
    "output",
    "triggers",
)
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
DEFAULT_COMPENSATION_TIMEOUT = 60.0


def load_file(
    path: str,
    *,
    env: EnvPolicy = "require",
    environ: Mapping[str, str] | None = None,
    limits: YamlLimits | None = None,
) -> Workflow:
    """Read and validate the workflow file at ``path``.

    Relative paths inside the workflow (TLS files, descriptors) are resolved against the file's
    directory and must exist. ``env`` is the policy for unset environment variables (module
    docstring); ``environ`` replaces ``os.environ`` as the environment read; ``limits`` bounds
    the parsing (default: the process-wide limits).

    Raises:
        DefinitionError: every problem found, including ``cannot read`` when the file cannot be
            read or is not UTF-8, and a file larger than ``limits.max_bytes`` (never read whole).
    """
    limits = limits or default_limits()
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise DefinitionError(
                [
                    Diagnostic(
                        path,
                        1,
                        1,
                        f"the workflow is larger than the limit of {limits.max_bytes} bytes "
                        "(max_yaml_bytes)",
                    )
                ]
            )
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DefinitionError([Diagnostic(path, 1, 1, f"cannot read: {reason}")]) from exc
    base_dir = os.path.dirname(os.path.abspath(path))
    return _load(text, path, base_dir, check_files=True, env=env, environ=environ, limits=limits)


def load_string(
    text: str,
    path: str = "<string>",
    *,
    env: EnvPolicy = "require",
    environ: Mapping[str, str] | None = None,
    limits: YamlLimits | None = None,
) -> Workflow:
    """Validate workflow ``text``; ``path`` names it in diagnostics.

    Relative paths inside the workflow are resolved against the directory of ``path`` (the
    current directory for ``<string>``); their existence is not checked, because the text may
    be validated away from the machine that will run it. ``env`` and ``environ`` are as for
    :func:`load_file` (recovery loads a stored definition with the default, so the environment
    is read again then); so is ``limits``.

    Raises:
        DefinitionError: every problem found.
    """
    base_dir = os.path.dirname(os.path.abspath(path)) if path != "<string>" else os.getcwd()
    return _load(text, path, base_dir, check_files=False, env=env, environ=environ, limits=limits)


def _load(
    text: str,
    path: str,
    base_dir: str,
    *,
    check_files: bool,
    env: EnvPolicy,
    environ: Mapping[str, str] | None,
    limits: YamlLimits | None,
) -> Workflow:
    limits = limits or default_limits()
    try:
        check_size(text, limits)
        ctx = LoadContext(
            path, text, base_dir, check_files=check_files, env_policy=env, environ=environ
        )
        root = compose(text, limits)
    except LimitExceeded as exc:
        raise DefinitionError([Diagnostic(path, exc.line, exc.column, exc.message)]) from exc
    except RecursionError as exc:  # a --max-yaml-depth beyond what Python's stack allows
        raise DefinitionError(
            [Diagnostic(path, 1, 1, "the workflow nests too deeply to be parsed")]
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        raise DefinitionError(
            [Diagnostic(path, line, column, printable(f"YAML syntax error: {message}"))]
        ) from exc
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        raise DefinitionError(
            [
                Diagnostic(
                    path,
                    line,
                    column,
                    f"YAML error: unacceptable character #x{exc.character:04x}: {exc.reason}",
                )
            ]
        ) from exc
    except yaml.YAMLError as exc:
        raise DefinitionError([Diagnostic(path, 1, 1, printable(f"YAML error: {exc}"))]) from exc
    if root is None or is_null(root):
        raise DefinitionError(
            [Diagnostic(path, 1, 1, "the file is empty; a workflow needs name, services and steps")]
        )
    for node, message in check_values(root):
        ctx.error(node, message)
    for first, duplicate in duplicate_keys(root):
        ctx.error(
            duplicate, f"duplicate key '{duplicate.value}' (first at line {position(first).line})"
        )
    workflow = _workflow(ctx, root, text)
    if ctx.diagnostics or workflow is None:
        raise DefinitionError(ctx.diagnostics + ctx.warnings)
    return workflow


def _workflow(ctx: LoadContext, root: Node, text: str) -> Workflow | None:
    fields = ctx.fields(root, "workflow", WORKFLOW_KEYS, required=("name", "services", "steps"))
    if fields is None:
        return None
    values: dict[str, Any] = {}
    if "name" in fields:
        name = ctx.string(fields["name"], "name", scalars=True)
        if name is not None and not WORKFLOW_NAME.fullmatch(name):
            ctx.error(
                fields["name"], f"name: '{name}' may hold only letters, digits, '_', '.' and '-'"
            )
        values["name"] = name
    for key in ("version", "description"):
        if key in fields and not is_null(fields[key]):
            values[key] = ctx.string(fields[key], key, scalars=True, braces=key == "description")
    if "timeout" in fields:
        values["timeout"] = ctx.duration(fields["timeout"], "timeout")
    values["compensation_timeout"] = DEFAULT_COMPENSATION_TIMEOUT
    if "compensation_timeout" in fields:
        values["compensation_timeout"] = ctx.duration(
            fields["compensation_timeout"], "compensation_timeout"
        )
    schema_ok = True
    if "input" in fields:
        schema = _input_schema(ctx, fields["input"])
        schema_ok = schema is not None
        values["input_schema"] = schema

    steps_reader = StepReader(ctx, {})
    infos = steps_reader.structure(fields["steps"]) if "steps" in fields else []
    scopes = Scopes(infos)
    services = _services(ctx, fields.get("services"), scopes)
    steps_reader.services = services
    steps = steps_reader.build(scopes) if "steps" in fields else None
    output: expr.Template | None = None
    output_ok = True
    if "output" in fields and not is_null(fields["output"]):
        output = ctx.template(fields["output"], scopes.workflow_output(), "output")
        output_ok = output is not None
    triggers: tuple[Trigger, ...] | None = ()
    if "triggers" in fields and not is_null(fields["triggers"]):
        triggers = read_triggers(ctx, fields["triggers"])
    if (
        ctx.diagnostics  # e.g. a required key missing while everything else read well
        or steps is None
        or triggers is None
        or not schema_ok
        or not output_ok
        or any(v is None for k, v in values.items() if k != "input_schema")
        or any(s is None for s in services.values())
    ):
        return None
    return Workflow(
        services={k: v for k, v in services.items() if v is not None},
        steps=steps,
        output=output,
        triggers=triggers,
        source=text,
        path=ctx.path,
        warnings=tuple(sorted(ctx.warnings)),
        **values,
    )


def _services(ctx: LoadContext, node: Node | None, scopes: Scopes) -> dict[str, Service | None]:
    if node is None:
        return {}
    items = ctx.mapping_items(node, "services")
    if items is None:
        return {}
    if not items:
        ctx.error(node, "services: define at least one service")
    scope = scopes.service()
    return {str(k.value): read_service(ctx, k, v, scope) for k, v in items}


def _input_schema(ctx: LoadContext, node: Node) -> dict[str, Any] | None:
    if not isinstance(node, MappingNode):
        ctx.error(node, "input: expected a JSON Schema (a mapping)")
        return None
    schema = _schema_value(ctx, node, "input")
    if not isinstance(schema, dict):
        return None
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        target = _schema_node(node, list(exc.path))
        where = ".".join(["input", *(str(p) for p in exc.path)])
        ctx.error(target, f"{where}: invalid JSON Schema: {exc.message}")
        return None
    ok = True
    for path, ref in unresolvable_refs(schema, validator):
        where = ".".join(["input", *(str(p) for p in path)])
        ctx.error(
            _schema_node(node, path),
            f"{where}: cannot resolve $ref '{ref}' (only references into the schema itself, such "
            "as '#/$defs/name', can be resolved)",
        )
        ok = False
    if ok and endless(schema):
        ctx.error(node, "input: the schema's references loop without end ($ref to itself)")
        ok = False
    return dict(schema) if ok else None


def _schema_value(ctx: LoadContext, node: Node, where: str) -> Any:
    """The JSON value of a schema node; None (reported) when a key is not a scalar.

    Keys are taken as written (``1:`` is the key ``"1"``), as JSON has only string keys.
    """
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        failed = False
        for key, value in pairs(node):
            if not isinstance(key, ScalarNode):
                ctx.error(key, f"{where}: keys must be strings")
                failed = True
                continue
            item = _schema_value(ctx, value, f"{where}.{key.value}")
            failed = failed or (item is None and not is_null(value))
            out[str(key.value)] = item
        return None if failed else out
    if isinstance(node, SequenceNode):
        items = [_schema_value(ctx, v, f"{where}[{i}]") for i, v in enumerate(node.value)]
        failed = any(i is None and not is_null(v) for i, v in zip(items, node.value, strict=True))
        return None if failed else items
    return to_python(node)


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of character ``offset`` of ``text``, as YAML counts lines."""
    before = text[:offset]
    breaks = list(_LINE_BREAK.finditer(before))
    if not breaks:
        return 1, offset + 1
    return len(breaks) + 1, offset - breaks[-1].end() + 1


def _schema_node(node: Node, path: list[Any]) -> Node:
    """The node at ``path`` inside a schema, or the deepest one that exists."""
    for part in path:
        if isinstance(node, MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            match = node.value[part]
        else:
            match = None
        if match is None:
            break
        node = match
    return node
