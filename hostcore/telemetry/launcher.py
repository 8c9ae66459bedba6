"""The launcher's share of telemetry (architecture.md P0): before the ActorSystem forks anything,
the metrics directory and the host's log context; after it, the optional /metrics server."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hostcore.telemetry.logcontext import install_log_context
from hostcore.telemetry.metrics import MetricsServer, metrics_dir, preload_client, prepare_metrics_dir

if TYPE_CHECKING:
    from hostcore.config import HostConfig

__all__ = ["LauncherTelemetry"]

log = logging.getLogger(__name__)


class LauncherTelemetry:
    """Owned by `run_node`. Create it before the ActorSystem: it empties the metrics directory,
    exports PROMETHEUS_MULTIPROC_DIR and imports prometheus_client, which every process of the
    tree inherits. Call `serve()` once the ActorSystem exists (it may start a thread) and
    `close()` on exit (idempotent)."""

    def __init__(self, config: HostConfig) -> None:
        self.settings = config.telemetry
        install_log_context(host_id=config.host_id, lattice=config.lattice_prefix)
        self.metrics_dir: Path | None = metrics_dir(config) if self.settings.metrics else None
        if self.metrics_dir is not None:
            prepare_metrics_dir(self.metrics_dir, os.environ)
            preload_client()
        self.server: MetricsServer | None = None

    def serve(self) -> None:
        """Serve /metrics on 127.0.0.1:HOSTCORE_METRICS_PORT, if metrics are on and a port is set."""
        if self.metrics_dir is None or not self.settings.metrics_port or self.server is not None:
            return
        self.server = MetricsServer(self.metrics_dir, self.settings.metrics_port)
        log.info("metrics served", extra={"url": self.server.url})

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
