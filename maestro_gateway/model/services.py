"""Reading the ``services`` section: endpoints, timeouts, retry, breaker, pool, TLS, descriptors,
protocol."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from maestro_gateway import expr
from maestro_gateway.codes import Code
from maestro_gateway.model.context import LoadContext, did_you_mean
from maestro_gateway.model.types import (
    CircuitBreakerPolicy,
    DescriptorSource,
    ProtoFilesSource,
    ProtosetSource,
    ReflectionSource,
    RetryPolicy,
    Service,
    TLSConfig,
)
from maestro_gateway.model.yamlnodes import (
    BOOL,
    STR,
    Node,
    ScalarNode,
    is_null,
    kind,
    position,
    to_python,
)

SERVICE_KEYS = (
    "type",
    "endpoint",
    "timeout",
    "retry",
    "circuit_breaker",
    "pool",
    "tls",
    "metadata",
    "headers",
    "descriptors",
    "protocol",
    "max_response_bytes",
)
PROTOCOLS = ("auto", "grpc", "maestro-go")
RETRY_KEYS = ("attempts", "backoff", "initial", "multiplier", "max", "jitter", "codes")
_SERVICE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_GRPC_METADATA_KEY = re.compile(r"[a-z0-9_.-]+")
_HTTP_HEADER_KEY = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def read_retry(ctx: LoadContext, node: Node, where: str) -> dict[str, Any] | None:
    """The fields a ``retry`` block sets, to merge over a base policy field by field."""
    fields = ctx.fields(node, where, RETRY_KEYS)
    if fields is None:
        return None
    out: dict[str, Any] = {}
    readers: dict[str, Any] = {
        "attempts": lambda n, w: ctx.integer(n, w, 1),
        "backoff": lambda n, w: ctx.choice(n, w, ("exponential", "constant")),
        "initial": lambda n, w: ctx.duration(n, w, positive=False),
        "multiplier": lambda n, w: ctx.number(n, w, 1.0),
        "max": lambda n, w: ctx.duration(n, w, positive=False),
        "jitter": ctx.boolean,
        "codes": lambda n, w: _codes(ctx, n, w),
    }
    for name, value_node in fields.items():
        value = readers[name](value_node, f"{where}.{name}")
        if value is not None:
            out[name] = value
    if "initial" in out and "max" in out and out["max"] < out["initial"]:
        ctx.error(fields["max"], f"{where}.max: must not be less than initial")
    return out


def merge_retry(base: RetryPolicy, overrides: Mapping[str, Any]) -> RetryPolicy:
    """``base`` with the fields of ``overrides`` replaced."""
    return dataclasses.replace(base, **overrides) if overrides else base


def _codes(ctx: LoadContext, node: Node, where: str) -> frozenset[Code] | None:
    elements = ctx.items(node, where)
    if elements is None:
        return None
    names = [c.name for c in Code if c is not Code.OK]
    codes: set[Code] = set()
    ok = True
    for element in elements:
        text = ctx.string(element, where)
        if text is None:
            ok = False
            continue
        try:
            code = Code.from_name(text)
        except KeyError:
            ctx.error(
                element, f"{where}: unknown gRPC code '{text}'{did_you_mean(text.upper(), names)}"
            )
            ok = False
            continue
        if code is Code.OK:
            ctx.error(element, f"{where}: OK is not a failure and cannot be retried")
            ok = False
            continue
        codes.add(code)
    return frozenset(codes) if ok else None


def read_metadata(
    ctx: LoadContext,
    fields: Mapping[str, Node],
    where: str,
    service_type: str,
    scope: expr.Scope,
) -> dict[str, expr.Template] | None:
    """Read ``metadata`` or ``headers`` (either key works for both service types, not both)."""
    present = [k for k in ("metadata", "headers") if k in fields]
    if not present:
        return {}
    if len(present) == 2:
        ctx.error(fields["headers"], f"{where}: use either 'metadata' or 'headers', not both")
    key = present[0]
    items = ctx.mapping_items(fields[key], f"{where}.{key}")
    if items is None:
        return None
    out: dict[str, expr.Template] = {}
    ok = True
    for key_node, value_node in items:
        name = str(key_node.value)
        field_where = f"{where}.{key}.{name}"
        if service_type == "grpc":
            name = name.lower()
            if not _GRPC_METADATA_KEY.fullmatch(name):
                ctx.error(
                    key_node,
                    f"{field_where}: gRPC metadata keys may hold only a-z, 0-9, '-', '_' and '.'",
                )
                ok = False
                continue
        elif not _HTTP_HEADER_KEY.fullmatch(name):
            ctx.error(key_node, f"{field_where}: not a valid HTTP header name")
            ok = False
            continue
        if not isinstance(value_node, ScalarNode) or is_null(value_node):
            ctx.error(value_node, f"{field_where}: expected a string, got {kind(value_node)}")
            ok = False
            continue
        if value_node.tag == STR:
            template = ctx.compile_text(value_node, value_node.value, 0, scope, field_where)
        else:
            template = expr.constant(expr.to_text(to_python(value_node)))
        if template is None:
            ok = False
        else:
            out[name] = template
    return out if ok else None


def _tls(ctx: LoadContext, node: Node, where: str) -> tuple[bool, TLSConfig | None]:
    if isinstance(node, ScalarNode) and node.tag == BOOL:
        return True, (TLSConfig() if node.value.lower() == "true" else None)
    fields = ctx.fields(node, where, ("ca", "cert", "key", "server_name"))
    if fields is None:
        return False, None
    paths = {
        k: ctx.file_path(fields[k], f"{where}.{k}") for k in ("ca", "cert", "key") if k in fields
    }
    server_name = (
        ctx.string(fields["server_name"], f"{where}.server_name")
        if "server_name" in fields
        else None
    )
    ok = all(v is not None for v in paths.values())
    if ("cert" in fields) != ("key" in fields):
        ctx.error(node, f"{where}: 'cert' and 'key' must be given together (mutual TLS)")
        ok = False
    if "server_name" in fields and server_name is None:
        ok = False
    config = TLSConfig(paths.get("ca"), paths.get("cert"), paths.get("key"), server_name)
    return ok, config


def _descriptors(ctx: LoadContext, node: Node, where: str) -> DescriptorSource | None:
    if isinstance(node, ScalarNode) and node.tag == STR:
        if node.value == "reflection":
            return ReflectionSource()
        ctx.error(
            node,
            f"{where}: expected 'reflection', {{protoset: file}} or {{protos: [files], import_paths: [dirs]}}",
        )
        return None
    fields = ctx.fields(node, where, ("protoset", "protos", "import_paths"))
    if fields is None:
        return None
    if "protoset" in fields:
        if "protos" in fields or "import_paths" in fields:
            ctx.error(node, f"{where}: 'protoset' cannot be combined with 'protos'/'import_paths'")
            return None
        path = ctx.file_path(fields["protoset"], f"{where}.protoset")
        return None if path is None else ProtosetSource(path)
    if "protos" not in fields:
        ctx.error(node, f"{where}: expected 'protoset' or 'protos'")
        return None
    files = _paths(ctx, fields["protos"], f"{where}.protos", directories=False)
    imports: list[str] | None = []
    if "import_paths" in fields:
        imports = _paths(ctx, fields["import_paths"], f"{where}.import_paths", directories=True)
    if files is None or imports is None:
        return None
    if not files:
        ctx.error(fields["protos"], f"{where}.protos: list at least one .proto file")
        return None
    return ProtoFilesSource(tuple(files), tuple(imports) or (ctx.base_dir,))


def _paths(ctx: LoadContext, node: Node, where: str, *, directories: bool) -> list[str] | None:
    elements = ctx.items(node, where)
    if elements is None:
        return None
    out: list[str] = []
    for element in elements:
        if directories:
            text = ctx.string(element, where)
            resolved = None if text is None else ctx.resolve(text)
        else:
            resolved = ctx.file_path(element, where)
        if resolved is None:
            return None
        out.append(resolved)
    return out


def read_service(
    ctx: LoadContext, name_node: ScalarNode, node: Node, scope: expr.Scope
) -> Service | None:
    """Read one entry of ``services``; None when anything in it is wrong (already reported)."""
    name = str(name_node.value)
    where = f"services.{name}"
    ok = True
    if not _SERVICE_NAME.fullmatch(name):
        ctx.error(name_node, f"{where}: service names may hold letters, digits, '_', '.' and '-'")
        ok = False
    fields = ctx.fields(node, where, SERVICE_KEYS, required=("endpoint",))
    if fields is None:
        return None
    service_type = "grpc"
    if "type" in fields:
        chosen = ctx.choice(fields["type"], f"{where}.type", ("grpc", "http"))
        if chosen is None:
            return None
        service_type = chosen
    endpoint = ctx.string(fields["endpoint"], f"{where}.endpoint") if "endpoint" in fields else None
    if endpoint is not None:
        endpoint = endpoint.strip()
        if service_type == "http" and not endpoint.startswith(("http://", "https://")):
            ctx.error(
                fields["endpoint"],
                f"{where}.endpoint: an HTTP endpoint must start with http:// or https://",
            )
            ok = False
        elif service_type == "http" and (problem := _http_endpoint_problem(endpoint)):
            ctx.error(fields["endpoint"], f"{where}.endpoint: {problem}")
            ok = False
        elif service_type == "grpc" and endpoint.startswith(("http://", "https://")):
            ctx.error(
                fields["endpoint"],
                f"{where}.endpoint: a gRPC endpoint is a target such as host:port, not a URL (is this service type: http?)",
            )
            ok = False
    else:
        ok = False
    values: dict[str, Any] = {}
    if "timeout" in fields:
        values["timeout"] = ctx.duration(fields["timeout"], f"{where}.timeout")
    if "retry" in fields:
        overrides = read_retry(ctx, fields["retry"], f"{where}.retry")
        values["retry"] = None if overrides is None else merge_retry(RetryPolicy(), overrides)
    if "circuit_breaker" in fields:
        present, breaker = _breaker(ctx, fields["circuit_breaker"], f"{where}.circuit_breaker")
        ok = ok and present
        values["circuit_breaker"] = breaker
    if "pool" in fields:
        values["pool"] = ctx.integer(fields["pool"], f"{where}.pool", 1)
    if "max_response_bytes" in fields:
        values["max_response_bytes"] = ctx.integer(
            fields["max_response_bytes"], f"{where}.max_response_bytes", 1
        )
    if "tls" in fields:
        valid, tls = _tls(ctx, fields["tls"], f"{where}.tls")
        ok = ok and valid
        values["tls"] = tls
    if "descriptors" in fields:
        if service_type != "grpc":
            ctx.error(
                fields["descriptors"], f"{where}.descriptors: only gRPC services have descriptors"
            )
            ok = False
        else:
            values["descriptors"] = _descriptors(ctx, fields["descriptors"], f"{where}.descriptors")
    if "protocol" in fields:
        if service_type != "grpc":
            ctx.error(
                fields["protocol"],
                f"{where}.protocol: only gRPC services have a protocol (auto, grpc or maestro-go)",
            )
            ok = False
        else:
            values["protocol"] = ctx.choice(fields["protocol"], f"{where}.protocol", PROTOCOLS)
    metadata = read_metadata(ctx, fields, where, service_type, scope)
    nullable = {"circuit_breaker", "tls"}
    if metadata is None or any(v is None for k, v in values.items() if k not in nullable):
        ok = False
    if not ok or endpoint is None or metadata is None:
        return None
    return Service(
        name=name,
        type="http" if service_type == "http" else "grpc",
        endpoint=endpoint,
        metadata=metadata,
        position=position(name_node),
        **values,
    )


def _breaker(ctx: LoadContext, node: Node, where: str) -> tuple[bool, CircuitBreakerPolicy | None]:
    if isinstance(node, ScalarNode) and node.tag == BOOL:
        return True, (CircuitBreakerPolicy() if node.value.lower() == "true" else None)
    fields = ctx.fields(node, where, ("failures", "reset"))
    if fields is None:
        return False, None
    values: dict[str, Any] = {}
    if "failures" in fields:
        values["failures"] = ctx.integer(fields["failures"], f"{where}.failures", 1)
    if "reset" in fields:
        values["reset"] = ctx.duration(fields["reset"], f"{where}.reset")
    if any(v is None for v in values.values()):
        return False, None
    return True, CircuitBreakerPolicy(**values)


def _http_endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with an ``http(s)://`` endpoint (no host, a bad port), or None."""
    try:
        parts = urlsplit(endpoint)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 address
        return f"invalid HTTP endpoint '{endpoint}': {exc}"
    if not parts.hostname:
        return "an HTTP endpoint needs a host, e.g. http://mailer:8080"
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return f"invalid port in HTTP endpoint '{endpoint}'"
    return None
