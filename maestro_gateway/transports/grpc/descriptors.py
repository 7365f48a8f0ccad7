"""Descriptor sources (reflection, a protoset, ``.proto`` files) and method resolution.

Every downstream service gets a private ``DescriptorPool``: two services may define the same
message names differently, and nothing a downstream sends should land in the process-wide
default pool. Loading failures become ``CallError``: UNAVAILABLE (retryable) when the service
could not be reached, FAILED_PRECONDITION (permanent) when the descriptors themselves are
missing or broken.

Method names resolve as ``pkg.Svc/Method``, ``pkg.Svc.Method`` or a bare ``Method`` that must be
unique across the target's application services. The infrastructure services every server may
add (``grpc.health.v1.Health``, ``grpc.reflection.*``) are reachable by their full names only, so
that their ``Check`` or ``Watch`` never makes an application's bare name ambiguous. An ambiguous
bare name is FAILED_PRECONDITION; a method or service that does not exist is UNIMPLEMENTED, the
code the server itself would answer. Both are permanent and list what does exist.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError, ResolutionError
from maestro_gateway.model.types import (
    DescriptorSource,
    ProtoFilesSource,
    ProtosetSource,
    ReflectionSource,
)
from maestro_gateway.transports.grpc.reflection import (
    INFRASTRUCTURE_SERVICE_PREFIXES,
    ReflectionError,
    fetch_descriptors,
)

PROTOC_TIMEOUT = 60.0
"""Upper bound of one ``protoc`` run, in seconds."""

_UNREACHABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def _precondition(message: str) -> CallError:
    return CallError(Code.FAILED_PRECONDITION, message, permanent=True)


def build_pool(
    files: Iterable[descriptor_pb2.FileDescriptorProto],
) -> descriptor_pool.DescriptorPool:
    """Add file descriptors to a new private pool, each after its dependencies.

    Raises:
        CallError: FAILED_PRECONDITION when a dependency is missing or a file is invalid.
    """
    by_name = {f.name: f for f in files}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in chain:
            raise _precondition(f"import cycle through {name!r}")
        proto = by_name.get(name)
        if proto is None:
            raise _precondition(f"descriptor file {chain[-1]!r} imports {name!r}, which is missing")
        for dep in proto.dependency:
            add(dep, (*chain, name))
        try:
            pool.Add(proto)
        except (TypeError, ValueError) as exc:
            raise _precondition(f"invalid descriptor file {name!r}: {exc}") from exc
        added.add(name)

    for name in by_name:
        add(name, ())
    return pool


class Descriptors:
    """The resolved schema of one downstream: a private pool and the services it serves.

    Args:
        pool: the pool holding every file.
        services: fully-qualified names of the target's services. An application service the
            pool cannot describe is an error; an infrastructure service (health, reflection)
            that it cannot describe is left out.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool, services: Iterable[str]) -> None:
        self.pool = pool
        self.services: dict[str, ServiceDescriptor] = {}
        """Every service described, infrastructure ones included (reachable by full name)."""
        self.application: dict[str, ServiceDescriptor] = {}
        """The services bare method names are resolved against."""
        for name in services:
            infrastructure = name.startswith(INFRASTRUCTURE_SERVICE_PREFIXES)
            try:
                service = pool.FindServiceByName(name)
            except KeyError as exc:
                if infrastructure:
                    continue
                raise _precondition(f"no descriptor for the service {name!r}") from exc
            self.services[name] = service
            if not infrastructure:
                self.application[name] = service
        self._methods: dict[tuple[str, str | None], MethodDescriptor] = {}

    def method(self, text: str, *, bare_skip: str | None = None) -> MethodDescriptor:
        """Resolve ``pkg.Svc/Method``, ``pkg.Svc.Method`` or a unique bare ``Method``.

        Args:
            text: the method as written.
            bare_skip: a service that bare names are not resolved against (full names still
                reach it): the envelope service when the envelope takes unresolved names.

        Raises:
            ResolutionError: UNIMPLEMENTED when nothing matches, FAILED_PRECONDITION when a
                bare name matches several methods; both permanent and listing the candidates.
        """
        key = (text, bare_skip)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = self._resolve(text.strip(), bare_skip)
        return found

    def _resolve(self, text: str, bare_skip: str | None) -> MethodDescriptor:
        if "/" in text:
            service_name, _, name = text.lstrip("/").partition("/")
        elif "." in text:
            service_name, _, name = text.rpartition(".")
        else:
            return self._resolve_bare(text, bare_skip)
        service = self.services.get(service_name)
        if service is None:
            try:
                service = self.pool.FindServiceByName(service_name)
            except KeyError:
                raise ResolutionError(
                    f"unknown service {service_name!r}; the target serves: "
                    f"{', '.join(sorted(self.services)) or 'nothing'}",
                    Code.UNIMPLEMENTED,
                ) from None
        method = service.methods_by_name.get(name)
        if method is None:
            raise ResolutionError(
                f"service {service_name!r} has no method {name!r}; its methods: "
                f"{', '.join(sorted(service.methods_by_name)) or 'none'}",
                Code.UNIMPLEMENTED,
            )
        return method

    def _resolve_bare(self, name: str, bare_skip: str | None) -> MethodDescriptor:
        searched = [s for n, s in self.application.items() if n != bare_skip]
        candidates = [s.methods_by_name[name] for s in searched if name in s.methods_by_name]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            listed = ", ".join(
                sorted(f"{m.containing_service.full_name}/{name}" for m in candidates)
            )
            raise ResolutionError(
                f"method name {name!r} is ambiguous: it matches {listed}; "
                "write it as pkg.Service/Method"
            )
        every = sorted(f"{s.full_name}/{m}" for s in searched for m in s.methods_by_name)
        infrastructure = sorted(
            f"{s.full_name}/{name}"
            for n, s in self.services.items()
            if n not in self.application and name in s.methods_by_name
        )
        hint = f" (call {' or '.join(infrastructure)} by its full name)" if infrastructure else ""
        raise ResolutionError(
            f"no service of the target has a method {name!r}; methods: "
            f"{', '.join(every) or 'none'}{hint}",
            Code.UNIMPLEMENTED,
        )


def _all_services(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    out: list[str] = []
    for f in files:
        prefix = f"{f.package}." if f.package else ""
        out.extend(f"{prefix}{s.name}" for s in f.service)
    return out


def _parse_set(data: bytes, origin: str) -> Descriptors:
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    except Exception as exc:  # the decoder raises its own DecodeError type
        raise _precondition(f"{origin} is not a FileDescriptorSet: {exc}") from exc
    files = list(fds.file)
    return Descriptors(build_pool(files), _all_services(files))


def load_protoset(path: str) -> Descriptors:
    """Load a FileDescriptorSet (``protoc --include_imports --descriptor_set_out``).

    Raises:
        CallError: FAILED_PRECONDITION when the file is unreadable or not a complete set.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _precondition(f"cannot read protoset {path}: {exc.strerror or exc}") from exc
    return _parse_set(data, f"protoset {path}")


def _well_known_include() -> str | None:
    try:
        import grpc_tools
    except ImportError:
        return None
    return str(Path(grpc_tools.__file__).parent / "_proto")


def _protoc_args(
    files: Sequence[str], import_paths: Sequence[str], well_known: str, out: str
) -> list[str]:
    includes = [os.path.abspath(p) for p in import_paths]
    paths = [os.path.abspath(f) for f in files]
    for path in paths:
        parent = os.path.dirname(path)
        if not any(os.path.commonpath([parent, i]) == i for i in includes):
            includes.append(parent)
    return [
        "-m",
        "grpc_tools.protoc",
        *(f"-I{i}" for i in includes),
        f"-I{well_known}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        *paths,
    ]


async def compile_protos(files: Sequence[str], import_paths: Sequence[str] = ()) -> Descriptors:
    """Compile ``.proto`` files with ``grpc_tools.protoc`` in a subprocess and load the result.

    A file's own directory is added to the import paths when no given path contains it; the
    well-known types bundled with grpcio-tools are always importable.

    Raises:
        CallError: FAILED_PRECONDITION carrying protoc's error text.
    """
    well_known = _well_known_include()
    if well_known is None:
        raise _precondition("compiling .proto files needs the grpcio-tools package")
    with tempfile.TemporaryDirectory(prefix="maestro-protoc-") as tmp:
        out = os.path.join(tmp, "set.pb")
        args = _protoc_args(files, import_paths, well_known, out)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), PROTOC_TIMEOUT)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            text = (stderr or stdout).decode(errors="replace").strip()
            raise _precondition(f"compiling {', '.join(files)} failed: {text or 'protoc failed'}")
        return _parse_set(await asyncio.to_thread(Path(out).read_bytes), "protoc output")


async def load_descriptors(
    source: DescriptorSource,
    channel: grpc.aio.Channel,
    *,
    target: str,
    rpc_timeout: float | None,
    metadata: Sequence[tuple[str, str | bytes]] = (),
    optional: bool = False,
) -> Descriptors | None:
    """Load a service's descriptors from its configured source.

    Args:
        source: where the descriptors come from.
        channel: a channel to the service (used by reflection only).
        target: the endpoint, for messages.
        rpc_timeout: bound of the reflection exchange, in seconds.
        metadata: sent with the reflection call.
        optional: return None, instead of failing, when the service serves no reflection.

    Returns:
        The descriptors; None only when ``optional`` and reflection is not served.

    Raises:
        CallError: UNAVAILABLE (retryable) when the service could not be reached,
            FAILED_PRECONDITION (permanent) when descriptors are missing or invalid.
    """
    if isinstance(source, ProtosetSource):
        return load_protoset(source.path)
    if isinstance(source, ProtoFilesSource):
        return await compile_protos(source.files, source.import_paths)
    assert isinstance(source, ReflectionSource)
    try:
        services, files = await fetch_descriptors(
            channel, rpc_timeout=rpc_timeout, metadata=metadata
        )
    except grpc.aio.AioRpcError as err:
        details = err.details() or err.code().name
        if err.code() in _UNREACHABLE:
            raise CallError(
                Code.UNAVAILABLE, f"cannot load descriptors from {target}: {details}"
            ) from err
        raise _precondition(
            f"reflection on {target} failed with {err.code().name}: {details}"
        ) from err
    except ReflectionError as exc:
        if optional and exc.not_served:
            return None
        hint = (
            "; configure `descriptors: {protoset: …}` or `{protos: […]}` for this service"
            if exc.not_served
            else ""
        )
        raise _precondition(f"reflection on {target}: {exc}{hint}") from exc
    return Descriptors(build_pool(files), services)
