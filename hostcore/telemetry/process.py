"""The telemetry one host process owns: its tracer, its metric objects, its log context.

Every node of the tree runs in its own OS process (Thespian forks each actor from its parent),
so each sets its telemetry up for itself in its init handler, after the fork:
`self.telemetry = open_process(msg.config, role="control")`. What a forked child inherited from
its parent (a provider, metric objects) is never used by the child.

One per process, by nature: a tracer provider owns the process's exporter, and prometheus_client
keeps one mmap'd file per process and metric type. `open_process` therefore returns the same
object when called again in the same process, and `process_metrics()` lets code without an owner
at hand (the NATS callbacks in hostcore/tree/bridge.py) find the process's metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.trace import Tracer

from hostcore.telemetry.logcontext import install_log_context
from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics, metrics_dir, preload_client
from hostcore.telemetry.settings import TelemetrySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from hostcore.config import HostConfig

__all__ = ["ProcessTelemetry", "connection_role", "count_reconnect", "open_process", "preload", "process_metrics"]


@dataclass(slots=True, kw_only=True)
class ProcessTelemetry:
    """`tracer` is None when tracing is off, `metrics` None when metrics are off."""

    settings: TelemetrySettings
    pid: int
    tracer: Tracer | None = None
    metrics: HostMetrics | None = None
    provider: TracerProvider | None = field(default=None, repr=False)

    def flush(self) -> None:
        """Export spans still queued (OTLP batches; the file exporter writes at once)."""
        if self.provider is not None and self.pid == os.getpid():
            self.provider.force_flush(2000)

    def close(self) -> None:
        """Flush and shut the exporters down; idempotent, and a no-op in a forked child."""
        provider, self.provider, self.tracer = self.provider, None, None
        if provider is not None and self.pid == os.getpid():
            provider.shutdown()


_OFF = TelemetrySettings(metrics=False)
# The process's telemetry (see the module docstring for why it is per process).
_process: ProcessTelemetry | None = None


def open_process(config: HostConfig | None, *, role: str, forks: bool = False, **log_fields: str) -> ProcessTelemetry:
    """Set up (once per process) and return this process's telemetry for `config`.

    Args:
        role: the tree node ("control", "actor", …), a resource attribute of its spans.
        forks: the process creates children (ActorSupervisor): no exporter threads.
        log_fields: added to the host context of every log record (actor_key, instance_id).

    A None config (unit tests that build a role without its init message) gives telemetry off.
    """
    global _process
    pid = os.getpid()
    settings = getattr(config, "telemetry", None) or _OFF
    if config is not None:
        install_log_context(host_id=config.host_id, lattice=config.lattice_prefix, **log_fields)
    if _process is not None and _process.pid == pid:
        return _process
    telemetry = ProcessTelemetry(settings=settings, pid=pid)
    if config is not None and settings.tracing:
        from hostcore.telemetry.provider import new_provider  # the SDK: only where tracing is on

        telemetry.provider = new_provider(settings, {"hostcore.host_id": config.host_id,
                                                     "hostcore.lattice": config.lattice_prefix,
                                                     "hostcore.role": role, "service.instance.id": config.host_id},
                                          forks=forks)
        telemetry.tracer = telemetry.provider.get_tracer("hostcore")
    if config is not None and settings.metrics:
        # The launcher of this machine prepared the directory and exported it; a process whose
        # launcher did not (a worker node's instance, a tree built by a test) records nothing.
        directory = Path(os.environ.get(MULTIPROC_ENV) or metrics_dir(config))
        if directory.is_dir():
            telemetry.metrics = HostMetrics(directory)
    _process = telemetry
    return telemetry


def preload(settings: TelemetrySettings) -> None:
    """Import what `open_process` imports on first use with `settings`. For a process that forks
    children which open their own telemetry (the instance template): imported once there, the
    libraries are shared with every child, instead of imported again after each fork (for
    prometheus_client alone, an echo instance took ~50 ms of CPU to start instead of ~10)."""
    if settings.metrics:
        preload_client()
    if settings.tracing:
        from hostcore.telemetry.provider import preload_exporters

        preload_exporters(settings)


def process_metrics() -> HostMetrics | None:
    """This process's metrics, if `open_process` set them up here (not in a parent)."""
    if _process is None or _process.pid != os.getpid():
        return None
    return _process.metrics


def connection_role(name: str) -> str:
    """The metric label of a NATS connection name: `hostcore-actor-MBCF…-1a2b` → `actor`."""
    parts = name.split("-")
    return parts[1] if len(parts) > 1 and parts[0] == "hostcore" else name


def count_reconnect(name: str) -> None:
    """A NATS connection of this process (named `name`) was re-established."""
    metrics = process_metrics()
    if metrics is not None:
        metrics.nats_reconnect(connection_role(name))
