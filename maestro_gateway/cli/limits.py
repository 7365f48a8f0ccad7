"""Command-line flags for the parsing and request limits (``maestro serve`` and ``validate``)."""

from __future__ import annotations

import argparse

from maestro_gateway.cli.argtypes import positive
from maestro_gateway.model.yamlnodes import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_NODES,
    YamlLimits,
    set_default_limits,
)
from maestro_gateway.server.limits import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_INPUT_DEPTH,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    DEFAULT_MAX_VALIDATIONS,
    DEFAULT_VALIDATE_TIMEOUT,
    RequestLimits,
)


def add_yaml_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--max-yaml-bytes``, ``--max-yaml-nodes`` and ``--max-yaml-depth``."""
    parser.add_argument(
        "--max-yaml-bytes",
        default=DEFAULT_MAX_BYTES,
        type=positive,
        metavar="N",
        help=f"largest workflow file or ValidateWorkflow source, in bytes (default "
        f"{DEFAULT_MAX_BYTES})",
    )
    parser.add_argument(
        "--max-yaml-nodes",
        default=DEFAULT_MAX_NODES,
        type=positive,
        metavar="N",
        help=f"most YAML nodes in a workflow once aliases are expanded (default "
        f"{DEFAULT_MAX_NODES})",
    )
    parser.add_argument(
        "--max-yaml-depth",
        default=DEFAULT_MAX_DEPTH,
        type=positive,
        metavar="N",
        help=f"deepest YAML nesting in a workflow, aliases expanded (default {DEFAULT_MAX_DEPTH})",
    )


def apply_yaml_limits(args: argparse.Namespace) -> None:
    """Make the YAML flags the process-wide limits (every loader of the process reads them)."""
    set_default_limits(
        YamlLimits(
            max_bytes=args.max_yaml_bytes,
            max_nodes=args.max_yaml_nodes,
            max_depth=args.max_yaml_depth,
        )
    )


def _seconds(text: str) -> float:
    from maestro_gateway.model.durations import DurationError, parse_duration

    try:
        value = parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive duration")
    return value


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of :class:`~maestro_gateway.server.limits.RequestLimits`."""
    parser.add_argument(
        "--max-input-bytes",
        default=DEFAULT_MAX_INPUT_BYTES,
        type=positive,
        metavar="N",
        help=f"largest execution input (encoded Struct) of Execute/Run/Start; beyond it "
        f"INVALID_ARGUMENT (default {DEFAULT_MAX_INPUT_BYTES})",
    )
    parser.add_argument(
        "--max-input-depth",
        default=DEFAULT_MAX_INPUT_DEPTH,
        type=positive,
        metavar="N",
        help=f"deepest nesting of objects and lists in an execution input; beyond it "
        f"INVALID_ARGUMENT (default {DEFAULT_MAX_INPUT_DEPTH})",
    )
    parser.add_argument(
        "--max-headers",
        default=DEFAULT_MAX_HEADERS,
        type=positive,
        metavar="N",
        help=f"most request headers on one call; beyond it INVALID_ARGUMENT (default "
        f"{DEFAULT_MAX_HEADERS})",
    )
    parser.add_argument(
        "--max-header-bytes",
        default=DEFAULT_MAX_HEADER_BYTES,
        type=positive,
        metavar="N",
        help=f"largest total size of a call's headers, enforced by gRPC (default "
        f"{DEFAULT_MAX_HEADER_BYTES})",
    )
    parser.add_argument(
        "--validate-timeout",
        default=DEFAULT_VALIDATE_TIMEOUT,
        type=_seconds,
        metavar="DURATION",
        help=f"time budget of one ValidateWorkflow; beyond it DEADLINE_EXCEEDED (default "
        f"{DEFAULT_VALIDATE_TIMEOUT:g}s)",
    )
    parser.add_argument(
        "--max-validations",
        default=DEFAULT_MAX_VALIDATIONS,
        type=positive,
        metavar="N",
        help=f"ValidateWorkflow calls in progress at once; beyond it RESOURCE_EXHAUSTED "
        f"(default {DEFAULT_MAX_VALIDATIONS})",
    )
    parser.add_argument(
        "--max-streams-per-connection",
        default=DEFAULT_MAX_STREAMS_PER_CONNECTION,
        type=positive,
        metavar="N",
        help=f"calls one client connection may have open at once; gRPC clients queue the "
        f"calls beyond it (default {DEFAULT_MAX_STREAMS_PER_CONNECTION})",
    )


def request_limits(args: argparse.Namespace) -> RequestLimits:
    """The request limits the flags declare."""
    return RequestLimits(
        max_input_bytes=args.max_input_bytes,
        max_input_depth=args.max_input_depth,
        max_headers=args.max_headers,
        max_header_bytes=args.max_header_bytes,
        validate_timeout=args.validate_timeout,
        max_validations=args.max_validations,
        max_streams_per_connection=args.max_streams_per_connection,
    )
