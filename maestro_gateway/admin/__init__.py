"""The admin HTTP port: metrics and health probes (DESIGN §14)."""

from maestro_gateway.admin.server import PATHS, AdminServer, readiness

__all__ = ["PATHS", "AdminServer", "readiness"]
