"""The gateway gRPC server: ``maestro.v1.Gateway``, reflection, health, lifecycle (DESIGN §5)."""

from maestro_gateway.server.app import GatewayServer, TLSFiles, create_gateway
from maestro_gateway.server.registry import WorkflowRegistry, load_directory, validate_source
from maestro_gateway.server.runs import Runs
from maestro_gateway.server.service import GatewayService, forwarded_metadata

__all__ = [
    "GatewayServer",
    "GatewayService",
    "Runs",
    "TLSFiles",
    "WorkflowRegistry",
    "create_gateway",
    "forwarded_metadata",
    "load_directory",
    "validate_source",
]
