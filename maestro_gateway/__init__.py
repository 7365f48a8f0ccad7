"""maestro-gateway: a gRPC-native orchestration gateway.

Layers, inner to outer (an inner layer never imports an outer one): ``model`` (the workflow
definition and its loader), ``expr`` (templates and CEL), ``resilience`` (retry, breaker,
deadlines), ``transports`` (gRPC and HTTP), ``engine`` (one execution), ``server`` and ``cli``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
