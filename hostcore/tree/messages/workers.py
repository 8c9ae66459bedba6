"""Messages about worker nodes (the Thespian convention, hostcore/worker.py).

Frozen dataclasses, pickled between processes by Thespian."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


__all__ = [
    "InstanceEvicted",
    "ModuleImage",
    "StartWorkerWatch",
    "WorkerJoined",
    "WorkerLeft",
    "WorkerStopping",
    "WorkerWatching",
]

# --- worker nodes (Thespian convention; hostcore/worker.py) -----------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleImage:
    """ActorSupervisor → an ActorModule on a worker, just before StartInstance or SwapModule: the
    bytes of the .cwasm at `cwasm_path`, which lives in the host's cache and may not exist on the
    worker's machine."""

    cwasm_path: Path
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceEvicted:
    """ActorModule → ActorSupervisor: someone other than the supervisor (a worker's admin shutting
    down) told this instance to exit. The supervisor starts a replacement elsewhere at once and
    places nothing more on that worker."""

    instance_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartWorkerWatch:
    """Worker launcher → WorkerWatch: watch the launcher (`launcher_pid`) and the convention.
    Replied with WorkerWatching; later WorkerJoined / WorkerLeft arrive as the host comes and goes."""

    launcher_pid: int
    worker_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerWatching:
    admin_pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerJoined:
    """The host's admin answered this worker's convention registration."""

    host_id: str
    host_admin: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLeft:
    """The host's admin stopped answering (or left); `dropped` instance processes were ended."""

    host_id: str
    host_admin: str
    dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStopping:
    """Worker launcher → WorkerWatch, just before ActorSystem.shutdown(): the coming loss of the
    host is our own doing; let the admin stop the instances gracefully instead of killing them."""
