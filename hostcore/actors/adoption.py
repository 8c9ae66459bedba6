"""ActorSupervisor taking over from a predecessor that died, or a template that did
(hostcore/supervision.py); starting and hearing its template (hostcore/actors/template_link.py).

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
from hostcore.actors.template_link import TemplateLink
from hostcore.errors import RoleRestarted
from hostcore.supervision import Adopted, AdoptingSupervisor
from hostcore.tree.messages import InitTemplate, InstanceReturned, TemplateReady
from hostcore.wire import cloudevents

if TYPE_CHECKING:
    from hostcore.actors.supervisor import ActorSupervisor

__all__ = ["InstanceAdoption"]

log = logging.getLogger(__name__)


class InstanceAdoption(AdoptingSupervisor):
    """Mixin of ActorSupervisor (listed before ActorTypeDispatcher)."""

    # --- the template: where this host's instances report --------------------------------------

    def _new_template(self: ActorSupervisor, *, rehearse: bool = True) -> None:
        # Started with the supervisor, not at the first start: its imports take ~0.5 s, which a
        # start (or an adoption after a restart) would otherwise wait for.
        assert self.config is not None
        self.template = TemplateLink.spawn(InitTemplate(config=self.config, snapshot=self.snapshot,
                                                        rehearse=rehearse))

    def _from_template(self: ActorSupervisor, ready: list[int]) -> None:
        """What the template said (reports, dispatched as messages from it), and its death."""
        link = self.template
        assert link is not None
        messages, died = link.receive(ready)
        for message in messages:
            super().receiveMessage(message, link)  # type: ignore[misc]
        if died and self.template is link:
            self.template = None
            if not self.exiting:
                self._template_lost()

    def _template_lost(self: ActorSupervisor) -> None:
        """The template died. The instances it had announced outlive it and report to its
        successor (hostcore/actors/channel.py); those still starting died with it. Whoever does
        not report within the adoption deadline is replaced."""
        forked = [i for i in self.instances.values() if self._forked(i)]
        log.warning("instance template died, restarting it", extra={"instances": len(forked)})
        # It may have died rehearsing an instance's start, the one time it runs instance code:
        # its successors do without (their instances only cost more memory), never a crash loop.
        self._new_template(rehearse=False)
        for inst in forked:
            self.adopting.add(inst.instance_id)
            inst.adopted = True
        self.adoption_deadline()

    def receiveMsg_TemplateReady(self: ActorSupervisor, msg: TemplateReady, sender: Any) -> None:
        if sender is self.template and self.template is not None:
            self.template.ready = True
            self.adoption_deadline()  # instances that outlived its predecessor can report now

    def adoption_deadline(self: ActorSupervisor) -> None:
        """Runs from the template's start: until it listens, instances cannot report to it."""
        if self.template is None or self.template.ready:
            super().adoption_deadline()  # type: ignore[misc]

    # --- records of a predecessor ----------------------------------------------------------------

    def _restore(self: ActorSupervisor, records: tuple[Any, ...]) -> None:
        # Ours report again to our template (hostcore/actors/template_link.py), started already.
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
