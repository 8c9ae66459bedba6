"""ActorSupervisor's side of worker nodes: placing instances on the workers that joined this
host's Thespian convention (HOSTCORE_PLACEMENT=workers|spread; hostcore/worker.py), and moving
them when a worker is lost or drains.

Thespian reports a worker's arrival and loss as ActorSystemConventionUpdate; it does *not* send
ChildActorExited for instances on a worker that died (thespian 4.0.1 never fills
ConventionMemberData.hasRemoteActors), so a lost worker's instances are restarted from the update.
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorExitRequest, ActorSystemConventionUpdate

from hostcore.actors.placement import HOST, choose_node, worker_from_capabilities
from hostcore.config import Placement
from hostcore.tree.messages import InstanceEvicted

if TYPE_CHECKING:
    from hostcore.actors.supervisor import ActorSupervisor

__all__ = ["WorkerNodes"]

log = logging.getLogger(__name__)


class WorkerNodes:
    """Mixin of ActorSupervisor: where an instance runs, and what happens when a worker goes."""

    def _place(self: ActorSupervisor, public_key: str) -> str:
        assert self.config is not None
        if self.config.placement is Placement.LOCAL:  # no per-start scan of every instance
            return HOST
        load: collections.Counter[str] = collections.Counter()
        key_load: collections.Counter[str] = collections.Counter()
        for i in self.instances.values():
            if i.live:
                load[i.node] += 1
                key_load[i.node] += i.public_key == public_key
        now = time.monotonic()
        workers = [w for w in self.workers.values() if w.suspect_until <= now]
        return choose_node(self.config.placement, workers, load, key_load)

    @staticmethod
    def _module_image(cwasm_path: Path) -> bytes:
        """The compiled module for a worker, which may be on another machine (~0.7 MB for echo)."""
        return cwasm_path.read_bytes()

    def receiveMsg_ActorSystemConventionUpdate(self: ActorSupervisor, msg: ActorSystemConventionUpdate, sender: Any) -> None:
        worker = worker_from_capabilities(msg.remoteAdminAddress, msg.remoteCapabilities)
        if worker is None:
            return
        if msg.remoteAdded:
            known = self.workers.get(worker.worker_id)
            if known is None or known.draining:
                log.info("worker joined", extra={"worker_id": worker.worker_id, "labels": worker.labels,
                                                 "admin": str(msg.remoteAdminAddress)})
            self.workers[worker.worker_id] = worker
            return
        self.workers.pop(worker.worker_id, None)
        lost = [i for i in self.instances.values() if i.node == worker.worker_id]
        log.warning("worker lost", extra={"worker_id": worker.worker_id, "instances": len(lost)})
        for inst in lost:
            # If the worker is in fact alive (a missed check-in), make sure it drops the old copy.
            self.send(inst.address, ActorExitRequest())
            self._instance_exited(inst, "worker lost, restarting its instance elsewhere", counted=False)

    def receiveMsg_InstanceEvicted(self: ActorSupervisor, msg: InstanceEvicted, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        if inst is None or inst.node == HOST:
            return
        worker = self.workers.get(inst.node)
        if worker is not None and not worker.draining:
            worker.draining = True
            log.info("worker draining", extra={"worker_id": worker.worker_id})
        self._instance_exited(inst, "worker shutting down, moving its instance", counted=False)
