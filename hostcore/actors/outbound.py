"""An instance's outbound host calls over the lattice (protocol.md §4.10 steps 2–5): link
definitions to providers, actor keys and call aliases to actors.

The guest runs on the instance's NATS loop thread and waits for the host call's answer, so the
request goes out on a second connection with its own loop thread, opened on the first outbound
call (most actors never make one). Routing data arrives as LatticeSnapshots; reads are lock-free
(each snapshot replaces the tables in one assignment).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from hostcore.errors import (
    CallAliasNotFound,
    ChunkError,
    HostCallError,
    InvocationError,
    MissingCapabilityClaim,
    RpcTimeout,
)
from hostcore.native.chunking import CHUNK_THRESHOLD, ChunkStore, chunk_invocation, dechunk_response, needs_dechunk
from hostcore.native.claims import ActorClaims
from hostcore.native.invocation import InvocationResponse, WasmCloudEntity, new_invocation
from hostcore.native.nkeys import KeyPair
from hostcore.natsconn import NatsEndpoint
from hostcore.telemetry.process import count_reconnect
from hostcore.telemetry.tracing import Tracer, client_span
from hostcore.tree.messages import LatticeSnapshot
from hostcore.wire import subjects
from hostcore.wire.chunking_rules import LARGE_CALL_TIMEOUT_S, host_call_timeout

log = logging.getLogger(__name__)

__all__ = ["HostCallRouter", "OutboundConnection"]

_CLOSE_TIMEOUT_S = 2.0

T = TypeVar("T")
RpcEventSink = Callable[[bool, WasmCloudEntity, WasmCloudEntity, str, int], None]


class OutboundConnection:
    """A NATS connection on its own loop thread for blocking requests from another thread.

    Owned by the ActorModule that created it; `close()` ends connection and thread (idempotent).
    """

    def __init__(self, url: str | NatsEndpoint, name: str, *, js_domain: str | None = None) -> None:
        self.url, self.name = url, name
        self.js_domain = js_domain  # the chunking object store's JetStream domain (protocol.md §12.4)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NatsClient | None = None
        self._chunks: ChunkStore | None = None
        self._lock = threading.Lock()

    def _ensure(self, timeout_s: float) -> tuple[asyncio.AbstractEventLoop, NatsClient]:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, daemon=True, name="nats-out").start()
                connect = nats.connect(**NatsEndpoint.kwargs_for(self.url), name=self.name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                       reconnected_cb=self._reconnected)
                self._nc = asyncio.run_coroutine_threadsafe(connect, loop).result(timeout_s)
                self._loop = loop
            assert self._nc is not None
            return self._loop, self._nc

    def run(self, make: Callable[[NatsClient], Awaitable[T]], timeout_s: float) -> T:
        """Run `make(nc)` on the connection's loop and wait for its result (bounded)."""
        loop, nc = self._ensure(timeout_s)
        return asyncio.run_coroutine_threadsafe(make(nc), loop).result(timeout_s + 1)  # type: ignore[arg-type]

    def chunk_store(self, lattice_prefix: str) -> ChunkStore:
        """The object store for chunked payloads on this connection (opened once)."""
        if self._chunks is None:
            _, nc = self._ensure(LARGE_CALL_TIMEOUT_S)
            self._chunks = ChunkStore(nc.jetstream(domain=self.js_domain), lattice_prefix)
        return self._chunks

    async def _reconnected(self) -> None:
        count_reconnect(self.name)

    def request(self, subject: str, data: bytes, timeout_s: float, headers: dict[str, str] | None = None) -> bytes:
        """Send a request (with `headers`, e.g. traceparent) and block for the reply. Raises
        RpcTimeout on timeout / no responders."""
        try:
            loop, nc = self._ensure(timeout_s)
            msg = asyncio.run_coroutine_threadsafe(nc.request(subject, data, timeout=timeout_s, headers=headers),
                                                   loop).result(timeout_s + 1)
        except (NatsTimeout, NoRespondersError, TimeoutError, asyncio.TimeoutError, OSError):
            raise RpcTimeout() from None
        return bytes(msg.data)

    def close(self) -> None:
        with self._lock:
            loop, nc, self._loop, self._nc = self._loop, self._nc, None, None
        if loop is None or nc is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(nc.drain(), loop).result(_CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 -- shutting down; a stuck drain must not hang us
            log.debug("outbound connection did not drain in time")
        loop.call_soon_threadsafe(loop.stop)


class HostCallRouter:
    """Resolves and performs one actor's outbound calls (the `forward` of BuiltinHostCalls)."""

    def __init__(self, *, claims: ActorClaims, lattice_prefix: str, signer: KeyPair, rpc_timeout_s: float,
                 connection: OutboundConnection, on_result: RpcEventSink | None = None,
                 tracer: Tracer | None = None) -> None:
        self.claims = claims
        self.tracer = tracer  # None: tracing off (no span, no headers)
        self.lattice_prefix = lattice_prefix
        self.signer = signer
        self.rpc_timeout_s = rpc_timeout_s
        self.connection = connection
        self.on_result = on_result
        self._links: dict[tuple[str, str], WasmCloudEntity] = {}
        self._aliases: dict[str, str] = {}

    def update(self, snapshot: LatticeSnapshot) -> None:
        """Take new routing tables (thread-safe: each table is replaced in one assignment)."""
        me = self.claims.public_key
        self._links = {(ld.contract_id, ld.link_name): WasmCloudEntity(ld.provider_id, ld.contract_id, ld.link_name)
                       for ld in snapshot.links if ld.actor_id == me}
        self._aliases = dict(snapshot.aliases)

    def resolve(self, binding: str, namespace: str) -> WasmCloudEntity:
        """The call's target (protocol.md §4.10), or HostCallError with the documented text.

        Namespaces with a ':' are contracts (wasmcloud:keyvalue); others are actor keys or call
        aliases. QUIRK: as in OTP, a contract call without a link falls through to the alias
        lookup and reports `Call alias not found`, whatever the actor's claims.
        """
        provider = self._links.get((namespace, binding or "default"))
        if provider is not None:
            if not self.claims.has_cap(namespace):
                raise MissingCapabilityClaim(namespace)
            return provider
        if len(namespace) == 56 and namespace.startswith("M"):
            return WasmCloudEntity(namespace)
        if namespace in self._aliases:
            return WasmCloudEntity(self._aliases[namespace])
        raise CallAliasNotFound(namespace, self.lattice_prefix)

    def __call__(self, binding: str, namespace: str, operation: str, payload: bytes) -> bytes:
        if self.tracer is None:
            return self._call(binding, namespace, operation, payload, None)
        # A CLIENT span per host call, child of the invocation being served; its traceparent goes
        # out with the request (protocol.md §1.2), so the callee's span joins the same trace.
        with client_span(self.tracer, "host_call", actor_key=self.claims.public_key, namespace=namespace,
                         binding=binding or "default", operation=operation, bytes=len(payload)) as headers:
            return self._call(binding, namespace, operation, payload, headers)

    def _call(self, binding: str, namespace: str, operation: str, payload: bytes,
              headers: dict[str, str] | None) -> bytes:
        target = self.resolve(binding, namespace)
        origin = WasmCloudEntity(self.claims.public_key)
        inv = new_invocation(self.signer, origin, target, operation, payload)  # signed over the full payload
        if target.is_actor:
            subject = subjects.actor_rpc(self.lattice_prefix, target.public_key)
        else:
            subject = subjects.provider_rpc(self.lattice_prefix, target.public_key, target.link_name)
        timeout = host_call_timeout(len(payload), self.rpc_timeout_s)
        ok = False
        try:
            sent = inv
            if len(payload) > CHUNK_THRESHOLD:  # protocol.md §4.9
                store = self.connection.chunk_store(self.lattice_prefix)
                sent = self.connection.run(lambda nc: chunk_invocation(store, inv), timeout)
            raw = self.connection.request(subject, sent.to_wire(), timeout, headers)
            try:
                resp = InvocationResponse.from_wire(raw)
            except InvocationError:
                raise HostCallError("Failed to deserialize invocation response") from None
            if resp.error is not None:
                raise HostCallError(resp.error)
            if needs_dechunk(resp.content_length, resp.msg):
                store = self.connection.chunk_store(self.lattice_prefix)
                resp = self.connection.run(lambda nc: dechunk_response(store, resp, inv.id), timeout)
            ok = True
            return resp.msg
        except ChunkError as err:
            raise HostCallError(err.wire) from None
        finally:
            if self.on_result is not None:
                self.on_result(ok, origin, target, operation, len(payload))
