"""ActorModule: an actor instance as a Thespian actor, for instances placed on a worker of the
convention (hostcore/actors/worker_nodes.py). This host's own instances are plain processes the
InstanceTemplate forks (hostcore/actors/instance_process.py); both serve through an InstanceCore.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import wasmtime
from thespian.actors import ActorExitRequest

from hostcore.actors.instance_core import InstanceCore
from hostcore.actors.placement import capability_check
from hostcore.errors import ModuleCompileFailed
from hostcore.native.wasm import load_module
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import ORPHANED, Adoptable, Adopted
from hostcore.tree.bridge import NatsBridgeActor
from hostcore.tree.messages import (
    InstanceEvicted,
    InstanceFailed,
    InstanceStarted,
    LatticeSnapshot,
    ModuleImage,
    ModuleSwapped,
    StartInstance,
    SwapModule,
)

__all__ = ["ActorModule"]

log = logging.getLogger(__name__)


async def _call(fn: Any) -> None:
    fn()


class ActorModule(Adoptable, NatsBridgeActor):
    """One supervised instance on a worker. ActorSupervisor owns its lifetime: an
    ActorExitRequest drains the subscription (in-flight calls finish) and ends the process. It
    outlives a supervisor that dies, and reports to the one that adopts it (hostcore/supervision.py).
    """

    core: InstanceCore | None = None
    snapshot = LatticeSnapshot()
    supervisor: Any = None
    instance_id = ""
    images: dict[Path, bytes] | None = None  # ModuleImage bytes waiting to be loaded

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        """Thespian placement hook: ActorSupervisor pins an instance to a worker through
        `targetActorRequirements` (hostcore/actors/placement.py)."""
        return capability_check(capabilities, requirements)

    def receiveMsg_ModuleImage(self, msg: ModuleImage, sender: Any) -> None:
        """The module bytes for the next StartInstance / SwapModule (they may not be on this
        machine's disk). Kept only until that message loads them."""
        if self.images is None:
            self.images = {}
        self.images[msg.cwasm_path] = msg.data

    def receiveMsg_StartInstance(self, msg: StartInstance, sender: Any) -> None:
        set_pdeathsig()  # the parent's death ends us (no orphans) until we run
        self.supervisor, self.instance_id = sender, msg.instance_id
        try:
            self.core = InstanceCore(msg, load=self._load_module)
            self.nats_start(msg.config.rpc, self.core.setup, name=self.core.connection_name)
            self.core.telemetry.start(self.loop)
            self.outlive_parent(self.loop)
        except Exception as err:  # noqa: BLE001 -- reported to the supervisor as actor_start_failed
            log.exception("instance failed to start", extra={"actor_key": msg.claims.public_key})
            self.send(sender, InstanceFailed(instance_id=msg.instance_id, error=str(getattr(err, "wire", err))))
            return
        self.send(sender, InstanceStarted(instance_id=msg.instance_id, api_version=self.core.api_version,
                                          pid=os.getpid()))

    def _load_module(self, engine: wasmtime.Engine, cwasm_path: Path) -> wasmtime.Module:
        data = self.images.pop(cwasm_path, None) if self.images else None
        if data is None:
            return load_module(engine, cwasm_path)
        try:  # shipped by the supervisor (ModuleImage); same wasmtime version and Config checks
            return wasmtime.Module.deserialize(engine, data)
        except wasmtime.WasmtimeError as exc:
            raise ModuleCompileFailed(str(exc)) from exc

    def adoption_reply(self, instance_id: str) -> Adopted:
        self.supervisor = self.adopted_by
        running = self.core is not None and getattr(self, "nc", None) is not None
        return Adopted(instance_id=instance_id, pid=os.getpid(), running=running,
                       api_version=self.core.api_version if self.core is not None else 0)

    def on_inbox_item(self, item: Any) -> None:
        if item is ORPHANED:
            self.stop_orphan()

    def receiveMsg_LatticeSnapshot(self, msg: LatticeSnapshot, sender: Any) -> None:
        self.snapshot = msg
        if self.core is not None:
            core = self.core
            self.loop.call_soon_threadsafe(core.update_snapshot, msg)

    def receiveMsg_SwapModule(self, msg: SwapModule, sender: Any) -> None:
        """Live update: build the new runtime here, switch to it between two calls on the loop,
        then close the old one. On failure the old one stays."""
        core = self.core
        assert core is not None
        try:
            runtime = core.build_runtime(msg.claims, msg.cwasm_path)
        except Exception as err:  # noqa: BLE001 -- reported as actor_update_failed
            self.send(sender, ModuleSwapped(instance_id=self.instance_id, error=str(getattr(err, "wire", err))))
            return
        asyncio.run_coroutine_threadsafe(_call(lambda: core.swap(runtime, msg.claims)), self.loop).result(
            core.config.rpc_timeout_s * 2 + 5)
        self.send(sender, ModuleSwapped(instance_id=self.instance_id))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        if self.supervisor is not None and sender not in (self.supervisor, self.myAddress):
            # A worker's admin is shutting down: let the supervisor start a replacement now,
            # while this one drains, instead of after the exit notice.
            self.send(self.supervisor, InstanceEvicted(instance_id=self.instance_id))
        self.nats_stop()
        if self.core is not None:
            self.core.close()
