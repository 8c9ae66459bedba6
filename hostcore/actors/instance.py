"""ActorModule: one actor instance, in its own OS process (architecture.md).

It loads the precompiled module, opens its own NATS connection and queue-subscribes to
`wasmbus.rpc.{lattice}.{actor_key}` (queue group = subject, protocol.md §4.1), so NATS spreads
calls over every instance of every host and Thespian stays off the hot path. The guest runs on the
NATS loop thread; calls are serial per instance, bounded by the per-call time limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from thespian.actors import ActorExitRequest

from hostcore.actors.inheritance import inherit
from hostcore.actors.outbound import HostCallRouter, OutboundConnection
from hostcore.actors.placement import capability_check
from hostcore.actors.rpc import BuiltinHostCalls, InvocationHandler
from hostcore.control.policy import PolicyEvaluator, PolicyHost, invocation_source, invocation_target
from hostcore.errors import HostcoreError, ModuleCompileFailed, PolicyDeniedInvocation
from hostcore.native.chunking import (
    RESPONSE_CHUNK_THRESHOLD,
    ChunkStore,
    chunk_response,
    dechunk_invocation,
    needs_dechunk,
)
from hostcore.native.claims import ActorClaims
from hostcore.native.invocation import Invocation, InvocationResponse, InvocationValidator, WasmCloudEntity
from hostcore.native.epoch import EpochTicker
from hostcore.native.wasm import ActorRuntime, load_module, new_engine
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import ORPHANED, Adoptable, Adopted
from hostcore.telemetry.rpc import InstanceTelemetry, RpcEvents
from hostcore.tree.bridge import NatsBridgeActor
from hostcore.tree.messages import (
    InstanceEvicted,
    InstanceFailed,
    InstanceStarted,
    LatticeSnapshot,
    ModuleImage,
    ModuleSwapped,
    StartForked,
    StartInstance,
    SwapModule,
)
from hostcore.wire import subjects

__all__ = ["ActorModule"]

log = logging.getLogger(__name__)


async def _call(fn: Callable[[], None]) -> None:
    fn()


# The caller of an RPC gives up after its RPC timeout (2 s by default); a guest still running then
# answers nobody. So the guest is cut off a little before, leaving time for the error reply.
_GUEST_SHARE_OF_RPC_TIMEOUT = 0.9


class ActorModule(Adoptable, NatsBridgeActor):
    """One supervised instance. Created by ActorSupervisor, which owns its lifetime: an
    ActorExitRequest drains the subscription (in-flight calls finish) and ends the process. It
    outlives a supervisor that dies, and reports to the one that adopts it (hostcore/supervision.py).
    """

    runtime: ActorRuntime | None = None
    ticker: EpochTicker | None = None
    snapshot = LatticeSnapshot()
    supervisor: Any = None
    images: dict[Path, bytes] | None = None  # ModuleImage bytes waiting to be loaded

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        """Thespian placement hook: ActorSupervisor pins an instance to a worker through
        `targetActorRequirements` (hostcore/actors/placement.py)."""
        return capability_check(capabilities, requirements)

    def receiveMsg_ModuleImage(self, msg: ModuleImage, sender: Any) -> None:
        """On a worker: the module bytes for the next StartInstance / SwapModule (they may not be
        on this machine's disk). Kept only until that message loads them."""
        if self.images is None:
            self.images = {}
        self.images[msg.cwasm_path] = msg.data

    def receiveMsg_StartInstance(self, msg: StartInstance, sender: Any) -> None:
        self._start(msg, sender, None, None)

    def receiveMsg_StartForked(self, msg: StartForked, sender: Any) -> None:
        """Forked by the InstanceTemplate: the start, the Engine and the Module are inherited."""
        try:
            inheritance = inherit(msg.instance_id)
        except LookupError as err:
            self.send(sender, InstanceFailed(instance_id=msg.instance_id, error=str(err)))
            return
        self._start(inheritance.start, sender, inheritance.engine, inheritance.module)

    def _start(self, msg: StartInstance, sender: Any, engine: wasmtime.Engine | None,
               module: wasmtime.Module | None) -> None:
        set_pdeathsig()  # the parent's death ends us (no orphans): template, supervisor, or a worker's admin
        self.supervisor = sender
        cfg, claims = msg.config, msg.claims
        self.config, self.instance_id = cfg, msg.instance_id
        self.telemetry = InstanceTelemetry.open(cfg, actor_key=claims.public_key, instance_id=msg.instance_id)
        self.rpcevt_subject = subjects.rpc_events(cfg.lattice_prefix)
        self.outbound = OutboundConnection(cfg.rpc, f"hostcore-out-{claims.public_key[:8]}-{msg.instance_id[:8]}",
                                           js_domain=cfg.js_domain)
        try:
            self.engine = engine if engine is not None else new_engine()
            self.ticker = EpochTicker(self.engine, on_demand=True)  # idle instances cost no CPU
            self.ticker.start()
            self.runtime = self._runtime(claims, msg.cwasm_path, module)
            self.router.update(msg.snapshot)
            self.handler = InvocationHandler(
                claims=claims, runtime=self.runtime, validator=InvocationValidator(cfg.cluster_issuers),
                instance_id=msg.instance_id, on_result=self.telemetry.wrap_result(self._rpc_event),
            )
            subject = subjects.actor_rpc(cfg.lattice_prefix, claims.public_key)

            async def setup(nc: NatsClient) -> None:
                self.rpc_events = RpcEvents(nc.publish, self.rpcevt_subject, cfg.host_id, asyncio.get_running_loop())
                self.chunks = ChunkStore(nc.jetstream(domain=cfg.js_domain), cfg.lattice_prefix)
                self.policy = PolicyEvaluator(nc, topic=cfg.policy_topic, timeout_s=cfg.policy_timeout_s,
                                              host=PolicyHost.from_config(cfg))
                if cfg.policy_topic and cfg.policy_changes_topic:
                    await self.policy.subscribe_changes(cfg.policy_changes_topic)
                self.plain = not self.policy.enabled
                # wrap_rpc: a span and a latency sample per call when telemetry is on.
                await nc.subscribe(subject, queue=subject, cb=self.telemetry.wrap_rpc(self._on_rpc),
                                   pending_msgs_limit=65536)

            self.nats_start(cfg.rpc, setup, name=f"hostcore-actor-{claims.public_key[:8]}-{msg.instance_id[:8]}")
            self.telemetry.start(self.loop)
            self.outlive_parent(self.loop)
        except Exception as err:  # noqa: BLE001 -- reported to the supervisor as actor_start_failed
            log.exception("instance failed to start", extra={"actor_key": claims.public_key})
            self.send(sender, InstanceFailed(instance_id=msg.instance_id, error=str(getattr(err, "wire", err))))
            return
        self.send(sender, InstanceStarted(instance_id=msg.instance_id, api_version=self.runtime.api_version,
                                          pid=os.getpid()))

    def _runtime(self, claims: ActorClaims, cwasm_path: Path, module: wasmtime.Module | None = None) -> ActorRuntime:
        cfg = self.config
        guest_log = logging.getLogger("hostcore.guest")
        router = HostCallRouter(claims=claims, lattice_prefix=cfg.lattice_prefix, signer=cfg.cluster_key,
                                rpc_timeout_s=cfg.rpc_timeout_s, connection=self.outbound,
                                on_result=self._rpc_event, tracer=self.telemetry.tracer)
        if getattr(self, "router", None) is not None:
            router.update(self.snapshot)
        self.router = router
        return ActorRuntime(
            self.engine, module if module is not None else self._load_module(cwasm_path),
            host_call=BuiltinHostCalls(claims, lattice_prefix=cfg.lattice_prefix, forward=router),
            console_log=lambda text: guest_log.info("[%s] %s", claims.public_key, text),
            call_timeout_s=cfg.rpc_timeout_s * _GUEST_SHARE_OF_RPC_TIMEOUT, max_memory_bytes=cfg.max_memory_bytes,
            ticker=self.ticker,
        )

    def _load_module(self, cwasm_path: Path) -> wasmtime.Module:
        data = self.images.pop(cwasm_path, None) if self.images else None
        if data is None:
            return load_module(self.engine, cwasm_path)
        try:  # shipped by the supervisor (ModuleImage); same wasmtime version and Config checks
            return wasmtime.Module.deserialize(self.engine, data)
        except wasmtime.WasmtimeError as exc:
            raise ModuleCompileFailed(str(exc)) from exc

    def _rpc_event(self, ok: bool, source: WasmCloudEntity, dest: WasmCloudEntity, operation: str, size: int) -> None:
        """protocol.md §3.5 invocation_succeeded / invocation_failed; runs on the loop thread.
        Queued: `_on_rpc` publishes it right after the reply (RpcEvents)."""
        self.rpc_events.add(ok, source, dest, operation, size)

    def adoption_reply(self, instance_id: str) -> Adopted:
        self.supervisor = self.adopted_by
        running = self.runtime is not None and getattr(self, "nc", None) is not None
        return Adopted(instance_id=instance_id, pid=os.getpid(), running=running,
                       api_version=self.runtime.api_version if self.runtime is not None else 0)

    def on_inbox_item(self, item: Any) -> None:
        if item is ORPHANED:
            self.stop_orphan()

    def receiveMsg_LatticeSnapshot(self, msg: LatticeSnapshot, sender: Any) -> None:
        self.snapshot = msg
        if getattr(self, "router", None) is not None:
            self.router.update(msg)

    def receiveMsg_SwapModule(self, msg: SwapModule, sender: Any) -> None:
        """Live update: build the new runtime here, switch to it between two calls on the loop
        thread (calls are serial there), then close the old one. On failure the old one stays."""
        try:
            runtime = self._runtime(msg.claims, msg.cwasm_path)
        except Exception as err:  # noqa: BLE001 -- reported as actor_update_failed
            self.send(sender, ModuleSwapped(instance_id=self.instance_id, error=str(getattr(err, "wire", err))))
            return

        def swap() -> None:
            old, self.runtime = self.runtime, runtime
            self.handler.runtime, self.handler.claims = runtime, msg.claims
            if old is not None:
                old.close()

        asyncio.run_coroutine_threadsafe(_call(swap), self.loop).result(self.config.rpc_timeout_s * 2 + 5)
        self.send(sender, ModuleSwapped(instance_id=self.instance_id))

    async def _on_rpc(self, msg: Msg) -> None:
        checked = self.handler.check(msg.data)
        if isinstance(checked, bytes):
            reply = checked
        elif self.plain and not needs_dechunk(checked.content_length, checked.msg):
            reply = self.handler.execute(checked)  # the fast path: no policy, nothing to fetch
            if len(reply) > RESPONSE_CHUNK_THRESHOLD:
                reply = await self._chunk_reply(checked, reply)
        else:
            reply = await self._slow_path(checked)
        if msg.reply:
            await self.nc.publish(msg.reply, reply)
        if self.rpc_events.queued:
            await self.rpc_events.flush()

    async def _slow_path(self, inv: Invocation) -> bytes:
        """protocol.md §4.7 steps 6–7 (policy, de-chunk) then the call, and §4.9 response chunking."""
        try:
            if self.policy.enabled:
                claims = self.snapshot.claims
                own = self.handler.claims
                origin_record = claims.get(inv.origin.public_key)
                target_record = claims.get(inv.target.public_key) or (own.to_cache_record() if
                                                                     inv.target.public_key == own.public_key else None)
                decision = await self.policy.evaluate_invocation(invocation_source(inv.origin, origin_record),
                                                                 invocation_target(inv.target, target_record))
                if not decision.permitted:
                    raise PolicyDeniedInvocation(decision.message)
            inv = await dechunk_invocation(self.chunks, inv)
        except Exception as err:  # noqa: BLE001 -- an answer, never a dropped request
            return self.handler.failure(inv, err)
        reply = self.handler.execute(inv)
        return await self._chunk_reply(inv, reply) if len(reply) > RESPONSE_CHUNK_THRESHOLD else reply

    async def _chunk_reply(self, inv: Invocation, reply: bytes) -> bytes:
        resp = InvocationResponse.from_wire(reply)
        try:
            return (await chunk_response(self.chunks, resp, inv.id)).to_wire()
        except HostcoreError as err:
            return self.handler.failure(inv, err)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        if self.supervisor is not None and sender not in (self.supervisor, self.myAddress):
            # A worker's admin is shutting down: let the supervisor start a replacement now,
            # while this one drains, instead of after the exit notice.
            self.send(self.supervisor, InstanceEvicted(instance_id=self.instance_id))
        self.nats_stop()
        if getattr(self, "telemetry", None) is not None:
            self.telemetry.close()  # after the loop stopped: the last metrics flush, queued spans
        if getattr(self, "outbound", None) is not None:
            self.outbound.close()
        if self.ticker is not None:
            self.ticker.close()
