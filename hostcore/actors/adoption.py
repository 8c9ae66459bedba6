"""ActorSupervisor taking over from a predecessor that died, or a template that did
(hostcore/supervision.py).

This host's instance processes outlive their template and their supervisor (they serve RPC on
their own NATS connections). A restarted ActorSupervisor gets the records HostSupervisor kept; its
new template is where those instances report again (`InstanceReturned`, hostcore/actors/channel.py).
Those that do not within ADOPT_TIMEOUT_S, or never finished starting, are replaced. Instances on
workers are replaced, and starts that were waiting on the NativeWorker are failed with an
`actor_start_failed`, not replayed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorExitRequest

from hostcore.actors.placement import HOST
from hostcore.actors.records import InstanceRecord, PendingStart
from hostcore.errors import RoleRestarted
from hostcore.supervision import Adopted, AdoptingSupervisor
from hostcore.tree.messages import InstanceReturned
from hostcore.wire import cloudevents

if TYPE_CHECKING:
    from hostcore.actors.supervisor import ActorSupervisor

__all__ = ["InstanceAdoption"]

log = logging.getLogger(__name__)


class InstanceAdoption(AdoptingSupervisor):
    """Mixin of ActorSupervisor (listed before ActorTypeDispatcher)."""

    def _restore(self: ActorSupervisor, records: tuple[Any, ...]) -> None:
        if any(isinstance(r, InstanceRecord) and r.node == HOST for r in records):
            self._new_template()  # where they report again
        for record in records:
            if isinstance(record, PendingStart):
                self._forget(record.key)
                self._event(cloudevents.actor_start_failed(record.actor_ref, RoleRestarted("actor supervisor").wire))
            elif isinstance(record, InstanceRecord):
                self.instances.add(record)
                if record.node == HOST:
                    self.adopting.add(record.instance_id)  # until it reports to our template
                    record.adopted = True
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

    def receiveMsg_InstanceReturned(self: ActorSupervisor, msg: InstanceReturned, sender: Any) -> None:
        """One of ours, forked by a template that died, reported to the current one."""
        record = self.instances.get(msg.instance_id)
        if record is None or msg.instance_id not in self.adopting:
            self.strays[msg.instance_id] = msg.pid  # reaped once it is gone
            self._halt_unknown(msg.instance_id, sender)  # too late: replaced
            return
        self.adopting.discard(msg.instance_id)
        record.pid = msg.pid
        self._remember(record)
        if record.state in ("stopping", "cancelled"):  # the predecessor had asked it to stop: ask again
            self._tell([record], ActorExitRequest())
        elif record.state == "starting":  # it reported its start to the predecessor, or was about to
            self._announce(record, msg.api_version, msg.pid)

    def child(self: ActorSupervisor, instance_id: str) -> InstanceRecord | None:
        return self.instances.get(instance_id)

    def adopted_running(self: ActorSupervisor, record: InstanceRecord, msg: Adopted) -> None:
        self._announce(record, msg.api_version, msg.pid)

    def adoption_lost(self: ActorSupervisor, record: InstanceRecord) -> None:
        self._instance_exited(record, "instance lost with its supervisor, replacing it", counted=False)

    def adopted_exited(self: ActorSupervisor, record: InstanceRecord) -> None:
        self._instance_exited(record, "actor instance died, restarting", counted=True)
