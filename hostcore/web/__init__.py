"""The web dashboard (the OTP host's `wasmcloud_host_web`): an ASGI app that drives its lattice
over the control interface and shows it live from lattice events."""

from hostcore.web.app import Dashboard, create_app
from hostcore.web.server import DashboardServer
from hostcore.web.settings import DashboardSettings

__all__ = ["Dashboard", "DashboardServer", "DashboardSettings", "create_app"]
