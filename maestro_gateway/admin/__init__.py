"""The admin HTTP port: metrics, health probes and the live view (DESIGN §14)."""

from maestro_gateway.admin.server import PATHS, AdminServer, readiness
from maestro_gateway.admin.view import MAX_STREAMS, LiveView

__all__ = ["MAX_STREAMS", "PATHS", "AdminServer", "LiveView", "readiness"]
