"""ActorSupervisor taking over from a predecessor that died (hostcore/supervision.py).

Instance processes outlive their supervisor (they serve RPC on their own NATS connections), so a
restarted ActorSupervisor gets the records HostSupervisor kept and asks every recorded instance to
report to it (`Adopt`). Those that answer are watched through a pidfd from then on; those that do
not answer within ADOPT_TIMEOUT_S, or never finished starting, are replaced. Starts that were
waiting on the NativeWorker are failed with an `actor_start_failed`, not replayed.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorExitRequest, ThespianWatch, WakeupMessage, WatchMessage

from hostcore.actors.placement import HOST
from hostcore.actors.records import InstanceRecord, PendingStart
from hostcore.errors import RoleRestarted
from hostcore.supervision import ADOPT_TIMEOUT_S, Adopt, Adopted

if TYPE_CHECKING:
    from hostcore.actors.supervisor import ActorSupervisor

__all__ = ["InstanceAdoption"]

log = logging.getLogger(__name__)

_ADOPT_DEADLINE = "adopt-deadline"
_LOST = "instance lost with its supervisor, replacing it"


class InstanceAdoption:
    """Mixin of ActorSupervisor (listed before ActorTypeDispatcher)."""

    adopting: set[str]

    def receiveMessage(self: ActorSupervisor, msg: Any, sender: Any) -> ThespianWatch | None:
        if isinstance(msg, WatchMessage):
            for instance_id in self.exits.exited(msg.ready):
                inst = self.instances.get(instance_id)
                if inst is not None:
                    self._instance_exited(inst, "actor instance died, restarting", counted=True)
        else:
            super().receiveMessage(msg, sender)  # type: ignore[misc]
        # Thespian watches only the fds returned by the latest receiveMessage: return it always.
        return self.exits.thespian_watch()

    def _restore(self: ActorSupervisor, records: tuple[Any, ...]) -> None:
        for record in records:
            if isinstance(record, PendingStart):
                self._forget(record.key)
                self._event("actor_start_failed", {"actor_ref": record.actor_ref,
                                                   "error": RoleRestarted("actor supervisor").wire})
            elif isinstance(record, InstanceRecord):
                self._take_over(record)
        if self.adopting:
            self.wakeupAfter(dt.timedelta(seconds=ADOPT_TIMEOUT_S), payload=_ADOPT_DEADLINE)
        log.info("actor supervisor restored", extra={"instances": len(self.instances),
                                                     "adopting": len(self.adopting)})

    def _take_over(self: ActorSupervisor, inst: InstanceRecord) -> None:
        self.instances[inst.instance_id] = inst
        if inst.node != HOST:
            # Its exits would still go to our dead predecessor, and a worker's process can't be
            # watched from here: replace it.
            self.send(inst.address, ActorExitRequest())
            self._instance_exited(inst, "instance on a worker replaced after a supervisor restart", counted=False)
            return
        self.adopting.add(inst.instance_id)
        self.send(inst.address, Adopt(instance_id=inst.instance_id))

    def receiveMsg_Adopted(self: ActorSupervisor, msg: Adopted, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        if inst is None or msg.instance_id not in self.adopting:
            self.send(sender, ActorExitRequest())  # too late: it was replaced already
            return
        self.adopting.discard(msg.instance_id)
        inst.adopted, inst.pid = True, msg.pid
        if not msg.running or not self.exits.watch(msg.pid, inst.instance_id):
            self.send(sender, ActorExitRequest())
            self._instance_exited(inst, _LOST, counted=False)
            return
        if inst.state == "stopping":  # its predecessor had asked it to stop: ask again
            self.send(sender, ActorExitRequest())
        elif inst.state == "starting":  # its InstanceStarted went to our predecessor
            self._announce(inst, msg.api_version, msg.pid)
        log.debug("instance adopted", extra={"actor_key": inst.public_key, "instance_id": inst.instance_id})

    def receiveMsg_WakeupMessage(self: ActorSupervisor, msg: WakeupMessage, sender: Any) -> None:
        if msg.payload != _ADOPT_DEADLINE:
            return
        for instance_id in sorted(self.adopting):
            self.adopting.discard(instance_id)
            inst = self.instances.get(instance_id)
            if inst is not None:
                self._instance_exited(inst, _LOST, counted=False)
