"""ActorSupervisor: the OTP DynamicSupervisor of actor instances (protocol.md §11).

Owns every instance count on this host. Thread-free, no NATS, no wasmtime Engine. The
InstanceTemplate, a process it starts (hostcore/actors/template_link.py), forks and owns the
instance processes (hostcore/actors/template.py) and reports their starts and exits here.
Events go to LatticeEvents; module bytes are fetched, verified and compiled by the NativeWorker.

With HOSTCORE_PLACEMENT=workers|spread, instances may run on workers that joined this host's
Thespian convention (hostcore/actors/worker_nodes.py). Live update is in
hostcore/actors/live_update.py, an instance's starts, failures, exits and restarts in
hostcore/actors/lifecycle.py, taking over from a predecessor in hostcore/actors/adoption.py.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ThespianWatch, WatchMessage

from hostcore.actors.adoption import InstanceAdoption
from hostcore.actors.batches import BatchTracker
from hostcore.actors.lifecycle import InstanceLifecycle
from hostcore.actors.instance import ActorModule
from hostcore.actors.live_update import LiveUpdate
from hostcore.actors.placement import HOST, WorkerNode, requirements_for
from hostcore.actors.records import InstanceRecord, InstanceTable, PendingStart
from hostcore.actors.template_link import TemplateLink
from hostcore.actors.worker_nodes import WorkerNodes
from hostcore.config import HostConfig, Placement
from hostcore.errors import (
    HostcoreError,
    OtherRefRunning,
    PolicyDeniedStartActor,
    RefHoldsOtherActor,
    RoleRestarted,
    ScaleWithoutRef,
)
from hostcore.native.claims import ActorClaims
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import ExitWatch, Flush, Forget, Records, Remember, RestartWindow, Rewirable, crash_if_asked
from hostcore.telemetry.supervision import SupervisorTelemetry
from hostcore.tree.messages import (
    ActorPrepared,
    Done,
    EvaluateStart,
    ForkInstances,
    GetInventory,
    InitActorSupervisor,
    InstanceInfo,
    InstanceSpec,
    Inventory,
    LatticeSnapshot,
    ModuleImage,
    PrepareActor,
    PolicyVerdict,
    PrepareFailed,
    PublishEvent,
    PublishEvents,
    Purge,
    PutClaims,
    PutRefmap,
    Ready,
    ScaleActor,
    StartActor,
    StartInstance,
    TerminateActor,
    ToInstances,
)
from hostcore.wire import cloudevents

__all__ = ["ActorSupervisor", "matches_annotations", "scale_diff"]

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class _Waiter:
    request_id: str
    reply_to: Any
    pending: set[str] = field(default_factory=set)
    flush: bool = False  # answer through LatticeEvents, once the actor_stopped events are out


def matches_annotations(wanted: dict[str, str], have: dict[str, str]) -> bool:
    """protocol.md §11.3: requested ⊆ existing; an empty request matches every instance."""
    return all(have.get(k) == v for k, v in wanted.items())


def scale_diff(current: int, desired: int) -> int:
    """`current - desired`: 0 nothing, > 0 terminate that many, < 0 start that many."""
    return current - desired


class ActorSupervisor(InstanceAdoption, InstanceLifecycle, LiveUpdate, WorkerNodes, Rewirable, ActorTypeDispatcher):  # type: ignore[misc]
    """scale_actor / start_actor / terminate_actor over supervised ActorModule processes.

    Instances that die without being asked are restarted (new instance id, same module) unless the
    key exceeded `restart_intensity` restarts within `restart_period_s`, as an OTP supervisor.
    Every instance and every start in flight is recorded with HostSupervisor, so that a successor
    of this supervisor can adopt the instances (hostcore/actors/adoption.py).
    """

    PEERS = frozenset({"events", "native", "lattice"})

    def __init__(self) -> None:
        super().__init__()
        self.config: HostConfig | None = None
        self.instances = InstanceTable()
        self.template: TemplateLink | None = None
        self.exiting = False
        self.pending: dict[str, PendingStart] = {}
        self.preparing: set[str] = set()  # keys with a scale waiting on the NativeWorker
        self.deferred: dict[str, list[ScaleActor]] = collections.defaultdict(list)
        self.waiters: list[_Waiter] = []
        self.updates = {}  # live updates, by NativeWorker request id
        self.snapshot = LatticeSnapshot()
        self.policy_pending: dict[str, tuple[ActorPrepared, PendingStart]] = {}
        self.telemetry = SupervisorTelemetry()  # off until InitActorSupervisor
        self.workers: dict[str, WorkerNode] = {}  # joined workers, by worker id
        self.exits = ExitWatch()  # AdoptingSupervisor's; this host's instances are the template's to watch
        self.adopting: set[str] = set()
        self.strays: dict[str, int] = {}  # pids of instances that came back too late, being halted
        self.batches = BatchTracker(self._event)  # actors_started / _start_failed / _stopped
        self.outbox: list[PublishEvent] = []  # to LatticeEvents, at the end of this message turn
        self.unsaved: dict[str, Remember | Forget] = {}  # to HostSupervisor, idem; the last per key
        self.uncounted: set[str] = set()  # actor keys whose running-instances gauge is due, idem

    # --- wiring --------------------------------------------------------------------------------

    def receiveMsg_InitActorSupervisor(self, msg: InitActorSupervisor, sender: Any) -> None:
        set_pdeathsig()
        crash_if_asked(msg.config, "actor_supervisor", msg.restart)
        self.config, self.events, self.native, self.lattice = msg.config, msg.events, msg.native, msg.lattice
        self.host = sender
        self.restarts = RestartWindow(msg.config.restart_intensity, msg.config.restart_period_s)
        self.telemetry = SupervisorTelemetry.open(msg.config)
        self.batches.host_id = msg.config.host_id
        if msg.config.placement is not Placement.LOCAL:
            # Our admin is the convention leader: it tells us about every worker that joins or is lost.
            self.notifyOnSystemRegistrationChanges(True)
        self._new_template()
        self._restore(msg.restore)
        self.send(sender, Ready(role="actor_supervisor"))

    # Events and record changes of one message turn go out together, as one message each, at its
    # end (`_flush`): a scale of N, or N exits handled at once, is not 3N messages.

    def receiveMessage(self, msg: Any, sender: Any) -> Any:
        try:
            if isinstance(msg, WatchMessage) and self.template is not None:
                self._from_template(msg.ready)
            super().receiveMessage(msg, sender)
        finally:
            self._flush()
        # Thespian watches only the fds returned by the latest receiveMessage: return them always.
        fds = self.exits.fds() + (self.template.fds() if self.template is not None else [])
        return ThespianWatch(fds) if fds else None

    def _event(self, event: cloudevents.Event) -> None:
        self.outbox.append(PublishEvent.of(event))

    def _remember(self, record: InstanceRecord | PendingStart) -> None:
        key = record.instance_id if isinstance(record, InstanceRecord) else record.key
        self.unsaved[key] = Remember(role="actor_supervisor", key=key, record=dataclasses.replace(record))

    def _forget(self, key: str, pid: int = 0) -> None:
        self.unsaved[key] = Forget(role="actor_supervisor", key=key, pid=pid)  # replaces a Remember

    def _flush(self) -> None:
        for public_key in self.uncounted:  # once per turn: a count scans the actor's records
            self.telemetry.instance_count(public_key, sum(i.state == "running" for i in self.instances.of_key(public_key)))
        self.uncounted.clear()
        # Records first: what the lattice hears of (actor_started) a successor must know of.
        if self.unsaved:
            changes, self.unsaved = tuple(self.unsaved.values()), {}
            self.send(self.host, changes[0] if len(changes) == 1 else Records(changes=changes))
        if self.outbox:
            events, self.outbox = tuple(self.outbox), []
            self.send(self.events, events[0] if len(events) == 1 else PublishEvents(events=events))

    def peer_restarted(self, role: str) -> None:
        """Starts waiting on the lost NativeWorker or LatticeCache fail visibly (not replayed)."""
        error = RoleRestarted({"native": "native worker", "lattice": "lattice cache"}.get(role, role)).wire
        if role == "native":
            for request_id in list(self.pending):
                self._start_failed(request_id, self.pending[request_id].actor_ref, error)
            self._fail_updates_waiting_on_native(error)
        elif role == "lattice":
            for request_id, (prepared, start) in list(self.policy_pending.items()):
                del self.policy_pending[request_id]
                self._refused(start, prepared.actor_ref, error)

    # --- scale_actor ---------------------------------------------------------------------------

    def receiveMsg_ScaleActor(self, msg: ScaleActor, sender: Any) -> None:
        with self.telemetry.span("scale_actor", msg.trace, actor_key=msg.actor_id, actor_ref=msg.actor_ref,
                                 count=msg.count) as span:
            try:
                self.scale_actor(msg)
            except HostcoreError as err:
                span.fail(err.wire)
                log.error("scale failed", extra={"actor_key": msg.actor_id, "error": err.wire})
                self._event(cloudevents.actor_start_failed(msg.actor_ref or msg.actor_id, err.wire))
                self.batches.start_failed(msg.actor_id, msg.actor_ref, {}, err.wire)

    def scale_actor(self, msg: ScaleActor) -> None:
        """Bring this host's instances of `msg.actor_id` to `msg.count`. Returns once starts or
        stops are issued; progress arrives as actor_started / actor_stopped events.

        Raises:
            ScaleWithoutRef: scaling up with no ref given and none running to copy it from.
        """
        key = msg.actor_id
        if key in self.preparing:  # a start for this key is in flight: decide after it lands
            self.deferred[key].append(msg)
            return
        live = self._live(key)
        ref = msg.actor_ref or next((i.image_ref for i in live if i.image_ref), "")
        diff = scale_diff(len(live), msg.count)
        if diff > 0:
            with self.telemetry.span("terminate_actor", actor_key=key, count=diff):
                halted = self.terminate_actor(key, diff, {})
            self.batches.stopping(halted, key, diff, len(self._live(key)), {})
        elif diff < 0:
            if not ref:
                raise ScaleWithoutRef()
            running = next((i for i in live if i.image_ref == ref), None)
            if running is not None:  # same module already here: no fetch needed
                ids = self._start_instances(running.claims, running.cwasm_path, ref, -diff, {})
                self.batches.starting(ids, key, ref, {}, running.claims.to_event_claims())
            else:
                self._prepare(ref, -diff, {}, expect_key=key)

    def receiveMsg_StartActor(self, msg: StartActor, sender: Any) -> None:
        # protocol.md §2.3 QUIRK: OTP's 1..count range starts two instances for count 0; we
        # follow the Rust control client ("0 is interpreted as 1").
        with self.telemetry.span("start_actor", msg.trace, actor_ref=msg.actor_ref, count=msg.count):
            self._prepare(msg.actor_ref, max(msg.count, 1), dict(msg.annotations))

    def _prepare(self, ref: str, count: int, annotations: dict[str, str], *, expect_key: str = "") -> None:
        start = PendingStart(key=str(uuid.uuid4()), actor_ref=ref, count=count, annotations=annotations,
                             expect_key=expect_key)
        self.pending[start.key] = start
        self._remember(start)
        if start.expect_key:
            self.preparing.add(start.expect_key)
        self.send(self.native, PrepareActor(actor_ref=start.actor_ref, request_id=start.key,
                                            trace=self.telemetry.start_from_oci(start.key, start.actor_ref)))

    def receiveMsg_PrepareFailed(self, msg: PrepareFailed, sender: Any) -> None:
        if msg.request_id in self.updates:
            return self._update_failed(self.updates.pop(msg.request_id), msg.error)
        self._start_failed(msg.request_id, msg.actor_ref, msg.error)

    def _start_failed(self, request_id: str, actor_ref: str, error: str) -> None:
        start = self.pending.pop(request_id, None)
        self.telemetry.start_failed(request_id, error)
        log.error("actor start failed", extra={"actor_ref": actor_ref, "error": error})
        self._event(cloudevents.actor_start_failed(actor_ref, error))
        if start is not None:
            self.batches.start_failed(start.expect_key, actor_ref, start.annotations, error)
            self._forget(start.key)
            if start.expect_key:
                self._release(start.expect_key)

    def receiveMsg_ActorPrepared(self, msg: ActorPrepared, sender: Any) -> None:
        if msg.request_id in self.updates:
            return self._swap_modules(msg.request_id, msg)
        start = self.pending.pop(msg.request_id, None)
        if start is None:
            return
        self.telemetry.prepared(msg.request_id, msg.actor_ref, msg.byte_size, msg.claims)
        assert self.config is not None
        if self.config.policy_topic:  # protocol.md §9: ask before start_actor
            self.policy_pending[msg.request_id] = (msg, start)
            self.send(self.lattice, EvaluateStart(claims=msg.claims, request_id=msg.request_id))
            return
        self._start_prepared(msg, start)

    def receiveMsg_PolicyVerdict(self, msg: PolicyVerdict, sender: Any) -> None:
        prepared, start = self.policy_pending.pop(msg.request_id, (None, None))
        if prepared is None or start is None:
            return
        self.telemetry.policy_decision(msg.request_id, msg.permitted, msg.message)
        if msg.permitted:
            return self._start_prepared(prepared, start)
        error = PolicyDeniedStartActor(prepared.claims.public_key, msg.message).wire
        self.batches.start_failed(prepared.claims.public_key, prepared.actor_ref, start.annotations, error)
        self._refused(start, prepared.actor_ref, error)

    def _refused(self, start: PendingStart, actor_ref: str, error: str) -> None:
        log.error("actor start refused", extra={"actor_ref": actor_ref, "error": error})
        self._event(cloudevents.actor_start_failed(actor_ref, error))
        self._forget(start.key)
        if start.expect_key:
            self._release(start.expect_key)

    def _start_prepared(self, msg: ActorPrepared, start: PendingStart) -> None:
        try:
            with self.telemetry.instances_of(msg.request_id):  # their "instance started" events
                self.start_actor(msg.claims, msg.cwasm_path, start)
        except HostcoreError as err:
            log.error("actor start refused", extra={"actor_ref": msg.actor_ref, "error": err.wire})
            self._event(cloudevents.actor_start_failed(msg.actor_ref, err.wire))
            self.batches.start_failed(msg.claims.public_key, msg.actor_ref, start.annotations, err.wire)
        finally:
            self._forget(start.key)
            if start.expect_key:
                self._release(start.expect_key)

    def _release(self, key: str) -> None:
        self.preparing.discard(key)
        for deferred in self.deferred.pop(key, []):
            self.receiveMsg_ScaleActor(deferred, None)

    def start_actor(self, claims: ActorClaims, cwasm_path: Path, start: PendingStart) -> None:
        """Start `start.count` instances of a verified, compiled module.

        Raises:
            HostcoreError: the ref holds another key than the one being scaled, or the key already
                runs here from a different ref (OtherRefRunning, protocol.md §11.1 step 3).
        """
        pk = claims.public_key
        if start.expect_key and pk != start.expect_key:
            raise RefHoldsOtherActor(start.actor_ref, pk, start.expect_key)
        if any(i.image_ref != start.actor_ref for i in self._live(pk)):
            raise OtherRefRunning(pk, start.actor_ref)
        ids = self._start_instances(claims, cwasm_path, start.actor_ref, start.count, start.annotations)
        self.batches.starting(ids, pk, start.actor_ref, start.annotations, claims.to_event_claims())
        self.send(self.lattice, PutClaims(record=claims.to_cache_record()))
        if start.actor_ref:  # its refmap_set event follows each instance's actor_started
            self.send(self.lattice, PutRefmap(actor_ref=start.actor_ref, public_key=pk))

    def _start_instances(self, claims: ActorClaims, cwasm_path: Path, ref: str, count: int,
                         annotations: dict[str, str]) -> list[str]:
        assert self.config is not None
        image: bytes | None = None
        ids, forked = [], []
        for _ in range(count):
            node = self._place(claims.public_key)
            inst = InstanceRecord(instance_id=str(uuid.uuid4()), claims=claims, cwasm_path=cwasm_path,
                                  image_ref=ref, annotations=annotations, node=node,
                                  address=None if node == HOST else self.createActor(ActorModule, requirements_for(node)))
            self.instances.add(inst)
            self._remember(inst)
            self.telemetry.instance_starting(inst.instance_id)
            ids.append(inst.instance_id)
            if node == HOST:
                forked.append(inst.instance_id)
                continue
            image = image if image is not None else self._module_image(cwasm_path)
            self.send(inst.address, ModuleImage(cwasm_path=cwasm_path, data=image))
            self.send(inst.address, StartInstance(
                config=self.config, claims=claims, cwasm_path=cwasm_path, image_ref=ref,
                instance_id=inst.instance_id, annotations=annotations, snapshot=self.snapshot))
        if forked:
            spec = InstanceSpec(claims=claims, cwasm_path=cwasm_path, image_ref=ref, annotations=annotations)
            if self.template is None:
                self._new_template()
            assert self.template is not None
            self.template.send(ForkInstances(spec=spec, instance_ids=tuple(forked)))
        return ids

    def _tell(self, insts: list[InstanceRecord], message: Any) -> None:
        """Send `message` to each instance: through the template for this host's own, directly to
        those on workers."""
        forked = []
        for inst in insts:
            if self._forked(inst):
                forked.append(inst.instance_id)
            elif inst.address is not None:
                self.send(inst.address, message)
        if forked and self.template is not None:
            self.template.send(ToInstances(instance_ids=tuple(forked), message=message))

    def _forked(self, inst: InstanceRecord) -> bool:
        """This host's own instance, owned by the template (not one on a worker)."""
        return inst.node == HOST

    # --- terminate_actor -----------------------------------------------------------------------

    def receiveMsg_TerminateActor(self, msg: TerminateActor, sender: Any) -> None:
        with self.telemetry.span("terminate_actor", msg.trace, actor_key=msg.actor_id, count=msg.count):
            halted = self.terminate_actor(msg.actor_id, msg.count, dict(msg.annotations))
        self.batches.stopping(halted, msg.actor_id, msg.count, len(self._live(msg.actor_id)), dict(msg.annotations))
        self._wait(msg.request_id, sender, halted)

    def terminate_actor(self, public_key: str, count: int, annotations: dict[str, str]) -> set[str]:
        """Halt `count` live instances of `public_key` matching `annotations` (0 = all matching).
        Returns the instance ids asked to stop; each publishes actor_stopped when it is gone.

        Instances still starting go first: halting them cancels work not yet done, and, never
        announced, they leave without an actor_stopped (nor a start failure).

        QUIRK (protocol.md §11.3): v0.59 could stop the key's RPC subscriber while non-matching
        instances still ran; here each instance owns its subscription, so the others keep serving.
        """
        matching = [i for i in self._live(public_key) if matches_annotations(annotations, i.annotations)]
        matching.sort(key=lambda i: i.state != "starting")  # stable: otherwise oldest first
        victims = matching if count == 0 else matching[:count]
        for inst in victims:
            if inst.state == "starting":
                inst.state = "cancelled"
                self.batches.instance_cancelled(inst.instance_id)
            else:
                inst.state = "stopping"
            self._remember(inst)  # a successor must not restart it
        self._tell(victims, ActorExitRequest())
        return {i.instance_id for i in victims}

    def receiveMsg_Purge(self, msg: Purge, sender: Any) -> None:
        halted: set[str] = set()
        for key in {i.public_key for i in self.instances.values() if i.live}:
            halted |= self.terminate_actor(key, 0, {})
        halted |= {i.instance_id for i in self.instances.values() if i.state in ("stopping", "cancelled")}
        # The host publishes host_stopped on our Done: it goes through LatticeEvents, behind every
        # actor_stopped we sent there (protocol.md §11.4, OTP's do_stop order).
        self._wait(msg.request_id, sender, halted, flush=True)

    def _wait(self, request_id: str, reply_to: Any, pending: set[str], *, flush: bool = False) -> None:
        waiter = _Waiter(request_id=request_id, reply_to=reply_to, pending=pending, flush=flush)
        if pending:
            self.waiters.append(waiter)
        else:
            self._answer(waiter)

    def _answer(self, waiter: _Waiter) -> None:
        if waiter.flush:
            self._flush()  # the barrier goes behind the events of this turn
            self.send(self.events, Flush(reply_to=waiter.reply_to, request_id=waiter.request_id))
        else:
            self.send(waiter.reply_to, Done(request_id=waiter.request_id))

    def receiveMsg_LatticeSnapshot(self, msg: LatticeSnapshot, sender: Any) -> None:
        """New links / call aliases: every instance gets them (they resolve host calls locally)."""
        self.snapshot = msg
        if self.template is not None:  # for every instance it owns, and those it will fork
            self.template.send(msg)
        for inst in self.instances.values():
            if inst.live and not self._forked(inst) and inst.address is not None:
                self.send(inst.address, msg)

    # --- inventory -----------------------------------------------------------------------------

    def receiveMsg_GetInventory(self, msg: GetInventory, sender: Any) -> None:
        self.send(sender, Inventory(request_id=msg.request_id, instances=tuple(
            InstanceInfo(public_key=i.public_key, instance_id=i.instance_id, image_ref=i.image_ref,
                         name=i.claims.name or "", revision=i.claims.revision,
                         annotations=i.annotations)
            for i in self.instances.values() if i.state == "running")))

    def _live(self, public_key: str) -> list[InstanceRecord]:
        return [i for i in self.instances.of_key(public_key) if i.live]

    def _count(self, public_key: str) -> None:
        """The running-instances gauge of `public_key` is due, at the end of this turn (a turn can
        start or stop hundreds of instances of one actor)."""
        if self.telemetry.metrics is not None:
            self.uncounted.add(public_key)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        self.exiting = True  # the template's end is not a crash to repair
        log.info("actor supervisor stopping", extra={"pid": os.getpid(), "instances": len(self.instances)})
        if self.template is not None:  # it halts the instances it still has, and ends
            self.template.send(ActorExitRequest())
            self.template.close()
