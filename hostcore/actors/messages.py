"""Thespian messages between the nodes of the supervision tree.

Frozen dataclasses, pickled between processes by Thespian. Field names follow the wire where a
message mirrors a control request. Map fields are plain dicts nobody mutates after construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostcore.config import HostConfig
from hostcore.native.claims import ActorClaims
from hostcore.wire.cloudevents import Event

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
class InitActorSupervisor:
    """`restore`: what the previous ActorSupervisor recorded (hostcore/supervision.py): instances
    to adopt or replace, starts it had in flight."""

    config: HostConfig
    events: Any
    native: Any
    lattice: Any
    restart: int = 0
    restore: tuple[Any, ...] = ()


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
class SendHeartbeat:
    """To LatticeEvents: publish a host_heartbeat now (after a ping)."""


# --- ActorSupervisor ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleActor:
    """Run `count` instances of `actor_id`; `actor_ref` may be "" (then a running instance's ref)."""

    actor_id: str
    actor_ref: str
    count: int
    trace: dict[str, str] = field(default_factory=dict)  # W3C carrier (hostcore.telemetry.tracing)


@dataclass(frozen=True, slots=True, kw_only=True)
class StartActor:
    """Start `count` more instances from `actor_ref` (control `la`)."""

    actor_ref: str
    count: int
    annotations: dict[str, str] = field(default_factory=dict)
    trace: dict[str, str] = field(default_factory=dict)  # W3C carrier (hostcore.telemetry.tracing)


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminateActor:
    """Halt `count` instances (0 = all) matching `annotations`; replied with Done(request_id)."""

    actor_id: str
    count: int
    annotations: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    trace: dict[str, str] = field(default_factory=dict)  # W3C carrier (hostcore.telemetry.tracing)


@dataclass(frozen=True, slots=True, kw_only=True)
class Purge:
    """Halt everything; replied with Done(request_id) once every instance has exited."""

    request_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetInventory:
    request_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceInfo:
    public_key: str
    instance_id: str
    image_ref: str
    name: str
    revision: int
    annotations: dict[str, str]
    claims_record: dict[str, Any]  # protocol.md §5.7, for get.claims


@dataclass(frozen=True, slots=True, kw_only=True)
class Inventory:
    request_id: str
    instances: tuple[InstanceInfo, ...]


# --- native worker -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareActor:
    """To NativeWorker: fetch `actor_ref`, verify its claims, compile it. Replied with
    ActorPrepared or PrepareFailed carrying the same `request_id`."""

    actor_ref: str
    request_id: str
    trace: dict[str, str] = field(default_factory=dict)  # W3C carrier (hostcore.telemetry.tracing)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorPrepared:
    request_id: str
    actor_ref: str
    claims: ActorClaims
    cwasm_path: Path
    byte_size: int = 0  # of the fetched module ("OCI image fetched")


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareFailed:
    request_id: str
    actor_ref: str
    error: str


# --- ActorModule (one instance) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StartInstance:
    """ActorSupervisor → ActorModule: load the module, subscribe, serve. Replied with
    InstanceStarted or InstanceFailed."""

    config: HostConfig
    claims: ActorClaims
    cwasm_path: Path
    image_ref: str
    instance_id: str
    annotations: dict[str, str]
    snapshot: LatticeSnapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceStarted:
    instance_id: str
    api_version: int
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceFailed:
    instance_id: str
    error: str


# --- live update (protocol.md §2.3 `upd`, §11.6) -------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateActor:
    """Swap every instance of `actor_id` to the module at `new_actor_ref`; replied with
    UpdateDone(request_id, error) once every instance has answered."""

    actor_id: str
    new_actor_ref: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateDone:
    request_id: str
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapModule:
    """ActorSupervisor → ActorModule: serve `claims` from `cwasm_path` from now on (same key)."""

    claims: ActorClaims
    cwasm_path: Path
    image_ref: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleSwapped:
    instance_id: str
    error: str = ""  # "" = swapped


# --- registries (protocol.md §2.4 registries.put) -------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PutRegistryCredentials:
    """To NativeWorker: merge these OCI credentials (registry host → credentials)."""

    credentials: dict[str, Any]


# --- lattice cache (protocol.md §12) -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InitLattice:
    config: HostConfig
    actor_supervisor: Any
    provider_supervisor: Any
    restart: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PutClaims:
    """To LatticeCache: publish an actor's claims record (§5.7) lattice-wide."""

    record: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class PutRefmap:
    actor_ref: str
    public_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PutLink:
    link: Any  # LinkDefinition
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DelLink:
    actor_id: str
    contract_id: str
    link_name: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetLatticeData:
    """To LatticeCache: `kind` is "links" or "claims"; replied with LatticeData."""

    kind: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LatticeData:
    request_id: str
    items: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LatticeSnapshot:
    """LatticeCache → ActorSupervisor → every ActorModule: what outbound host calls resolve
    against (protocol.md §4.10): link definitions and the call-alias table."""

    links: tuple[Any, ...] = ()  # LinkDefinition
    aliases: dict[str, str] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # only when policy is on


# --- providers (protocol.md §2.3 lp/sp, §11.7) ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InitProviderSupervisor:
    """`restore`: the provider modules the previous ProviderSupervisor recorded."""

    config: HostConfig
    events: Any
    native: Any
    lattice: Any
    restart: int = 0
    restore: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StartProvider:
    """Control `lp`; replied at once with StartProviderAck (duplicates refused there)."""

    provider_ref: str
    link_name: str
    configuration: str
    annotations: dict[str, str]
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartProviderAck:
    request_id: str
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StopProvider:
    """Control `sp`: shutdown request, grace, kill; replied with Done once the process is gone."""

    provider_id: str
    link_name: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareProvider:
    """To NativeWorker: fetch and verify the PAR at `provider_ref`, extract this host's binary."""

    provider_ref: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderPrepared:
    request_id: str
    provider_ref: str
    claims: Any  # hostcore.providers.par.ProviderClaims
    binary: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class StartProviderProcess:
    """ProviderSupervisor → ProviderModule: spawn the executable with this host data."""

    config: HostConfig
    claims: Any
    binary: Path
    link_name: str
    instance_id: str
    image_ref: str
    annotations: dict[str, str]
    config_json: str
    links: tuple[Any, ...]  # LinkDefinition, known at spawn
    events: Any = None  # LatticeEvents: health events go out on the control connection (protocol.md §1.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderStarted:
    instance_id: str
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderFailed:
    instance_id: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderInfo:
    public_key: str
    link_name: str
    contract_id: str
    instance_id: str
    image_ref: str
    name: str
    revision: int
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderInventory:
    request_id: str
    providers: tuple[ProviderInfo, ...]


# --- policy (protocol.md §9) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateStart:
    """To LatticeCache: may this host start it? `claims` is ActorClaims (actor) or
    ProviderClaims (provider, with `link_name`). Replied with PolicyVerdict."""

    claims: Any
    request_id: str
    link_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVerdict:
    request_id: str
    permitted: bool
    message: str


# --- worker nodes (issue 6: Thespian convention; hostcore/worker.py) -----------------------------


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


__all__ = [
    "ActorPrepared",
    "DelLink",
    "Done",
    "EvaluateStart",
    "GetInventory",
    "GetLatticeData",
    "HostFailed",
    "HostReady",
    "HostStopped",
    "InitActorSupervisor",
    "InitControl",
    "InitEvents",
    "InitFailed",
    "InitLattice",
    "InitNative",
    "InitProviderSupervisor",
    "InstanceEvicted",
    "InstanceFailed",
    "InstanceInfo",
    "InstanceStarted",
    "Inventory",
    "LatticeData",
    "LatticeSnapshot",
    "ModuleImage",
    "ModuleSwapped",
    "PolicyVerdict",
    "PrepareActor",
    "PrepareFailed",
    "PrepareProvider",
    "ProviderFailed",
    "ProviderInfo",
    "ProviderInventory",
    "ProviderPrepared",
    "ProviderStarted",
    "PublishEvent",
    "Purge",
    "PutClaims",
    "PutLink",
    "PutRefmap",
    "PutRegistryCredentials",
    "Ready",
    "ScaleActor",
    "SendHeartbeat",
    "StartActor",
    "StartHost",
    "StartInstance",
    "StartProvider",
    "StartProviderAck",
    "StartProviderProcess",
    "StartWorkerWatch",
    "StopHost",
    "StopProvider",
    "SwapModule",
    "TerminateActor",
    "UpdateActor",
    "UpdateDone",
    "WorkerJoined",
    "WorkerLeft",
    "WorkerStopping",
    "WorkerWatching",
]
