"""Live update of a running actor (protocol.md §2.3 `upd`, §11.6), ActorSupervisor's side.

The NativeWorker fetches and verifies the new module; every live instance swaps to it between two
calls (hostcore/actors/instance.py `SwapModule`); the control request is answered once every
instance has swapped or failed to. In OTP v0.59 this lives in `actor_module.ex`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hostcore.actors.placement import HOST
from hostcore.errors import LiveUpdateFailed, LiveUpdateNotRunning, LiveUpdateStaleRevision, LiveUpdateWrongActor
from hostcore.native.claims import ActorClaims
from hostcore.tree.messages import (
    ActorPrepared,
    ModuleImage,
    ModuleSwapped,
    PrepareActor,
    PutClaims,
    PutRefmap,
    SwapModule,
    UpdateActor,
    UpdateDone,
)
from hostcore.wire import cloudevents

if TYPE_CHECKING:
    from hostcore.actors.supervisor import ActorSupervisor

__all__ = ["LiveUpdate"]

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class _Update:
    """A live update: waiting for the NativeWorker (claims None), then for every instance."""

    request: UpdateActor
    reply_to: Any
    claims: ActorClaims | None = None
    pending: set[str] = field(default_factory=set)


class LiveUpdate:
    """Mixin of ActorSupervisor: `upd` handling. Uses the supervisor's instances and peers."""

    updates: dict[str, _Update]

    def receiveMsg_UpdateActor(self: ActorSupervisor, msg: UpdateActor, sender: Any) -> None:
        update = _Update(request=msg, reply_to=sender)
        if not self._live(msg.actor_id):
            return self._update_failed(update, LiveUpdateNotRunning(msg.actor_id).reason)
        request_id = str(uuid.uuid4())
        self.updates[request_id] = update
        self.send(self.native, PrepareActor(actor_ref=msg.new_actor_ref, request_id=request_id))

    def _update_failed(self: ActorSupervisor, update: _Update, error: str) -> None:
        log.error("live update refused", extra={"actor_key": update.request.actor_id, "error": error})
        self.send(update.reply_to, UpdateDone(request_id=update.request.request_id,
                                              error=LiveUpdateFailed(error).wire))

    def _fail_updates_waiting_on_native(self: ActorSupervisor, error: str) -> None:
        for request_id, update in list(self.updates.items()):
            if update.claims is None:
                del self.updates[request_id]
                self._update_failed(update, error)

    def _swap_modules(self: ActorSupervisor, request_id: str, prepared: ActorPrepared) -> None:
        update = self.updates[request_id]
        key, claims, live = update.request.actor_id, prepared.claims, self._live(update.request.actor_id)
        running = max((i.claims.revision for i in live), default=0)
        refusal: LiveUpdateFailed | None = None
        if claims.public_key != key:
            refusal = LiveUpdateWrongActor(prepared.actor_ref, claims.public_key, key)
        elif claims.revision <= running:
            refusal = LiveUpdateStaleRevision(claims.revision, running)
        elif not live:
            refusal = LiveUpdateNotRunning(key)
        if refusal is not None:
            del self.updates[request_id]
            return self._update_failed(update, refusal.reason)
        update.claims, update.pending = claims, {i.instance_id for i in live}
        image = self._module_image(prepared.cwasm_path) if any(i.node != HOST for i in live) else b""
        for inst in live:
            if inst.node != HOST:
                self.send(inst.address, ModuleImage(cwasm_path=prepared.cwasm_path, data=image))
            self._tell([inst], SwapModule(claims=claims, cwasm_path=prepared.cwasm_path,
                                          image_ref=prepared.actor_ref))
            # Restarts from now on use the new module, whether or not this instance swaps in time.
            inst.claims, inst.cwasm_path, inst.image_ref = claims, prepared.cwasm_path, prepared.actor_ref
            self._remember(inst)
        self.send(self.lattice, PutClaims(record=claims.to_cache_record()))
        self.send(self.lattice, PutRefmap(actor_ref=prepared.actor_ref, public_key=key))
        self._event(cloudevents.refmap_set(prepared.actor_ref, key))

    def receiveMsg_ModuleSwapped(self: ActorSupervisor, msg: ModuleSwapped, sender: Any) -> None:
        inst = self.instances.get(msg.instance_id)
        for request_id, update in list(self.updates.items()):
            if msg.instance_id not in update.pending or update.claims is None:
                continue
            key, revision = update.claims.public_key, update.claims.revision
            if msg.error:
                self._event(cloudevents.actor_update_failed(public_key=key, revision=revision,
                                                            instance_id=msg.instance_id, reason=msg.error))
            else:
                self._event(cloudevents.actor_updated(public_key=key, revision=revision, instance_id=msg.instance_id))
            self._update_progress(request_id, msg.instance_id)
        if inst is not None and msg.error:
            log.warning("instance kept its old module", extra={"instance_id": msg.instance_id, "error": msg.error})

    def _update_progress(self: ActorSupervisor, request_id: str, instance_id: str) -> None:
        update = self.updates[request_id]
        update.pending.discard(instance_id)
        if not update.pending:
            del self.updates[request_id]
            self.send(update.reply_to, UpdateDone(request_id=update.request.request_id))
