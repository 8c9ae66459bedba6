"""DashboardSettings: everything the dashboard needs, built once by its owner and never mutated.

The dashboard reads no environment variable itself (style.md "Config"): the launcher builds the
settings from its `HostConfig` (see `DashboardSettings.from_host_config`) or a test builds them
directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hostcore.natsconn import NatsEndpoint
from hostcore.telemetry.metrics import metrics_dir
from hostcore.wire.subjects import DEFAULT_CTL_TOPIC_PREFIX

if TYPE_CHECKING:
    from hostcore.config import HostConfig

__all__ = ["DashboardSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardSettings:
    """Settings of one dashboard app.

    Attributes:
        nats_url: the NATS server the dashboard connects to (its own connection).
        lattice_prefix: the lattice it shows and drives.
        ctl_topic_prefix: control-interface subject prefix (protocol.md §2, `wasmbus.ctl`).
        timeout_s: deadline of each control request and of the readiness flush.
        token: when not empty, every route but `/api/livez` needs this access token.
        cluster_seed: cluster seed (`SC…`) that signs invocations from the invocation form;
            empty disables the form (it then answers with an error).
        host_timeout_s: a host not heard from (heartbeat or any event) for this long is dropped.
        discovery_wait_s: how long a `ping.hosts` / auction gathers replies.
        start_wait_s: how long a start/scale action waits for `actor_started` or
            `actor_start_failed`, so a failure can be shown in the modal that caused it.
        upload_dir: where uploaded actor modules are stored; hosts load them by `file://` ref.
        local_host_id: the host whose launcher runs this dashboard ("" if none): uploads start
            there, since that host loads files from its own `uploads/` even without file loading.
        max_upload_bytes: the largest actor module the upload form accepts.
        event_buffer: how many recent CloudEvents the events view keeps.
    """

    nats_url: str
    lattice_prefix: str = "default"
    ctl_topic_prefix: str = DEFAULT_CTL_TOPIC_PREFIX
    timeout_s: float = 2.0
    token: str = ""
    cluster_seed: str = ""
    host_timeout_s: float = 90.0
    discovery_wait_s: float = 1.0
    start_wait_s: float = 10.0
    upload_dir: Path = Path("uploads")
    local_host_id: str = ""
    metrics_dir: Path | None = None  # the host's Prometheus multiprocess dir: serve /metrics
    max_upload_bytes: int = 64 * 1024 * 1024
    event_buffer: int = 200
    ctl: NatsEndpoint | None = field(default=None, repr=False)  # credentials for nats_url, from the host

    def __post_init__(self) -> None:
        for name in ("timeout_s", "host_timeout_s", "discovery_wait_s", "start_wait_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DashboardSettings.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"DashboardSettings.max_upload_bytes must be positive, got {self.max_upload_bytes!r}")
        if self.event_buffer < 1:
            raise ValueError(f"DashboardSettings.event_buffer must be at least 1, got {self.event_buffer!r}")

    def __repr__(self) -> str:
        # Never show the token or the seed (style.md "Logging": no secrets in logs).
        return (f"DashboardSettings(nats_url={self.nats_url!r}, lattice_prefix={self.lattice_prefix!r}, "
                f"token={'set' if self.token else 'unset'}, cluster_seed={'set' if self.cluster_seed else 'unset'})")

    @classmethod
    def from_host_config(cls, config: HostConfig, *, token: str = "", host_timeout_s: float | None = None
                         ) -> DashboardSettings:
        """Settings for the dashboard a host node serves: same NATS, lattice and cluster key;
        uploads under the host's data dir, started on that host; hosts dropped after three missed heartbeats."""
        return cls(nats_url=config.nats_url, ctl=config.ctl, lattice_prefix=config.lattice_prefix,
                   ctl_topic_prefix=config.ctl_topic_prefix, timeout_s=max(config.rpc_timeout_s, 2.0),
                   token=token, cluster_seed=config.cluster_key.seed,
                   host_timeout_s=host_timeout_s or 3 * config.heartbeat_interval_s,
                   upload_dir=config.uploads_dir, local_host_id=config.host_id,
                   metrics_dir=metrics_dir(config) if config.telemetry.metrics else None)
