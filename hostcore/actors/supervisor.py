"""ActorSupervisor: the OTP DynamicSupervisor of actor instances (protocol.md §11).

Owns every instance count on this host. Thread-free, no NATS, no wasmtime Engine: it forks the
ActorModule processes (architecture.md "A process that forks must hold no threads"). Events go to
LatticeEvents; module bytes are fetched, verified and compiled by the NativeWorker.

With HOSTCORE_PLACEMENT=workers|spread, instances may run on workers that joined this host's
Thespian convention (issue 6; hostcore/worker.py, hostcore/actors/placement.py). Thespian reports a
worker's arrival and loss as ActorSystemConventionUpdate; it does *not* send ChildActorExited for
instances on a worker that died (thespian 4.0.1 never fills ConventionMemberData.hasRemoteActors),
so a lost worker's instances are restarted from the convention update.
"""

from __future__ import annotations

import collections
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest, ActorSystemConventionUpdate, ActorTypeDispatcher, ChildActorExited

from hostcore.actors.batches import BatchTracker
from hostcore.actors.instance import ActorModule
from hostcore.actors.messages import (
    ActorPrepared,
    Done,
    EvaluateStart,
    GetInventory,
    InitActorSupervisor,
    InstanceEvicted,
    InstanceFailed,
    InstanceInfo,
    InstanceStarted,
    Inventory,
    LatticeSnapshot,
    ModuleImage,
    ModuleSwapped,
    PrepareActor,
    PolicyVerdict,
    PrepareFailed,
    PublishEvent,
    Purge,
    PutClaims,
    PutRefmap,
    Ready,
    ScaleActor,
    StartActor,
    StartInstance,
    SwapModule,
    TerminateActor,
    UpdateActor,
    UpdateDone,
)
from hostcore.actors.placement import HOST, WorkerNode, choose_node, requirements_for, worker_from_capabilities
from hostcore.config import HostConfig, Placement
from hostcore.errors import HostcoreError, OtherRefRunning, PolicyDeniedStartActor, ScaleWithoutRef
from hostcore.native.claims import ActorClaims
from hostcore.procutil import set_pdeathsig
from hostcore.telemetry.supervision import SupervisorTelemetry

__all__ = ["ActorSupervisor", "matches_annotations", "scale_diff"]

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class _Instance:
    instance_id: str
    address: Any
    claims: ActorClaims
    cwasm_path: Path
    image_ref: str
    annotations: dict[str, str]
    node: str = HOST  # or the worker id it was placed on
    state: str = "starting"  # starting → running → stopping; or failed

    @property
    def public_key(self) -> str:
        return self.claims.public_key

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running")


@dataclass(slots=True, kw_only=True)
class _PendingStart:
    """A start waiting for the NativeWorker: `expect_key` is set for scale (the key is known)."""

    actor_ref: str
    count: int
    annotations: dict[str, str]
    expect_key: str = ""


@dataclass(slots=True, kw_only=True)
class _Update:
    """A live update: waiting for the NativeWorker (claims None), then for every instance."""

    request: UpdateActor
    reply_to: Any
    claims: ActorClaims | None = None
    pending: set[str] = field(default_factory=set)


@dataclass(slots=True, kw_only=True)
class _Waiter:
    request_id: str
    reply_to: Any
    pending: set[str] = field(default_factory=set)


def matches_annotations(wanted: dict[str, str], have: dict[str, str]) -> bool:
    """protocol.md §11.3: requested ⊆ existing; an empty request matches every instance."""
    return all(have.get(k) == v for k, v in wanted.items())


def scale_diff(current: int, desired: int) -> int:
    """`current - desired`: 0 nothing, > 0 terminate that many, < 0 start that many."""
    return current - desired


class ActorSupervisor(ActorTypeDispatcher):  # type: ignore[misc]
    """scale_actor / start_actor / terminate_actor over supervised ActorModule processes.

    Instances that die without being asked are restarted (new instance id, same module) unless the
    key exceeded `restart_intensity` restarts within `restart_period_s`, as an OTP supervisor.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config: HostConfig | None = None
        self.instances: dict[str, _Instance] = {}
        self.pending: dict[str, _PendingStart] = {}
        self.preparing: set[str] = set()  # keys with a scale waiting on the NativeWorker
        self.deferred: dict[str, list[ScaleActor]] = collections.defaultdict(list)
        self.restarts: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.waiters: list[_Waiter] = []
        self.updates: dict[str, _Update] = {}  # by NativeWorker request id
        self.snapshot = LatticeSnapshot()
        self.policy_pending: dict[str, tuple[ActorPrepared, _PendingStart]] = {}
        self.telemetry = SupervisorTelemetry()  # off until InitActorSupervisor (issue 8)
        self.workers: dict[str, WorkerNode] = {}  # joined workers, by worker id
        self.batches = BatchTracker(self._event)  # actors_started / _start_failed / _stopped

    # --- wiring --------------------------------------------------------------------------------

    def receiveMsg_InitActorSupervisor(self, msg: InitActorSupervisor, sender: Any) -> None:
        set_pdeathsig()
        self.config, self.events, self.native, self.lattice = msg.config, msg.events, msg.native, msg.lattice
        self.telemetry = SupervisorTelemetry.open(msg.config)
        self.batches.host_id = msg.config.host_id
        if msg.config.placement is not Placement.LOCAL:
            # Our admin is the convention leader: it tells us about every worker that joins or is lost.
            self.notifyOnSystemRegistrationChanges(True)
        self.send(sender, Ready(role="actor_supervisor"))

    def _event(self, event_type: str, data: dict[str, Any]) -> None:
        self.send(self.events, PublishEvent(event_type=event_type, data=data))

    # --- scale_actor ---------------------------------------------------------------------------

    def receiveMsg_ScaleActor(self, msg: ScaleActor, sender: Any) -> None:
        with self.telemetry.span("scale_actor", msg.trace, actor_key=msg.actor_id, actor_ref=msg.actor_ref,
                                 count=msg.count) as span:
            try:
                self.scale_actor(msg)
            except HostcoreError as err:
                span.fail(err.wire)
                log.error("scale failed", extra={"actor_key": msg.actor_id, "error": err.wire})
                self._event("actor_start_failed", {"actor_ref": msg.actor_ref or msg.actor_id, "error": err.wire})
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
                self._prepare(_PendingStart(actor_ref=ref, count=-diff, annotations={}, expect_key=key))

    def receiveMsg_StartActor(self, msg: StartActor, sender: Any) -> None:
        # protocol.md §2.3 QUIRK: OTP's 1..count range starts two instances for count 0; we
        # follow the Rust control client ("0 is interpreted as 1").
        with self.telemetry.span("start_actor", msg.trace, actor_ref=msg.actor_ref, count=msg.count):
            self._prepare(_PendingStart(actor_ref=msg.actor_ref, count=max(msg.count, 1),
                                        annotations=dict(msg.annotations)))

    def _prepare(self, start: _PendingStart) -> None:
        request_id = str(uuid.uuid4())
        self.pending[request_id] = start
        if start.expect_key:
            self.preparing.add(start.expect_key)
        self.send(self.native, PrepareActor(actor_ref=start.actor_ref, request_id=request_id,
                                            trace=self.telemetry.start_from_oci(request_id, start.actor_ref)))

    def receiveMsg_PrepareFailed(self, msg: PrepareFailed, sender: Any) -> None:
        if msg.request_id in self.updates:
            return self._update_failed(self.updates.pop(msg.request_id), msg.error)
        start = self.pending.pop(msg.request_id, None)
        self.telemetry.start_failed(msg.request_id, msg.error)
        log.error("actor start failed", extra={"actor_ref": msg.actor_ref, "error": msg.error})
        self._event("actor_start_failed", {"actor_ref": msg.actor_ref, "error": msg.error})
        if start is not None:
            self.batches.start_failed(start.expect_key, msg.actor_ref, start.annotations, msg.error)
        if start is not None and start.expect_key:
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
        log.error("actor start denied by policy", extra={"actor_ref": prepared.actor_ref, "error": error})
        self._event("actor_start_failed", {"actor_ref": prepared.actor_ref, "error": error})
        self.batches.start_failed(prepared.claims.public_key, prepared.actor_ref, start.annotations, error)
        if start.expect_key:
            self._release(start.expect_key)

    def _start_prepared(self, msg: ActorPrepared, start: _PendingStart) -> None:
        try:
            with self.telemetry.instances_of(msg.request_id):  # their "instance started" events
                self.start_actor(msg.claims, msg.cwasm_path, start)
        except HostcoreError as err:
            log.error("actor start refused", extra={"actor_ref": msg.actor_ref, "error": err.wire})
            self._event("actor_start_failed", {"actor_ref": msg.actor_ref, "error": err.wire})
            self.batches.start_failed(msg.claims.public_key, msg.actor_ref, start.annotations, err.wire)
        finally:
            if start.expect_key:
                self._release(start.expect_key)

    def _release(self, key: str) -> None:
        self.preparing.discard(key)
        for deferred in self.deferred.pop(key, []):
            self.receiveMsg_ScaleActor(deferred, None)

    def start_actor(self, claims: ActorClaims, cwasm_path: Path, start: _PendingStart) -> None:
        """Start `start.count` instances of a verified, compiled module.

        Raises:
            HostcoreError: the ref holds another key than the one being scaled, or the key already
                runs here from a different ref (OtherRefRunning, protocol.md §11.1 step 3).
        """
        pk = claims.public_key
        if start.expect_key and pk != start.expect_key:
            raise HostcoreError(f"Reference {start.actor_ref} holds actor {pk}, not {start.expect_key}")
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
        ids = []
        for _ in range(count):
            node = self._place(claims.public_key)
            inst = _Instance(instance_id=str(uuid.uuid4()), claims=claims, cwasm_path=cwasm_path, image_ref=ref,
                             annotations=annotations, node=node,
                             address=self.createActor(ActorModule, requirements_for(node)))
            self.instances[inst.instance_id] = inst
            self.telemetry.instance_starting(inst.instance_id)
            if node != HOST:
                image = image if image is not None else self._module_image(cwasm_path)
                self.send(inst.address, ModuleImage(cwasm_path=cwasm_path, data=image))
            self.send(inst.address, StartInstance(
                config=self.config, claims=claims, cwasm_path=cwasm_path, image_ref=ref,
                instance_id=inst.instance_id, annotations=annotations, snapshot=self.snapshot))
            ids.append(inst.instance_id)
        return ids

    def _place(self, public_key: str) -> str:
        assert self.config is not None
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

    def receiveMsg_InstanceStarted(self, msg: InstanceStarted, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        if inst is None or inst.state != "starting":
            return
        inst.state = "running"
        self.telemetry.instance_started(inst.instance_id, msg.pid)
        self.telemetry.instance_count(inst.public_key, sum(i.state == "running" for i in self._live(inst.public_key)))
        log.info("actor started", extra={"actor_key": inst.public_key, "instance_id": inst.instance_id,
                                         "pid": msg.pid, "node": inst.node or "host"})
        self._event("actor_started", {
            "public_key": inst.public_key, "image_ref": inst.image_ref, "api_version": msg.api_version,
            "instance_id": inst.instance_id, "annotations": inst.annotations,
            "claims": inst.claims.to_event_claims(),
        })
        if inst.image_ref:  # OTP: once per instance, after its actor_started
            self._event("refmap_set", {"oci_url": inst.image_ref, "public_key": inst.public_key})
        self.batches.instance_started(inst.instance_id)

    def receiveMsg_InstanceFailed(self, msg: InstanceFailed, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        if inst is None:
            return
        inst.state = "failed"
        self.telemetry.instance_failed(inst.instance_id, msg.error)
        log.error("actor instance failed to start", extra={"actor_key": inst.public_key, "error": msg.error})
        # protocol.md §3.3: an instantiation failure reports the public key as actor_ref.
        self._event("actor_start_failed", {"actor_ref": inst.public_key, "error": msg.error})
        self.batches.instance_failed(inst.instance_id, msg.error)
        self.send(inst.address, ActorExitRequest())

    # --- terminate_actor -----------------------------------------------------------------------

    def receiveMsg_TerminateActor(self, msg: TerminateActor, sender: Any) -> None:
        with self.telemetry.span("terminate_actor", msg.trace, actor_key=msg.actor_id, count=msg.count):
            halted = self.terminate_actor(msg.actor_id, msg.count, dict(msg.annotations))
        self.batches.stopping(halted, msg.actor_id, msg.count, len(self._live(msg.actor_id)), dict(msg.annotations))
        self._wait(msg.request_id, sender, halted)

    def terminate_actor(self, public_key: str, count: int, annotations: dict[str, str]) -> set[str]:
        """Halt `count` live instances of `public_key` matching `annotations` (0 = all matching).
        Returns the instance ids asked to stop; each publishes actor_stopped when it is gone.

        QUIRK (protocol.md §11.3): v0.59 could stop the key's RPC subscriber while non-matching
        instances still ran; here each instance owns its subscription, so the others keep serving.
        """
        matching = [i for i in self._live(public_key) if matches_annotations(annotations, i.annotations)]
        victims = matching if count == 0 else matching[:count]
        for inst in victims:
            inst.state = "stopping"
            self.send(inst.address, ActorExitRequest())
        return {i.instance_id for i in victims}

    def receiveMsg_Purge(self, msg: Purge, sender: Any) -> None:
        halted: set[str] = set()
        for key in {i.public_key for i in self.instances.values() if i.live}:
            halted |= self.terminate_actor(key, 0, {})
        halted |= {i.instance_id for i in self.instances.values() if i.state == "stopping"}
        self._wait(msg.request_id, sender, halted)

    def _wait(self, request_id: str, reply_to: Any, pending: set[str]) -> None:
        if not pending:
            self.send(reply_to, Done(request_id=request_id))
        else:
            self.waiters.append(_Waiter(request_id=request_id, reply_to=reply_to, pending=pending))

    # --- live update (protocol.md §2.3 upd, §11.6) -----------------------------------------------

    def receiveMsg_UpdateActor(self, msg: UpdateActor, sender: Any) -> None:
        update = _Update(request=msg, reply_to=sender)
        if not self._live(msg.actor_id):
            return self._update_failed(update, f"Actor {msg.actor_id} is not running on this host")
        request_id = str(uuid.uuid4())
        self.updates[request_id] = update
        self.send(self.native, PrepareActor(actor_ref=msg.new_actor_ref, request_id=request_id))

    def _update_failed(self, update: _Update, error: str) -> None:
        log.error("live update refused", extra={"actor_key": update.request.actor_id, "error": error})
        self.send(update.reply_to, UpdateDone(request_id=update.request.request_id,
                                              error=f"Unable to perform live update: {error}"))

    def _swap_modules(self, request_id: str, prepared: ActorPrepared) -> None:
        update = self.updates[request_id]
        key, claims, live = update.request.actor_id, prepared.claims, self._live(update.request.actor_id)
        running = max((i.claims.revision for i in live), default=0)
        error = ""
        if claims.public_key != key:
            error = f"{prepared.actor_ref} holds actor {claims.public_key}, not {key}"
        elif claims.revision <= running:
            error = f"new revision {claims.revision} is not greater than the running revision {running}"
        elif not live:
            error = f"Actor {key} is not running on this host"
        if error:
            del self.updates[request_id]
            return self._update_failed(update, error)
        update.claims, update.pending = claims, {i.instance_id for i in live}
        image = self._module_image(prepared.cwasm_path) if any(i.node != HOST for i in live) else b""
        for inst in live:
            if inst.node != HOST:
                self.send(inst.address, ModuleImage(cwasm_path=prepared.cwasm_path, data=image))
            self.send(inst.address, SwapModule(claims=claims, cwasm_path=prepared.cwasm_path,
                                               image_ref=prepared.actor_ref))
            # Restarts from now on use the new module, whether or not this instance swaps in time.
            inst.claims, inst.cwasm_path, inst.image_ref = claims, prepared.cwasm_path, prepared.actor_ref
        self.send(self.lattice, PutClaims(record=claims.to_cache_record()))
        self.send(self.lattice, PutRefmap(actor_ref=prepared.actor_ref, public_key=key))
        self._event("refmap_set", {"oci_url": prepared.actor_ref, "public_key": key})

    def receiveMsg_ModuleSwapped(self, msg: ModuleSwapped, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        for request_id, update in list(self.updates.items()):
            if msg.instance_id not in update.pending or update.claims is None:
                continue
            data = {"public_key": update.claims.public_key, "revision": update.claims.revision,
                    "instance_id": msg.instance_id}
            if msg.error:
                self._event("actor_update_failed", {**data, "reason": msg.error})
            else:
                self._event("actor_updated", data)
            self._update_progress(request_id, msg.instance_id)
        if inst is not None and msg.error:
            log.warning("instance kept its old module", extra={"instance_id": msg.instance_id, "error": msg.error})

    def _update_progress(self, request_id: str, instance_id: str) -> None:
        update = self.updates[request_id]
        update.pending.discard(instance_id)
        if not update.pending:
            del self.updates[request_id]
            self.send(update.reply_to, UpdateDone(request_id=update.request.request_id))

    # --- exits and restarts --------------------------------------------------------------------

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        # Thespian addresses are not hashable, hence the scan. A worker's admin forwards the exits
        # of instances it forked for us; duplicates are possible and find nothing here.
        inst = next((i for i in self.instances.values() if i.address == msg.childAddress), None)
        if inst is None:
            return
        if inst.node != HOST and inst.state == "starting":
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

    def _instance_exited(self, inst: _Instance, why: str, *, counted: bool) -> None:
        """Forget `inst`; restart it if it was live. `counted`: the restart counts towards the
        restart intensity (a crash); moves off a lost or draining worker do not."""
        del self.instances[inst.instance_id]
        self.telemetry.instance_count(inst.public_key, sum(i.state == "running" for i in self._live(inst.public_key)))
        if inst.state != "failed":
            self._event("actor_stopped", {"public_key": inst.public_key, "instance_id": inst.instance_id,
                                          "annotations": inst.annotations})  # v0.63 adds the annotations
        self.batches.instance_gone(inst.instance_id)
        if inst.live:  # nobody asked it to stop
            log.warning(why, extra={"actor_key": inst.public_key, "instance_id": inst.instance_id,
                                    "node": inst.node or "host"})
            self._restart(inst, counted=counted)
        for request_id, update in list(self.updates.items()):
            if inst.instance_id in update.pending:
                self._update_progress(request_id, inst.instance_id)
        for waiter in list(self.waiters):
            waiter.pending.discard(inst.instance_id)
            if not waiter.pending:
                self.waiters.remove(waiter)
                self.send(waiter.reply_to, Done(request_id=waiter.request_id))

    def _restart(self, inst: _Instance, *, counted: bool = True) -> None:
        assert self.config is not None
        if not counted:
            return self._start_instances(inst.claims, inst.cwasm_path, inst.image_ref, 1, inst.annotations)
        window = self.restarts[inst.public_key]
        now = time.monotonic()
        while window and now - window[0] > self.config.restart_period_s:
            window.popleft()
        if len(window) >= self.config.restart_intensity:
            error = (f"Actor {inst.public_key} restarted {len(window)} times within "
                     f"{self.config.restart_period_s:g} s; giving up")
            log.error("restart intensity exceeded", extra={"actor_key": inst.public_key})
            self._event("actor_start_failed", {"actor_ref": inst.public_key, "error": error})
            return
        window.append(now)
        self.telemetry.restarted(inst.public_key)
        self._start_instances(inst.claims, inst.cwasm_path, inst.image_ref, 1, inst.annotations)

    # --- workers (issue 6: Thespian convention) -------------------------------------------------

    def receiveMsg_ActorSystemConventionUpdate(self, msg: ActorSystemConventionUpdate, sender: Any) -> None:
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

    def receiveMsg_InstanceEvicted(self, msg: InstanceEvicted, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        if inst is None or inst.node == HOST:
            return
        worker = self.workers.get(inst.node)
        if worker is not None and not worker.draining:
            worker.draining = True
            log.info("worker draining", extra={"worker_id": worker.worker_id})
        self._instance_exited(inst, "worker shutting down, moving its instance", counted=False)

    def receiveMsg_LatticeSnapshot(self, msg: LatticeSnapshot, sender: Any) -> None:
        """New links / call aliases: every instance gets them (they resolve host calls locally)."""
        self.snapshot = msg
        for inst in self.instances.values():
            if inst.live:
                self.send(inst.address, msg)

    # --- inventory -----------------------------------------------------------------------------

    def receiveMsg_GetInventory(self, msg: GetInventory, sender: Any) -> None:
        self.send(sender, Inventory(request_id=msg.request_id, instances=tuple(
            InstanceInfo(public_key=i.public_key, instance_id=i.instance_id, image_ref=i.image_ref,
                         name=i.claims.name or "", revision=i.claims.revision,
                         annotations=i.annotations, claims_record=i.claims.to_cache_record())
            for i in self.instances.values() if i.state == "running")))

    def _live(self, public_key: str) -> list[_Instance]:
        return [i for i in self.instances.values() if i.public_key == public_key and i.live]

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        log.info("actor supervisor stopping", extra={"pid": os.getpid(), "instances": len(self.instances)})
