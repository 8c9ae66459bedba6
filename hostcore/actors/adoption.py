"""ActorSupervisor taking over from a predecessor that died (hostcore/supervision.py).

Instance processes outlive their supervisor (they serve RPC on their own NATS connections), so a
restarted ActorSupervisor gets the records HostSupervisor kept and asks every recorded instance to
report to it (`Adopt`). Those that answer are watched through a pidfd from then on; those that do
not answer within ADOPT_TIMEOUT_S, or never finished starting, are replaced. Starts that were
waiting on the NativeWorker are failed with an `actor_start_failed`, not replayed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorExitRequest

from hostcore.actors.placement import HOST
from hostcore.actors.records import InstanceRecord, PendingStart
from hostcore.errors import RoleRestarted
from hostcore.supervision import Adopted, AdoptingSupervisor
from hostcore.wire import cloudevents

if TYPE_CHECKING:
    from hostcore.actors.supervisor import ActorSupervisor

__all__ = ["InstanceAdoption"]

log = logging.getLogger(__name__)


class InstanceAdoption(AdoptingSupervisor):
    """Mixin of ActorSupervisor (listed before ActorTypeDispatcher)."""

    def _restore(self: ActorSupervisor, records: tuple[Any, ...]) -> None:
        for record in records:
            if isinstance(record, PendingStart):
                self._forget(record.key)
                self._event(cloudevents.actor_start_failed(record.actor_ref, RoleRestarted("actor supervisor").wire))
            elif isinstance(record, InstanceRecord):
                self.instances.add(record)
                if record.node == HOST and record.address is not None:
                    self.adopt(record)
                elif record.node == HOST:
                    # Still being forked when its template died with our predecessor: it died too.
                    self._instance_exited(record, "instance lost with its supervisor, replacing it", counted=False)
                else:
                    # Its exits would still go to our dead predecessor, and a worker's process
                    # can't be watched from here: replace it.
                    self.send(record.address, ActorExitRequest())
                    self._instance_exited(record, "instance on a worker replaced after a supervisor restart",
                                          counted=False)
        self.adoption_deadline()
        if records:
            log.info("actor supervisor restored", extra={"instances": len(self.instances),
                                                         "adopting": len(self.adopting)})

    def child(self: ActorSupervisor, instance_id: str) -> InstanceRecord | None:
        return self.instances.get(instance_id)

    def adopted_running(self: ActorSupervisor, record: InstanceRecord, msg: Adopted) -> None:
        self._announce(record, msg.api_version, msg.pid)

    def adoption_lost(self: ActorSupervisor, record: InstanceRecord) -> None:
        self._instance_exited(record, "instance lost with its supervisor, replacing it", counted=False)

    def adopted_exited(self: ActorSupervisor, record: InstanceRecord) -> None:
        self._instance_exited(record, "actor instance died, restarting", counted=True)
