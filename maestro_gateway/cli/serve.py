"""``maestro serve``: the gateway gRPC server.

Loads every ``*.yaml``/``*.yml`` in ``--workflows`` (an invalid file is logged with all its
diagnostics and not served), then prints one ready line on stdout::

    maestro-gateway listening on 127.0.0.1:50051 (3 workflows)

Executions are journaled (``--journal``, default ``maestro-journal.db`` in the working
directory; ``none`` keeps them in memory; ``postgresql://…`` a database that replicas share):
before the ready line, every unfinished execution of the journal is resumed. A journal that
cannot be used (a directory, unwritable, corrupt, written by a newer version, held by another
gateway; a database server that refuses the login, or that stays unreachable for
``--journal-connect-timeout``) ends the command with status 1 and a message naming it (never its
password), before anything listens. Replicas on one PostgreSQL journal hold leases on the
executions they run (``--lease``) and take over each other's when one stops (DESIGN §11).

``--admin-port N`` (``--admin-host``, default 127.0.0.1) serves ``/metrics``, ``/healthz`` and
``/readyz`` over HTTP (``maestro_gateway.admin``); it binds before recovery, and its URL is
printed on stdout before the ready line::

    maestro-gateway admin on http://127.0.0.1:9464 (/metrics /healthz /readyz)
    maestro-gateway live view on http://127.0.0.1:9464/

The live view shows inputs and outputs unless ``--view-payloads false``. Metrics are only
collected when the admin port is on.

SIGTERM (or SIGINT) drains gracefully and exits 0; SIGHUP reloads the directory all or nothing.
Logs go to stderr, one ``key=value`` line per event (``--log-format json``: one JSON object per
line, the same keys as fields). Every line, of every logger and level, is redacted: a value a
workflow read from the environment (``env.NAME``) appears as ``***``. A workflow using a
variable that is not set is not served (``workflow_invalid`` names the variable); the others
are.

Traces are exported when the standard ``OTEL_*`` variables ask for it, and only then
(``maestro_gateway.server.tracing`` says which turn it on); a value it cannot use ends the
command with status 2 naming the variable. JSON log lines then carry ``trace_id``. What is
still queued is exported when the server stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from maestro_gateway.cli import USAGE_ERROR
from maestro_gateway.cli.argtypes import positive
from maestro_gateway.cli.limits import (
    add_request_arguments,
    add_yaml_arguments,
    apply_yaml_limits,
    request_limits,
)
from maestro_gateway.model.durations import DurationError, parse_duration

RUNTIME_ERROR = 1
DEFAULT_JOURNAL = "maestro-journal.db"
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_RETENTION = 168 * 3600.0
DEFAULT_LEASE = 15.0
LOG_FORMAT = "time=%(asctime)s level=%(levelname)s %(message)s"


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_duration(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive duration")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (0 picks a free one)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``maestro serve``."""
    parser.add_argument(
        "--workflows", required=True, type=Path, metavar="DIR", help="directory of workflow files"
    )
    parser.add_argument(
        "--port", required=True, type=_port, metavar="N", help="port to listen on (0: any)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", metavar="H", help="address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--grace",
        default=30.0,
        type=_duration,
        metavar="DURATION",
        help="on SIGTERM, time running executions get to finish (default 30s)",
    )
    parser.add_argument(
        "--journal",
        default=DEFAULT_JOURNAL,
        metavar="URL",
        help="where executions are recorded: a file path or sqlite:PATH (default "
        f"{DEFAULT_JOURNAL}), postgresql://USER@HOST:PORT/DB (shared by replicas; the password "
        "from the URL or PGPASSWORD), or none (in memory: nothing survives the process)",
    )
    parser.add_argument(
        "--journal-connect-timeout",
        default=DEFAULT_CONNECT_TIMEOUT,
        type=_duration,
        metavar="DURATION",
        help="how long to retry a PostgreSQL journal that cannot be reached at start (default "
        "30s); then the command exits with status 1",
    )
    parser.add_argument(
        "--lease",
        default=DEFAULT_LEASE,
        type=_positive_duration,
        metavar="DURATION",
        help="with a PostgreSQL journal shared by replicas: how long a replica's hold on an "
        "execution lasts unrenewed (renewed every third of it; default 15s); another replica "
        "takes over an execution whose lease expired",
    )
    parser.add_argument(
        "--journal-sync",
        default="normal",
        choices=["normal", "full"],
        help="normal (default) survives a crash of the gateway; full fsyncs every commit and "
        "survives a power loss",
    )
    parser.add_argument(
        "--retention",
        default=DEFAULT_RETENTION,
        type=_duration,
        metavar="DURATION",
        help="how long finished executions are kept (default 168h); then they are deleted",
    )
    parser.add_argument(
        "--max-concurrent",
        default=1000,
        type=positive,
        metavar="N",
        help="executions in flight at once; beyond it RESOURCE_EXHAUSTED (default 1000)",
    )
    add_yaml_arguments(parser)
    add_request_arguments(parser)
    parser.add_argument("--tls-cert", metavar="FILE", help="server certificate chain (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="server private key (PEM)")
    parser.add_argument(
        "--tls-client-ca", metavar="FILE", help="CA of client certificates: enables mutual TLS"
    )
    parser.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="event loop (default auto: uvloop when installed, else asyncio's)",
    )
    parser.add_argument(
        "--admin-port",
        type=_port,
        metavar="N",
        help="serve /metrics, /healthz and /readyz over HTTP on this port (default: off; 0: any)",
    )
    parser.add_argument(
        "--admin-host",
        default="127.0.0.1",
        metavar="H",
        help="address of the admin port (default 127.0.0.1)",
    )
    parser.add_argument(
        "--view-payloads",
        default="true",
        choices=["true", "false"],
        help="the live view (/ on the admin port) shows inputs and outputs (default true; "
        "false leaves them out of its API too)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text (default): key=value lines; json: one JSON object per line",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default info; payloads and header values are never logged above debug)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code."""
    from maestro_gateway.redaction import RedactingFormatter
    from maestro_gateway.server.logfmt import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if args.log_format == "json" else RedactingFormatter(LOG_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler], force=True)
    if args.log_level != "debug":
        # httpx logs every request's URL, query string included, at INFO: payloads of GET steps.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if bool(args.tls_cert) != bool(args.tls_key):
        print("maestro serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return USAGE_ERROR
    if args.tls_client_ca and not args.tls_cert:
        print("maestro serve: --tls-client-ca needs --tls-cert and --tls-key", file=sys.stderr)
        return USAGE_ERROR
    if not args.workflows.is_dir():
        print(f"maestro serve: {args.workflows}: not a directory", file=sys.stderr)
        return USAGE_ERROR
    loop_factory = _loop_factory(args.loop)
    if loop_factory is None and args.loop == "uvloop":
        print("maestro serve: --loop uvloop: uvloop is not installed", file=sys.stderr)
        return USAGE_ERROR
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(args))


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when chosen (or ``auto`` and installed); None means asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(args: argparse.Namespace) -> int:
    from maestro_gateway.journal import JournalError, open_journal
    from maestro_gateway.server.app import TLSFiles, create_gateway
    from maestro_gateway.server.logfmt import logfmt
    from maestro_gateway.server.tracing import TracingConfigError
    from maestro_gateway.server.tracing import from_env as tracing_from_env

    log = logging.getLogger("maestro_gateway.server")
    apply_yaml_limits(args)  # before anything is loaded: recovery and reloads read them too
    tls = TLSFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    try:
        tracing = tracing_from_env()  # the OTEL_* variables (DESIGN §14); None: off
    except TracingConfigError as exc:
        print(f"maestro serve: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if tracing is not None:
        from maestro_gateway.server.otel import log_trace_ids

        log_trace_ids(True)
    try:
        journal = open_journal(
            args.journal, sync=args.journal_sync, connect_timeout=args.journal_connect_timeout
        )
        await journal.open()
    except JournalError as exc:
        print(f"maestro serve: --journal: {exc}", file=sys.stderr)
        return RUNTIME_ERROR
    log.info(logfmt("journal", journal=journal.description, sync=args.journal_sync))
    metrics = None
    if args.admin_port is not None:
        from maestro_gateway.server.metrics import GatewayMetrics

        metrics = GatewayMetrics()
    server, problems = create_gateway(
        args.workflows,
        host=args.host,
        port=args.port,
        max_concurrent=args.max_concurrent,
        tls=tls,
        journal=journal,
        retention=args.retention,
        lease=args.lease,
        limits=request_limits(args),
        metrics=metrics,
        tracing=tracing,
    )
    for problem in problems:
        log.error(logfmt("workflow_invalid", diagnostic=str(problem)))
    admin = None
    if metrics is not None:
        from maestro_gateway.admin import PATHS, AdminServer

        admin = AdminServer(
            server,
            metrics,
            host=args.admin_host,
            port=args.admin_port,
            view_payloads=args.view_payloads == "true",
        )
        try:
            await admin.start()
        except OSError as exc:
            print(f"maestro serve: --admin-port: {exc}", file=sys.stderr)
            await server.shutdown(0)
            return RUNTIME_ERROR
        print(f"maestro-gateway admin on {admin.url} ({' '.join(PATHS)})", flush=True)
        print(f"maestro-gateway live view on {admin.url}/", flush=True)
    try:
        await server.start()
    except (OSError, RuntimeError) as exc:
        print(f"maestro serve: {exc}", file=sys.stderr)
        await server.shutdown(0)
        if admin is not None:
            await admin.close()
        return RUNTIME_ERROR

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()

    def on_hangup() -> None:
        task: asyncio.Task[object] = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)

    if server.recovered:
        log.info(logfmt("recovered", executions=server.recovered))
    print(
        f"maestro-gateway listening on {server.address} ({len(server.registry)} workflows)",
        flush=True,
    )
    await stop.wait()
    log.info(logfmt("signal", action="shutdown"))
    await server.shutdown(args.grace)
    if admin is not None:
        await admin.close()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    return 0
