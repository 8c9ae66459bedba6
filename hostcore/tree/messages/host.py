"""Messages between the launcher, the HostSupervisor and the roles it wires: start, stop, readiness, and the events LatticeEvents publishes.

Frozen dataclasses, pickled between processes by Thespian."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hostcore.config import HostConfig
from hostcore.wire.cloudevents import Event

__all__ = [
    "HostFailed",
    "HostReady",
    "HostStopped",
    "InitActorSupervisor",
    "InitControl",
    "InitEvents",
    "InitFailed",
    "InitNative",
    "InitSupervisor",
    "PublishEvent",
    "PublishEvents",
    "Ready",
    "SendHeartbeat",
    "StartHost",
    "StopHost",
]

# --- launcher <-> HostSupervisor ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StartHost:
    """Launcher → HostSupervisor: build the tree. Replied with HostReady or HostFailed."""

    config: HostConfig
    launcher_pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HostReady:
    host_id: str
    admin_pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFailed:
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StopHost:
    """To HostSupervisor: purge, publish host_stopped, then tell the launcher HostStopped."""

    reason: str = "stop requested"


@dataclass(frozen=True, slots=True, kw_only=True)
class HostStopped:
    host_id: str


# --- wiring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InitEvents:
    """HostSupervisor → LatticeEvents: connect and start heartbeats. Replied with Ready."""

    config: HostConfig
    actor_supervisor: Any
    provider_supervisor: Any
    started_at: float = 0.0  # the host's start (uptime survives a restart of this role)
    restart: int = 0  # how many times this role was restarted before (0: the host's start)


@dataclass(frozen=True, slots=True, kw_only=True)
class InitNative:
    config: HostConfig
    restart: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InitSupervisor:
    """What both process-owning supervisors start with. `restore`: what their predecessor
    recorded (hostcore/supervision.py): processes to adopt or replace, starts in flight."""

    config: HostConfig
    events: Any
    native: Any
    lattice: Any
    restart: int = 0
    restore: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class InitActorSupervisor(InitSupervisor):
    """HostSupervisor → ActorSupervisor."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InitControl:
    config: HostConfig
    host_supervisor: Any
    actor_supervisor: Any
    provider_supervisor: Any
    events: Any
    lattice: Any
    native: Any
    started_at: float = 0.0
    restart: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InitFailed:
    role: str
    error: str


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishEvent:
    """To LatticeEvents: publish a CloudEvent `com.wasmcloud.lattice.{event_type}`."""

    event_type: str
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> PublishEvent:
        return cls(event_type=event.type, data=event.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishEvents:
    """To LatticeEvents: several PublishEvent at once, published in this order."""

    events: tuple[PublishEvent, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendHeartbeat:
    """To LatticeEvents: publish a host_heartbeat now (after a ping)."""
