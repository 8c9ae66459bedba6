"""What one actor instance is, whichever process hosts it.

An instance loads the precompiled module, opens its own NATS connection and queue-subscribes to
`wasmbus.rpc.{lattice}.{actor_key}` (queue group = subject, protocol.md §4.1), so NATS spreads
calls over every instance of every host and no supervisor is on the hot path. The guest runs on
the NATS loop; calls are serial per instance, bounded by the per-call time limit.

Two kinds of process host an InstanceCore: a process the InstanceTemplate forks
(hostcore/actors/instance_process.py, every instance of this host) and an ActorModule, the
Thespian actor placed on a worker of the convention (hostcore/actors/instance.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import wasmtime
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from hostcore.actors.outbound import HostCallRouter, OutboundConnection
from hostcore.actors.rpc import BuiltinHostCalls, InvocationHandler
from hostcore.control.policy import PolicyEvaluator, PolicyHost, invocation_source, invocation_target
from hostcore.errors import HostcoreError, PolicyDeniedInvocation
from hostcore.native.chunking import (
    RESPONSE_CHUNK_THRESHOLD,
    ChunkStore,
    chunk_response,
    dechunk_invocation,
    needs_dechunk,
)
from hostcore.native.claims import ActorClaims
from hostcore.native.epoch import EpochTicker
from hostcore.native.invocation import Invocation, InvocationResponse, InvocationValidator, WasmCloudEntity
from hostcore.native.wasm import ActorRuntime, ModuleImports, load_module, new_engine
from hostcore.telemetry.rpc import InstanceTelemetry, RpcEvents
from hostcore.tree.messages import LatticeSnapshot, StartInstance
from hostcore.wire import subjects

__all__ = ["InstanceCore", "ModuleLoader"]

log = logging.getLogger(__name__)

ModuleLoader = Callable[[wasmtime.Engine, Path], wasmtime.Module]

# The caller of an RPC gives up after its RPC timeout (2 s by default); a guest still running then
# answers nobody. So the guest is cut off a little before, leaving time for the error reply.
_GUEST_SHARE_OF_RPC_TIMEOUT = 0.9


class InstanceCore:
    """One instance's runtime, handler and connections. Built on the process's main thread
    (raises what the module load or instantiation raises); `setup` then runs on the NATS loop,
    and everything after it on that loop except `close`, which runs once the loop stopped."""

    nc: NatsClient

    def __init__(self, start: StartInstance, *, engine: wasmtime.Engine | None = None,
                 module: wasmtime.Module | None = None, imports: ModuleImports | None = None,
                 load: ModuleLoader = load_module) -> None:
        cfg, claims = start.config, start.claims
        self.config, self.instance_id, self.load = cfg, start.instance_id, load
        self.actor_key = claims.public_key
        self.snapshot = start.snapshot
        self.telemetry = InstanceTelemetry.open(cfg, actor_key=claims.public_key, instance_id=start.instance_id)
        self.outbound = OutboundConnection(cfg.rpc, _name("out", claims.public_key, start.instance_id),
                                           js_domain=cfg.js_domain)
        self.ticker: EpochTicker | None = None
        try:
            self.engine = engine if engine is not None else new_engine()
            self.ticker = EpochTicker(self.engine, on_demand=True)  # idle instances cost no CPU
            self.ticker.start()
            self.router: HostCallRouter | None = None
            self.runtime = self.build_runtime(claims, start.cwasm_path, module, imports)
            self.handler = InvocationHandler(
                claims=claims, runtime=self.runtime, validator=InvocationValidator(cfg.cluster_issuers),
                instance_id=start.instance_id, on_result=self.telemetry.wrap_result(self._rpc_event),
            )
        except BaseException:
            self.close()
            raise
        self.subject = subjects.actor_rpc(cfg.lattice_prefix, claims.public_key)
        self.connection_name = _name("actor", claims.public_key, start.instance_id)

    @property
    def api_version(self) -> int:
        return self.runtime.api_version

    def build_runtime(self, claims: ActorClaims, cwasm_path: Path, module: wasmtime.Module | None = None,
                      imports: ModuleImports | None = None) -> ActorRuntime:
        """A runtime for `claims` (the current one, or a live update's); `imports`, `module`'s
        when defined already. Raises HostcoreError."""
        cfg = self.config
        guest_log = logging.getLogger("hostcore.guest")
        router = HostCallRouter(claims=claims, lattice_prefix=cfg.lattice_prefix, signer=cfg.cluster_key,
                                rpc_timeout_s=cfg.rpc_timeout_s, connection=self.outbound,
                                on_result=self._rpc_event, tracer=self.telemetry.tracer)
        router.update(self.snapshot)
        self.router = router
        return ActorRuntime(
            self.engine, module if module is not None else self.load(self.engine, cwasm_path),
            host_call=BuiltinHostCalls(claims, lattice_prefix=cfg.lattice_prefix, forward=router),
            console_log=lambda text: guest_log.info("[%s] %s", claims.public_key, text),
            call_timeout_s=cfg.rpc_timeout_s * _GUEST_SHARE_OF_RPC_TIMEOUT, max_memory_bytes=cfg.max_memory_bytes,
            ticker=self.ticker, imports=imports,
        )

    def rename(self, instance_id: str) -> None:
        """A spare, built and connected under a placeholder, becomes instance `instance_id`
        (before `subscribe`). Its NATS connection keeps the placeholder's name."""
        self.instance_id = self.handler.instance_id = instance_id
        self.outbound.name = _name("out", self.actor_key, instance_id)  # connects on first use
        self.telemetry.rename(self.config, instance_id)

    async def setup(self, nc: NatsClient) -> None:
        """On the loop, once connected: what the calls need, then the RPC subscription."""
        await self.prepare(nc)
        await self.subscribe()

    async def prepare(self, nc: NatsClient) -> None:
        """On the loop, once connected: what the calls need (all a spare does ahead of time)."""
        cfg = self.config
        self.nc = nc
        self.rpc_events = RpcEvents(nc.publish, subjects.rpc_events(cfg.lattice_prefix), cfg.host_id,
                                    asyncio.get_running_loop())
        self.chunks = ChunkStore(nc.jetstream(domain=cfg.js_domain), cfg.lattice_prefix)
        self.policy = PolicyEvaluator(nc, topic=cfg.policy_topic, timeout_s=cfg.policy_timeout_s,
                                      host=PolicyHost.from_config(cfg))
        if cfg.policy_topic and cfg.policy_changes_topic:
            await self.policy.subscribe_changes(cfg.policy_changes_topic)
        self.plain = not self.policy.enabled

    async def subscribe(self, subject: str = "") -> None:
        """The RPC subscription: from here on NATS may hand this instance calls. `subject`: another
        than the actor's (a rehearsal's, which nobody calls)."""
        subject = subject or self.subject
        # wrap_rpc: a span and a latency sample per call when telemetry is on.
        await self.nc.subscribe(subject, queue=subject, cb=self.telemetry.wrap_rpc(self.on_rpc),
                                pending_msgs_limit=65536)

    def update_snapshot(self, snapshot: LatticeSnapshot) -> None:
        """New links / call aliases (host calls resolve them locally)."""
        self.snapshot = snapshot
        if self.router is not None:
            self.router.update(snapshot)

    def swap(self, runtime: ActorRuntime, claims: ActorClaims) -> None:
        """Live update: on the loop, between two calls (they are serial there)."""
        old, self.runtime = self.runtime, runtime
        self.handler.runtime, self.handler.claims = runtime, claims
        if old is not None:
            old.close()

    def _rpc_event(self, ok: bool, source: WasmCloudEntity, dest: WasmCloudEntity, operation: str, size: int) -> None:
        """protocol.md §3.5 invocation_succeeded / invocation_failed; runs on the loop.
        Queued: `on_rpc` publishes it right after the reply (RpcEvents)."""
        self.rpc_events.add(ok, source, dest, operation, size)

    async def on_rpc(self, msg: Msg) -> None:
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

    def close(self, *, wait: bool = True) -> None:
        """After the loop stopped: the last metrics flush and queued spans, then the rest.
        `wait=False`: the process ends next, so its ticker thread is not joined."""
        self.telemetry.close()
        self.outbound.close()
        if self.ticker is not None:
            self.ticker.close(wait=wait)


def _name(kind: str, actor_key: str, instance_id: str) -> str:
    """A NATS connection's name, as the server's monitoring lists it."""
    return f"hostcore-{kind}-{actor_key[:8]}-{instance_id[:8]}"
