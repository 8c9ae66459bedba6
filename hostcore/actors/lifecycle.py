"""ActorSupervisor's side of an instance's life after the start was issued (a mixin): it started
(announced with actor_started), failed, or is gone, and is then restarted if nobody asked it to
stop, within the restart intensity (OTP's one-for-one DynamicSupervisor).

This host's instances are reported by the InstanceTemplate (`InstancesExited`); those on workers
are ActorSupervisor's own Thespian children (`ChildActorExited`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorExitRequest, ChildActorExited

from hostcore.actors.placement import HOST
from hostcore.actors.records import InstanceRecord
from hostcore.tree.messages import InstanceFailed, InstanceReports, InstancesExited, InstanceStarted, ToInstances
from hostcore.wire import cloudevents

if TYPE_CHECKING:
    from hostcore.actors.supervisor import ActorSupervisor

__all__ = ["InstanceLifecycle"]

log = logging.getLogger(__name__)


class InstanceLifecycle:
    """Mixin of ActorSupervisor (listed before ActorTypeDispatcher)."""

    def receiveMsg_InstanceStarted(self: ActorSupervisor, msg: InstanceStarted, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        if inst is None:  # replaced meanwhile: it must not serve
            self._halt_unknown(msg.instance_id, sender)
            return
        if inst.state == "starting":
            self._announce(inst, msg.api_version, msg.pid)

    def _announce(self: ActorSupervisor, inst: InstanceRecord, api_version: int, pid: int) -> None:
        inst.state, inst.pid = "running", pid
        self._remember(inst)
        self.telemetry.instance_started(inst.instance_id, pid)
        self._count(inst.public_key)
        log.info("actor started", extra={"actor_key": inst.public_key, "instance_id": inst.instance_id,
                                         "pid": pid, "node": inst.node or "host"})
        self._event(cloudevents.actor_started(
            public_key=inst.public_key, image_ref=inst.image_ref, api_version=api_version,
            instance_id=inst.instance_id, annotations=inst.annotations, claims=inst.claims.to_event_claims()))
        if inst.image_ref:  # OTP: once per instance, after its actor_started
            self._event(cloudevents.refmap_set(inst.image_ref, inst.public_key))
        self.batches.instance_started(inst.instance_id)

    def receiveMsg_InstanceFailed(self: ActorSupervisor, msg: InstanceFailed, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        if inst is None:
            return
        inst.state = "failed"
        self.telemetry.instance_failed(inst.instance_id, msg.error)
        log.error("actor instance failed to start", extra={"actor_key": inst.public_key, "error": msg.error})
        # protocol.md §3.3: an instantiation failure reports the public key as actor_ref.
        self._event(cloudevents.actor_start_failed(inst.public_key, msg.error))
        self.batches.instance_failed(inst.instance_id, msg.error)
        self._tell([inst], ActorExitRequest())

    def receiveMsg_InstanceReports(self: ActorSupervisor, msg: InstanceReports, sender: Any) -> None:
        for report in msg.reports:
            getattr(self, f"receiveMsg_{type(report).__name__}")(report, sender)

    def receiveMsg_InstancesExited(self: ActorSupervisor, msg: InstancesExited, sender: Any) -> None:
        for instance_id in msg.instance_ids:
            inst = self.instances.get(instance_id)
            if inst is not None and self._forked(inst):
                self._instance_exited(inst, "actor instance died, restarting", counted=True)
            elif instance_id in self.strays:
                self._forget(instance_id, pid=self.strays.pop(instance_id))

    def receiveMsg_ChildActorExited(self: ActorSupervisor, msg: ChildActorExited, sender: Any) -> None:
        # An instance on a worker (Thespian addresses are not hashable, hence the scan). A worker's
        # admin forwards the exits of instances it forked for us; duplicates find nothing here.
        inst = next((i for i in self.instances.values() if i.node != HOST and i.address == msg.childAddress), None)
        if inst is None:
            return
        if inst.state == "starting":
            # Thespian could not create it there (the worker died or is leaving and the convention
            # has not said so yet), or it died while starting: try elsewhere, and give that worker
            # a detection period to prove itself before anything else goes there.
            assert self.config is not None
            worker = self.workers.get(inst.node)
            if worker is not None:
                worker.suspect_until = time.monotonic() + self.config.convention.detection_s
            return self._instance_exited(inst, "instance did not start on its worker, placing it elsewhere",
                                         counted=False)
        self._instance_exited(inst, "actor instance died, restarting", counted=True)

    def _halt_unknown(self: ActorSupervisor, instance_id: str, sender: Any) -> None:
        """An instance reported that we no longer have a record of (replaced meanwhile)."""
        if sender is self.template and self.template is not None:
            self.template.send(ToInstances(instance_ids=(instance_id,), message=ActorExitRequest()))
        else:
            self.send(sender, ActorExitRequest())

    def _instance_exited(self: ActorSupervisor, inst: InstanceRecord, why: str, *, counted: bool) -> None:
        """Forget `inst`; restart it if it was live. `counted`: the restart counts towards the
        restart intensity (a crash); moves off a lost or draining worker do not."""
        self.instances.remove(inst)
        self.exits.forget(inst.instance_id)
        self._forget(inst.instance_id, pid=inst.pid if inst.adopted else 0)
        self._count(inst.public_key)
        stopped = inst.stopped_event()
        if stopped is not None:
            self._event(stopped)
        self.batches.instance_gone(inst.instance_id)
        crashed = inst.live  # nobody asked it to stop
        restarted = crashed and self._restart(inst, counted=counted)
        # Logged once the replacement is asked for: a log line is a message to Thespian's logger.
        if stopped is not None:
            log.info("actor stopped", extra={"actor_key": inst.public_key, "instance_id": inst.instance_id})
        if crashed:
            log.warning(why, extra={"actor_key": inst.public_key, "instance_id": inst.instance_id,
                                    "node": inst.node or "host"})
        if crashed and not restarted:
            log.error("restart intensity exceeded", extra={"actor_key": inst.public_key})
        for request_id, update in list(self.updates.items()):
            if inst.instance_id in update.pending:
                self._update_progress(request_id, inst.instance_id)
        for waiter in list(self.waiters):
            waiter.pending.discard(inst.instance_id)
            if not waiter.pending:
                self.waiters.remove(waiter)
                self._answer(waiter)

    def _restart(self: ActorSupervisor, inst: InstanceRecord, *, counted: bool = True) -> bool:
        """Start a replacement for `inst`; False (and actor_start_failed) once the restart
        intensity is exceeded."""
        assert self.config is not None
        if counted and not self.restarts.allow(inst.public_key):
            error = (f"Actor {inst.public_key} restarted {self.restarts.count(inst.public_key)} times within "
                     f"{self.config.restart_period_s:g} s; giving up")
            self._event(cloudevents.actor_start_failed(inst.public_key, error))
            return False
        if counted:
            self.telemetry.restarted(inst.public_key)
        self._start_instances(inst.claims, inst.cwasm_path, inst.image_ref, 1, inst.annotations)
        return True
