"""The one error hierarchy of maestro-gateway.

::

    MaestroError
    ├── DefinitionError            a workflow file is wrong; carries every Diagnostic
    └── ExecutionError             something failed while running; carries a gRPC Code
        ├── CallError              a downstream call failed (transports map foreign errors to it)
        │   └── CircuitOpenError   refused at once by an open circuit breaker
        ├── EvaluationError        a template/expression failed at run time
        └── ResolutionError        a method could not be resolved against the service's schema

Definition errors are about the file and carry positions; execution errors are about a run and
carry a status code. Transports translate grpc/httpx exceptions into ``CallError`` exactly once,
at their boundary: nothing above them sees a foreign exception or asks for ``grpc.StatusCode``.
"""

from __future__ import annotations

from dataclasses import dataclass

from maestro_gateway.codes import Code


class MaestroError(Exception):
    """Base of every error raised on purpose by maestro-gateway."""


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One problem in a workflow file, at a 1-based line and column.

    ``severity`` is ``error``, or ``warning`` for a problem that does not stop the file from
    loading where it is checked (an unset environment variable under ``maestro validate``).
    """

    file: str
    line: int
    column: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        warning = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.column}: {warning}{self.message}"


class DefinitionError(MaestroError):
    """A workflow definition is invalid; ``diagnostics`` lists every problem found, in order."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class ExecutionError(MaestroError):
    """A failure while executing, with the gRPC code reported to the caller.

    Attributes:
        code: the gRPC status code of the failure.
        message: a human-readable message naming what failed.
        permanent: when true the failure is never retried, whatever the retry policy says
            (an ambiguous method name, a request that cannot be built, an open breaker).
        retry_after: the delay in seconds the service asked for before the next attempt
            (google.rpc.RetryInfo or an HTTP Retry-After header), if any.
    """

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class CallError(ExecutionError):
    """A downstream call failed: raised by transports (mapping the foreign error) and the engine."""


class CircuitOpenError(CallError):
    """The circuit breaker of the endpoint is open: the call was refused without network traffic."""

    def __init__(self, endpoint: str, retry_in: float) -> None:
        super().__init__(
            Code.UNAVAILABLE,
            f"circuit breaker for {endpoint} is open (next probe in {retry_in:.3g}s)",
            permanent=True,
        )
        self.endpoint = endpoint


class EvaluationError(ExecutionError):
    """A template or expression failed at run time (a missing field, a type mismatch).

    Attributes:
        expression: the source text of the failing expression.
        where: what was being rendered, e.g. ``input.sku`` or ``when``; filled in by callers
            that know it, so the message can name the field.
    """

    def __init__(self, expression: str, reason: str, *, where: str = "") -> None:
        self.expression = expression
        self.reason = reason
        self.where = where
        field = f" in {where}" if where else ""
        super().__init__(
            Code.INVALID_ARGUMENT,
            f"evaluating {{{{ {expression} }}}}{field}: {reason}",
            permanent=True,
        )

    def within(self, field: str) -> EvaluationError:
        """This error with ``field`` prefixed to the path being rendered (``input.items[0].sku``)."""
        if not self.where:
            where = field
        elif self.where.startswith("["):
            where = f"{field}{self.where}"
        else:
            where = f"{field}.{self.where}"
        return EvaluationError(self.expression, self.reason, where=where)


class ResolutionError(ExecutionError):
    """A method or message field could not be resolved against the service's descriptors."""

    def __init__(self, message: str, code: Code = Code.FAILED_PRECONDITION) -> None:
        super().__init__(code, message, permanent=True)
