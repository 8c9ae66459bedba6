"""Where an actor instance runs: this host, or a worker that joined its Thespian convention.

Workers (hostcore/worker.py) are Thespian admins whose capabilities carry `hostcore.worker_id`.
ActorSupervisor learns about them from ActorSystemConventionUpdate, picks a node here, and asks
Thespian for `createActor(ActorModule, requirements_for(worker_id))`: the host's admin cannot meet
the requirement, so it forwards the creation to the one worker whose capabilities pass
`capability_check`, and that worker's admin forks the instance.

Pure logic only: no Thespian calls, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hostcore.config import Placement

__all__ = [
    "HOST",
    "HOST_CAPABILITY",
    "HOST_ID_CAPABILITY",
    "WORKER_CAPABILITY",
    "WORKER_ID_CAPABILITY",
    "WORKER_LABELS_CAPABILITY",
    "WorkerNode",
    "capability_check",
    "choose_node",
    "requirements_for",
    "worker_from_capabilities",
]

HOST = ""  # the node id of the supervising host itself

# Capability keys (Thespian capabilities are a plain dict shared by the whole convention).
HOST_CAPABILITY = "hostcore.host"  # True on a host's admin (the convention leader)
HOST_ID_CAPABILITY = "hostcore.host_id"  # the host's id, on its admin
WORKER_CAPABILITY = "hostcore.worker"  # True on a worker's admin
WORKER_ID_CAPABILITY = "hostcore.worker_id"
WORKER_LABELS_CAPABILITY = "hostcore.labels"


@dataclass(slots=True, kw_only=True)
class WorkerNode:
    """A worker as ActorSupervisor sees it. `draining`: it is shutting down (an instance there was
    told to exit by its admin), so nothing new goes there. `suspect_until` (time.monotonic()): an
    instance could not be started there; the supervisor skips it until then."""

    worker_id: str
    admin_address: Any
    labels: dict[str, str]
    draining: bool = False
    suspect_until: float = 0.0


def worker_from_capabilities(admin_address: Any, capabilities: Mapping[str, Any]) -> WorkerNode | None:
    """The worker described by a convention member's capabilities, or None if it is not one."""
    if not capabilities.get(WORKER_CAPABILITY) or not capabilities.get(WORKER_ID_CAPABILITY):
        return None
    labels = capabilities.get(WORKER_LABELS_CAPABILITY) or {}
    return WorkerNode(worker_id=str(capabilities[WORKER_ID_CAPABILITY]), admin_address=admin_address,
                      labels={str(k): str(v) for k, v in dict(labels).items()})


def requirements_for(node: str) -> dict[str, str] | None:
    """`targetActorRequirements` that pin an instance to `node`; None (no requirement) for HOST,
    which makes Thespian fork the instance locally as before."""
    return None if node == HOST else {WORKER_ID_CAPABILITY: node}


def capability_check(capabilities: Mapping[str, Any], requirements: Mapping[str, Any] | None) -> bool:
    """ActorModule.actorSystemCapabilityCheck: an instance pinned to a worker runs only there;
    an unpinned one runs anywhere (in practice on the host, where createActor tries first)."""
    wanted = (requirements or {}).get(WORKER_ID_CAPABILITY)
    return wanted is None or capabilities.get(WORKER_ID_CAPABILITY) == wanted


def choose_node(policy: Placement, workers: Iterable[WorkerNode], load: Mapping[str, int],
                key_load: Mapping[str, int]) -> str:
    """The node for one new instance: HOST or a worker id.

    `load` counts live instances per node, `key_load` those of the actor being started. Among the
    eligible nodes the one with the fewest instances of this actor wins, then the one with the
    fewest instances overall, then (for determinism) the host, then the lowest worker id. Draining
    workers are never eligible. WORKERS falls back to HOST when no worker is eligible, so a lost
    worker's instances still find a home.
    """
    if policy is Placement.LOCAL:
        return HOST
    candidates = sorted(w.worker_id for w in workers if not w.draining)
    if policy is Placement.SPREAD or not candidates:
        candidates.insert(0, HOST)
    return min(candidates, key=lambda n: (key_load.get(n, 0), load.get(n, 0), n != HOST, n))
