"""ProviderSupervisor: capability providers on this host (protocol.md §2.3 lp/sp, §11.7).

One supervised ProviderModule per (provider key, link name). Thread-free: it forks the modules.
PARs are fetched, verified and unpacked by the NativeWorker; events go through LatticeEvents.
A provider that dies is reported (provider_stopped) and not restarted, as in the OTP host.

Provider modules outlive this supervisor: each is recorded with HostSupervisor, and a restarted
ProviderSupervisor adopts the survivors (the provider keeps serving throughout) and starts again,
with their links, those that did not survive (hostcore/supervision.py).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited

from hostcore.config import HostConfig
from hostcore.errors import PolicyDeniedStartProvider, RoleRestarted
from hostcore.native.par import ProviderClaims
from hostcore.procutil import set_pdeathsig
from hostcore.providers.module import ProviderModule
from hostcore.supervision import (
    Adopted,
    AdoptingSupervisor,
    ExitWatch,
    Flush,
    Forget,
    Remember,
    Rewirable,
    Rewire,
    crash_if_asked,
)
from hostcore.tree.messages import (
    Done,
    EvaluateStart,
    GetInventory,
    InitProviderSupervisor,
    LatticeSnapshot,
    PolicyVerdict,
    PrepareFailed,
    PrepareProvider,
    ProviderFailed,
    ProviderInfo,
    ProviderInventory,
    ProviderPrepared,
    ProviderStarted,
    PublishEvent,
    Purge,
    PutClaims,
    PutRefmap,
    Ready,
    StartProvider,
    StartProviderAck,
    StartProviderProcess,
    StopProvider,
)
from hostcore.wire import cloudevents
from hostcore.wire.claims_records import provider_record

log = logging.getLogger(__name__)

__all__ = ["ALREADY_RUNNING", "ProviderSupervisor"]

ALREADY_RUNNING = "Provider with that link name is already running on this host"


@dataclass(slots=True, kw_only=True)
class _Provider:
    instance_id: str
    address: Any
    claims: ProviderClaims
    image_ref: str
    link_name: str
    annotations: dict[str, str]
    binary: Path
    config_json: str
    state: str = "starting"  # starting → running → stopping; or failed
    waiters: list[tuple[Any, str]] = field(default_factory=list)
    pid: int = 0
    adopted: bool = False  # taken over from a supervisor that died: not our Thespian child

    @property
    def key(self) -> tuple[str, str]:
        return (self.claims.public_key, self.link_name)

    def stopped_event(self) -> cloudevents.Event:
        return cloudevents.provider_stopped(public_key=self.claims.public_key, link_name=self.link_name,
                                            contract_id=self.claims.capid, instance_id=self.instance_id,
                                            annotations=self.annotations)


class ProviderSupervisor(AdoptingSupervisor, Rewirable, ActorTypeDispatcher):  # type: ignore[misc]
    PEERS = frozenset({"events", "native", "lattice"})

    def __init__(self) -> None:
        super().__init__()
        self.config: HostConfig | None = None
        self.providers: dict[str, _Provider] = {}
        self.pending: dict[str, StartProvider] = {}
        self.snapshot = LatticeSnapshot()
        self.policy_pending: dict[str, tuple[StartProvider, ProviderPrepared]] = {}
        self.purge_waiting: tuple[Any, str, set[str]] | None = None
        self.exits = ExitWatch()  # adopted provider modules
        self.adopting: set[str] = set()

    def receiveMsg_InitProviderSupervisor(self, msg: InitProviderSupervisor, sender: Any) -> None:
        set_pdeathsig()
        crash_if_asked(msg.config, "provider_supervisor", msg.restart)
        self.config, self.events, self.native, self.lattice = msg.config, msg.events, msg.native, msg.lattice
        self.host = sender
        for record in msg.restore:  # a predecessor died: take over what it ran
            self.providers[record.instance_id] = record
            self.adopt(record)
        self.adoption_deadline()
        self.send(sender, Ready(role="provider_supervisor"))

    def _remember(self, prov: _Provider) -> None:
        record = dataclasses.replace(prov, waiters=[])
        self.send(self.host, Remember(role="provider_supervisor", key=prov.instance_id, record=record))

    def peer_restarted(self, role: str) -> None:
        """Starts waiting on the lost NativeWorker or LatticeCache fail visibly (not replayed)."""
        error = RoleRestarted({"native": "native worker", "lattice": "lattice cache"}.get(role, role)).wire
        if role == "events":  # provider modules send their health events there
            for prov in self.providers.values():
                self.send(prov.address, Rewire(role=role, address=self.events))
        elif role == "native":
            for request_id in list(self.pending):
                self._start_failed(self.pending.pop(request_id), error)
        elif role == "lattice":
            for request_id in list(self.policy_pending):
                self._start_failed(self.policy_pending.pop(request_id)[0], error)

    # --- adoption --------------------------------------------------------------------------------

    def child(self, instance_id: str) -> _Provider | None:
        return self.providers.get(instance_id)

    def adopted_running(self, record: _Provider, msg: Adopted) -> None:
        self._announce(record, msg.pid)

    def adopted_exited(self, record: _Provider) -> None:
        self._provider_exited(record)

    def adoption_lost(self, prov: _Provider) -> None:
        """It did not survive its supervisor: report it and start it again, with its links."""
        was_live = prov.state in ("starting", "running")
        self._provider_exited(prov)
        if was_live:
            log.warning("provider lost with its supervisor; starting it again",
                        extra={"provider_key": prov.claims.public_key, "link_name": prov.link_name})
            request = StartProvider(provider_ref=prov.image_ref, link_name=prov.link_name,
                                    configuration=prov.config_json, annotations=prov.annotations, request_id="")
            self.start_provider(request, prov.claims, prov.binary)

    def _event(self, event: cloudevents.Event) -> None:
        self.send(self.events, PublishEvent.of(event))

    def _running(self, ref_or_key: str, link_name: str) -> _Provider | None:
        return next((p for p in self.providers.values() if p.state in ("starting", "running")
                     and p.link_name == link_name and ref_or_key in (p.claims.public_key, p.image_ref)), None)

    # --- start ---------------------------------------------------------------------------------

    def receiveMsg_StartProvider(self, msg: StartProvider, sender: Any) -> None:
        if self._running(msg.provider_ref, msg.link_name) is not None:
            self._already_running(msg)
            self.send(sender, StartProviderAck(request_id=msg.request_id, error=ALREADY_RUNNING))
            return
        self.send(sender, StartProviderAck(request_id=msg.request_id))  # ack first, work after
        request_id = str(uuid.uuid4())
        self.pending[request_id] = msg
        self.send(self.native, PrepareProvider(provider_ref=msg.provider_ref, request_id=request_id))

    def _already_running(self, msg: StartProvider) -> None:
        self._event(cloudevents.provider_start_failed(
            msg.provider_ref, msg.link_name,
            f"Ignoring request to start provider, {msg.provider_ref} ({msg.link_name}) is already running"))

    def receiveMsg_PrepareFailed(self, msg: PrepareFailed, sender: Any) -> None:
        pending = self.pending.pop(msg.request_id, None)
        if pending is not None:
            self._start_failed(pending, msg.error)

    def _start_failed(self, req: StartProvider, error: str) -> None:
        log.error("provider start failed", extra={"provider_ref": req.provider_ref, "error": error})
        self._event(cloudevents.provider_start_failed(req.provider_ref, req.link_name, error))

    def receiveMsg_ProviderPrepared(self, msg: ProviderPrepared, sender: Any) -> None:
        req = self.pending.pop(msg.request_id, None)
        if req is None:
            return
        claims = msg.claims
        if self._running(claims.public_key, req.link_name) is not None:  # the ref named a running key
            self._already_running(req)
            return
        assert self.config is not None
        if self.config.policy_topic:  # protocol.md §9: ask before start_provider
            self.policy_pending[msg.request_id] = (req, msg)
            self.send(self.lattice, EvaluateStart(claims=claims, link_name=req.link_name, request_id=msg.request_id))
            return
        self.start_provider(req, claims, msg.binary)

    def receiveMsg_PolicyVerdict(self, msg: PolicyVerdict, sender: Any) -> None:
        req, prepared = self.policy_pending.pop(msg.request_id, (None, None))
        if req is None or prepared is None:
            return
        if msg.permitted:
            self.start_provider(req, prepared.claims, prepared.binary)
        else:
            self._start_failed(req, PolicyDeniedStartProvider(prepared.claims.public_key, msg.message).wire)

    def start_provider(self, req: StartProvider, claims: ProviderClaims, binary: Path) -> None:
        """Spawn a ProviderModule for a verified provider; progress arrives as events."""
        assert self.config is not None
        links = tuple(ld for ld in self.snapshot.links
                      if ld.provider_id == claims.public_key and ld.link_name == req.link_name)
        prov = _Provider(instance_id=str(uuid.uuid4()), address=self.createActor(ProviderModule), claims=claims,
                         image_ref=req.provider_ref, link_name=req.link_name, annotations=dict(req.annotations),
                         binary=binary, config_json=req.configuration)
        self.providers[prov.instance_id] = prov
        self._remember(prov)
        self.send(prov.address, StartProviderProcess(
            config=self.config, claims=claims, binary=binary, link_name=req.link_name,
            instance_id=prov.instance_id, image_ref=req.provider_ref, annotations=prov.annotations,
            config_json=req.configuration, links=links, events=self.events))

    def receiveMsg_ProviderStarted(self, msg: ProviderStarted, sender: Any) -> None:
        prov = self.providers.get(msg.instance_id)
        if prov is None or prov.state != "starting":
            return
        self._announce(prov, msg.pid)

    def _announce(self, prov: _Provider, pid: int) -> None:
        prov.state = "running"
        self._remember(prov)
        claims = prov.claims
        log.info("provider started", extra={"provider_key": claims.public_key, "link_name": prov.link_name,
                                            "pid": pid})
        self._event(cloudevents.provider_started(claims=claims, image_ref=prov.image_ref, link_name=prov.link_name,
                                                 instance_id=prov.instance_id, annotations=prov.annotations))
        self.send(self.lattice, PutClaims(record=provider_record(claims)))
        if prov.image_ref and prov.image_ref != claims.public_key:
            self.send(self.lattice, PutRefmap(actor_ref=prov.image_ref, public_key=claims.public_key))
            self._event(cloudevents.refmap_set(prov.image_ref, claims.public_key))

    def receiveMsg_ProviderFailed(self, msg: ProviderFailed, sender: Any) -> None:
        prov = self.providers.get(msg.instance_id)
        if prov is None:
            return
        prov.state = "failed"
        self._event(cloudevents.provider_start_failed(prov.image_ref, prov.link_name, msg.error))
        self.send(prov.address, ActorExitRequest())

    # --- stop ----------------------------------------------------------------------------------

    def receiveMsg_StopProvider(self, msg: StopProvider, sender: Any) -> None:
        prov = self._running(msg.provider_id, msg.link_name)
        if prov is None:
            # protocol.md §2.3 sp: unknown provider → warning, and still a success ack.
            log.warning("no such provider to stop", extra={"provider_key": msg.provider_id, "link_name": msg.link_name})
            self.send(sender, Done(request_id=msg.request_id))
            return
        self._stop(prov, sender, msg.request_id)

    def _stop(self, prov: _Provider, reply_to: Any, request_id: str) -> None:
        prov.waiters.append((reply_to, request_id))
        self._halt(prov)

    def _halt(self, prov: _Provider) -> None:
        if prov.state != "stopping":
            prov.state = "stopping"
            self._remember(prov)  # a successor must not start it again
            self.send(prov.address, ActorExitRequest())

    def receiveMsg_Purge(self, msg: Purge, sender: Any) -> None:
        live = [p for p in self.providers.values() if p.state != "failed"]
        self.purge_waiting = (sender, msg.request_id, {p.instance_id for p in live})
        for prov in live:
            self._halt(prov)
        self._purge_progress()

    def _purge_progress(self) -> None:
        if self.purge_waiting is not None and not self.purge_waiting[2]:
            reply_to, request_id, _ = self.purge_waiting
            self.purge_waiting = None
            # The host publishes host_stopped on our Done: it goes through LatticeEvents, behind
            # every provider_stopped we sent there (protocol.md §11.4, OTP's do_stop order).
            self.send(self.events, Flush(reply_to=reply_to, request_id=request_id))

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        prov = next((p for p in self.providers.values() if p.address == msg.childAddress), None)
        if prov is not None:
            self._provider_exited(prov)

    def _provider_exited(self, prov: _Provider) -> None:
        del self.providers[prov.instance_id]
        self.exits.forget(prov.instance_id)
        self.send(self.host, Forget(role="provider_supervisor", key=prov.instance_id,
                                    pid=prov.pid if prov.adopted else 0))
        if prov.state in ("running", "stopping"):  # it was announced with provider_started
            self._event(prov.stopped_event())
        for reply_to, request_id in prov.waiters:
            self.send(reply_to, Done(request_id=request_id))
        if self.purge_waiting is not None:
            self.purge_waiting[2].discard(prov.instance_id)
            self._purge_progress()

    # --- lattice data and inventory ------------------------------------------------------------

    def receiveMsg_LatticeSnapshot(self, msg: LatticeSnapshot, sender: Any) -> None:
        self.snapshot = msg
        for prov in self.providers.values():
            if prov.state in ("starting", "running"):
                self.send(prov.address, msg)

    def receiveMsg_GetInventory(self, msg: GetInventory, sender: Any) -> None:
        self.send(sender, ProviderInventory(request_id=msg.request_id, providers=tuple(
            ProviderInfo(public_key=p.claims.public_key, link_name=p.link_name, contract_id=p.claims.capid,
                         instance_id=p.instance_id, image_ref=p.image_ref, name=p.claims.name or "",
                         revision=p.claims.revision, annotations=p.annotations)
            for p in self.providers.values() if p.state == "running")))
