"""The provider side of the wasmCloud provider protocol: a small SDK for capability providers
written in Python (protocol.md §4.11, §11.7), modelled on wasmbus-rpc's `HostBridge`.

A provider process reads its `HostData` (one base64 JSON line) from stdin, connects to the
lattice's RPC NATS, applies the link definitions it was started with, and then serves, all
under `wasmbus.rpc.{lattice}.{provider_key}.{link_name}`:

| subject suffix | what | reply |
|---|---|---|
| (none), queue group `rpc` | Invocation from an actor | msgpack InvocationResponse |
| `.linkdefs.put` / `.linkdefs.del` | msgpack link definition | none |
| `.health` | health check | msgpack `{healthy, message}` |
| `.shutdown` | JSON `{host_id}` | `shutting down`, then the process exits |

Invocations are checked as wasmbus-rpc providers check them: anti-forgery (§4.6) against the
host's `cluster_issuers`, target key == our key, origin actor linked to us. Payloads and replies
too large for a NATS message go through the lattice's chunking object store (§4.9, §12.4,
hostcore.native.chunking).

Write a provider by subclassing `ProviderBase` and calling `run_provider(MyProvider)` from its
`__main__`. Logs go to stderr, which the host captures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import logging.config
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, ClassVar

import nats
import nats.errors
import uvloop
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hostcore.errors import (
    ActorCallFailed,
    HostcoreError,
    HostDataInvalid,
    InvocationError,
    MethodNotHandled,
    ProviderTargetMismatch,
    RpcTimeout,
    UnlinkedActor,
)
from hostcore.logs import log_defs
from hostcore.native.chunking import (
    CHUNK_THRESHOLD,
    ChunkStore,
    chunk_invocation,
    chunk_response,
    dechunk_invocation,
    dechunk_response,
    needs_dechunk,
)
from hostcore.native.invocation import (
    Invocation,
    InvocationResponse,
    InvocationValidator,
    WasmCloudEntity,
    new_invocation,
)
from hostcore.native.nkeys import KeyPair
from hostcore.natsconn import NatsEndpoint, flush_in_order
from hostcore.procutil import set_pdeathsig
from hostcore.wire import subjects
from hostcore.wire.chunking_rules import provider_call_timeout
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.wire.provider import SHUTDOWN_ACK, HealthCheckResponse, HostData, shutdown_host_id

__all__ = [
    "HealthCheckResponse",
    "HostBridge",
    "HostData",
    "LinkDefinition",
    "ProviderBase",
    "run_provider",
    "serve_provider",
]

log = logging.getLogger(__name__)

_SHUTDOWN_HOOK_TIMEOUT_S = 1.5  # the host waits 2 s for the ack (§4.11)
_DRAIN_TIMEOUT_S = 0.5  # in-flight invocations get this long after a shutdown request
_NATS_CLOSE_TIMEOUT_S = 1.0
_CALL_ROUTE_CACHE_SIZE = 4096


# --- the provider API ------------------------------------------------------------------------------


class ProviderBase:
    """Base class of a capability provider. Override the hooks; the HostBridge calls them.

    Hooks run on the provider's event loop. `put_link`/`delete_link` are called in the order the
    host sent the link definitions, one at a time; `handle` runs concurrently, one task per
    invocation, and only for actors whose `put_link` succeeded.
    """

    contract_id: ClassVar[str] = ""

    def __init__(self, host_data: HostData) -> None:
        self.host_data = host_data
        self._bridge: HostBridge | None = None

    @property
    def links(self) -> Mapping[str, LinkDefinition]:
        """The active links, by actor key (read-only view)."""
        return self._bridge.links if self._bridge is not None else MappingProxyType({})

    async def put_link(self, ld: LinkDefinition) -> None:
        """Set up per-actor resources for a new link. Raise to refuse it (it is then not
        recorded, and that actor's invocations get "unlinked actor"). Must be idempotent."""

    async def delete_link(self, ld: LinkDefinition) -> None:
        """Release the actor's resources; `ld` is the link as it was put."""

    async def handle(self, inv: Invocation) -> bytes:
        """Serve one validated invocation from a linked actor and return the reply payload.
        A raised HostcoreError becomes the InvocationResponse `error` (its `wire`); anything else
        is logged with its traceback and answered with a generic error."""
        raise MethodNotHandled(inv.operation)

    async def health_request(self) -> HealthCheckResponse:
        return HealthCheckResponse()

    async def shutdown(self) -> None:
        """Release everything; called once, before the process exits (bounded to 1.5 s)."""

    async def call_actor(self, actor_id: str, operation: str, payload: bytes, *,
                         timeout_s: float | None = None) -> bytes:
        """Invoke `operation` on actor `actor_id` and return its reply payload.

        Signed with the host's `invocation_seed`; origin is this provider (key, the link's
        contract id, link name). Deadline: `timeout_s`, default `default_rpc_timeout_ms` (+13 s
        for chunked payloads). Raises RpcTimeout on timeout or when no host runs the actor,
        ActorCallFailed with the actor's error text, RuntimeError before the bridge is up.
        """
        if self._bridge is None:
            raise RuntimeError("call_actor used before the provider is connected")
        return await self._bridge.call_actor(actor_id, operation, payload, timeout_s=timeout_s)


# --- the bridge: NATS subscriptions and the invocation pipeline ----------------------------------------


class _ReplyInbox:
    """Request/reply for `call_actor` on one wildcard inbox subscription: nats-py's own `request`
    scheme (one `_INBOX.x.*` subscription, a future per token) without its per-call NUID token and
    `asyncio.wait_for` wrapper, which cost as much as the rest of the call's bookkeeping."""

    _NO_RESPONDERS = "503"  # the status header nats-server sends when nobody serves the subject

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._waiting: dict[str, asyncio.Future[Msg | None]] = {}
        self._tokens = itertools.count()

    async def subscribe(self) -> Subscription:
        return await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        waiter = self._waiting.pop(msg.subject[len(self._prefix):], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes:
        """The reply's payload. Raises RpcTimeout after `timeout_s` or when nobody serves `subject`."""
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Msg | None] = loop.create_future()
        self._waiting[token] = waiter
        # A timer that resolves the waiter with None, not asyncio.timeout(): a fifth of the cost.
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token)
            msg = await waiter
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        if msg is None or (msg.headers and msg.headers.get("Status") == self._NO_RESPONDERS):
            raise RpcTimeout()
        return bytes(msg.data)


def _expire(waiter: asyncio.Future[Msg | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class HostBridge:
    """Owns a provider's NATS connection, its subscriptions, its link table and its in-flight
    invocations. `run` returns after a shutdown request or `stop` being set, having unsubscribed,
    let in-flight invocations finish (0.5 s, then cancelled), called `provider.shutdown()` and
    closed the connection. One bridge per provider; not reusable."""

    def __init__(self, provider: ProviderBase) -> None:
        self._provider = provider
        self._hd = provider.host_data
        self._links: dict[str, LinkDefinition] = {}
        self._validator = InvocationValidator(self._hd.cluster_issuers)
        self._signer = KeyPair.from_seed(self._hd.invocation_seed) if self._hd.invocation_seed else None
        self._nc: NatsClient | None = None
        self._replies: _ReplyInbox | None = None
        self._chunks: ChunkStore | None = None
        self._subs: list[Subscription] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._call_routes: dict[tuple[str, str], tuple[WasmCloudEntity, WasmCloudEntity, str]] = {}
        self._stop = asyncio.Event()
        self._provider_shut_down = False

    @property
    def links(self) -> Mapping[str, LinkDefinition]:
        return MappingProxyType(self._links)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, apply the start-up links, serve until asked to stop, then clean up."""
        if stop is not None:
            self._stop = stop
        hd = self._hd
        stop_event = self._stop

        async def closed() -> None:  # the connection is gone for good: nothing left to serve
            stop_event.set()

        # Reconnect forever, as wasmbus-rpc does: a NATS restart must not take providers down.
        self._nc = await nats.connect(**self._endpoint().connect_kwargs(),
                                      name=f"provider {hd.provider_key}/{hd.link_name}",
                                      max_reconnect_attempts=-1, closed_cb=closed)
        self._chunks = ChunkStore(self._nc.jetstream(domain=hd.js_domain), hd.lattice_rpc_prefix)
        self._provider._bridge = self
        try:
            for ld in hd.link_definitions:  # before serving: invocations may rely on them (§11.7)
                await self._put_link(ld)
            topic = hd.rpc_topic
            nc = self._nc
            replies = _ReplyInbox(nc)
            await replies.subscribe()  # not in _subs: replies keep arriving while we drain
            self._replies = replies
            self._subs = [
                await nc.subscribe(topic, queue=subjects.PROVIDER_RPC_QUEUE_GROUP, cb=self._on_invocation),
                # One subscription for put and del, so they are applied in the order sent.
                await nc.subscribe(subjects.provider_linkdefs(topic, "*"), cb=self._on_linkdef),
                await nc.subscribe(subjects.provider_shutdown(topic), cb=self._on_shutdown),
                # health last, as wasmbus-rpc does: a health reply means every subscription is up
                await nc.subscribe(subjects.provider_health(topic), cb=self._on_health),
            ]
            await flush_in_order(nc)
            log.info("provider serving", extra={"provider_key": hd.provider_key, "link_name": hd.link_name,
                                                "lattice": hd.lattice_rpc_prefix, "links": len(self._links)})
            await self._stop.wait()
        finally:
            await self._close()

    def _endpoint(self) -> NatsEndpoint:
        """The lattice connection from host data: JWT + seed, or a seed alone (nkey user)."""
        hd = self._hd
        ca = Path(hd.lattice_rpc_tls_ca_file) if hd.lattice_rpc_tls_ca_file else None
        return NatsEndpoint.from_url("prov_rpc", hd.nats_url, seed=hd.lattice_rpc_user_seed.strip(),
                                     jwt=hd.lattice_rpc_user_jwt.strip(), tls=hd.lattice_rpc_tls, ca_file=ca)

    async def _close(self) -> None:
        nc = self._nc
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=_DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._shutdown_provider()
        if nc is not None and not nc.is_closed:
            try:
                async with asyncio.timeout(_NATS_CLOSE_TIMEOUT_S):
                    await nc.flush()
                    await nc.close()
            except (TimeoutError, nats.errors.Error):
                log.warning("nats connection did not close cleanly")
        self._provider._bridge = None
        log.info("provider stopped", extra={"provider_key": self._hd.provider_key, "link_name": self._hd.link_name})

    async def _shutdown_provider(self) -> None:
        if self._provider_shut_down:
            return
        self._provider_shut_down = True
        try:
            async with asyncio.timeout(_SHUTDOWN_HOOK_TIMEOUT_S):
                await self._provider.shutdown()
        except TimeoutError:
            log.warning("provider shutdown hook timed out")
        except Exception:
            log.exception("provider shutdown hook failed")

    # -- control subjects --

    async def _put_link(self, ld: LinkDefinition) -> None:
        current = self._links.get(ld.actor_id)
        if current is not None:
            if current.values == ld.values and current.contract_id == ld.contract_id:
                log.debug("ignoring duplicate link put", extra={"actor_id": ld.actor_id})
                return
            # Same actor, new values: re-link (wasmbus-rpc ignores the new values instead).
            await self._delete_link(current)
        try:
            await self._provider.put_link(ld)
        except HostcoreError as e:
            log.error("link refused", extra={"actor_id": ld.actor_id, "error": e.wire})
            return
        except Exception:
            log.exception("put_link failed", extra={"actor_id": ld.actor_id})
            return
        self._links[ld.actor_id] = ld
        log.info("actor linked", extra={"actor_id": ld.actor_id, "link_name": ld.link_name})

    async def _delete_link(self, ld: LinkDefinition) -> None:
        current = self._links.pop(ld.actor_id, None)
        if current is None:
            log.debug("link delete for an unlinked actor", extra={"actor_id": ld.actor_id})
            return
        try:
            await self._provider.delete_link(current)
        except Exception:
            log.exception("delete_link failed", extra={"actor_id": ld.actor_id})
        log.info("actor unlinked", extra={"actor_id": ld.actor_id})

    async def _on_linkdef(self, msg: Msg) -> None:
        action = msg.subject.rpartition(".")[2]
        if action not in ("put", "del"):
            return
        try:
            ld = LinkDefinition.from_msgpack(msg.data)
        except ValueError as e:
            log.error("garbled link definition", extra={"subject": msg.subject, "error": str(e)})
            return
        await (self._put_link(ld) if action == "put" else self._delete_link(ld))

    async def _on_health(self, msg: Msg) -> None:
        try:
            resp = await self._provider.health_request()
        except Exception as e:
            log.exception("health check hook failed")
            resp = HealthCheckResponse(False, str(e))
        if msg.reply:
            await msg.respond(resp.to_wire())

    async def _on_shutdown(self, msg: Msg) -> None:
        # Every host's instance of this provider (same key and link) listens on this subject, so
        # a request naming another host is not for us. Unparsable or host-less payloads (hosts
        # before v0.59) are obeyed, as wasmbus-rpc obeys every shutdown message.
        host_id = shutdown_host_id(msg.data)
        if host_id and self._hd.host_id and host_id != self._hd.host_id:
            log.debug("ignoring shutdown request for another host", extra={"host_id": host_id})
            return
        log.info("shutdown requested", extra={"provider_key": self._hd.provider_key})
        await self._shutdown_provider()
        if msg.reply and self._nc is not None:
            await self._nc.publish(msg.reply, SHUTDOWN_ACK)
            await self._nc.flush()
        self._stop.set()

    # -- invocations --

    async def _on_invocation(self, msg: Msg) -> None:
        task = asyncio.create_task(self._serve_invocation(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _serve_invocation(self, msg: Msg) -> None:
        resp = await self._invocation_response(msg.data)
        if msg.reply and self._nc is not None:
            try:
                await self._nc.publish(msg.reply, resp.to_wire())
            except nats.errors.Error as e:
                log.error("could not send invocation response", extra={"error": str(e)})

    async def _invocation_response(self, data: bytes) -> InvocationResponse:
        instance_id = self._hd.instance_id
        try:
            inv = Invocation.from_wire(data)
        except InvocationError as e:
            log.error("undecodable invocation", extra={"error": e.wire})
            return InvocationResponse.failure("", e.wire, instance_id)
        try:
            assert self._chunks is not None
            inv = await dechunk_invocation(self._chunks, inv)  # before validation: the hash covers it all
            self._validator.validate(inv)
            if inv.target.public_key != self._hd.provider_key:
                raise ProviderTargetMismatch(inv.target.public_key, self._hd.provider_key)
            if inv.origin.public_key not in self._links:
                raise UnlinkedActor(inv.origin.public_key)
            body = await self._provider.handle(inv)
            return await chunk_response(self._chunks, InvocationResponse.success(inv.id, body, instance_id), inv.id)
        except HostcoreError as e:
            log.warning("invocation failed", extra={"operation": inv.operation, "origin": inv.origin.public_key,
                                                    "invocation_id": inv.id, "error": e.wire})
            return InvocationResponse.failure(inv.id, e.wire, instance_id)
        except Exception:
            log.exception("invocation failed", extra={"operation": inv.operation, "invocation_id": inv.id})
            return InvocationResponse.failure(inv.id, f"provider failed to handle {inv.operation}", instance_id)

    def _call_route(self, actor_id: str) -> tuple[WasmCloudEntity, WasmCloudEntity, str]:
        """(origin, target, subject) of a call to `actor_id`, made once per actor and contract."""
        ld = self._links.get(actor_id)
        contract = ld.contract_id if ld else self._provider.contract_id
        route = self._call_routes.get((actor_id, contract))
        if route is None:
            hd = self._hd
            if len(self._call_routes) >= _CALL_ROUTE_CACHE_SIZE:
                self._call_routes.clear()
            route = self._call_routes[(actor_id, contract)] = (
                WasmCloudEntity(hd.provider_key, contract, hd.link_name), WasmCloudEntity(actor_id),
                subjects.actor_rpc(hd.lattice_rpc_prefix, actor_id))
        return route

    async def call_actor(self, actor_id: str, operation: str, payload: bytes, *,
                         timeout_s: float | None = None) -> bytes:
        """See ProviderBase.call_actor."""
        if self._nc is None or self._signer is None or self._replies is None:
            raise RuntimeError("call_actor needs a connected bridge and an invocation_seed")
        origin, target, subject = self._call_route(actor_id)
        inv = new_invocation(self._signer, origin, target, operation, payload)
        timeout = timeout_s if timeout_s is not None else self._hd.default_rpc_timeout_ms / 1000
        assert self._chunks is not None
        # signed over the full payload first (§4.4); a small one goes as it is, without a store call
        sent = inv if len(payload) <= CHUNK_THRESHOLD else await chunk_invocation(self._chunks, inv)
        timeout = provider_call_timeout(timeout, chunked=sent is not inv)
        resp = InvocationResponse.from_wire(await self._replies.request(subject, sent.to_wire(), timeout))
        if resp.error is not None:
            raise ActorCallFailed(resp.error)
        if not needs_dechunk(resp.content_length, resp.msg):
            return resp.msg
        return (await dechunk_response(self._chunks, resp, inv.id)).msg


# --- process entry -----------------------------------------------------------------------------------


async def serve_provider(provider: ProviderBase, stop: asyncio.Event | None = None) -> None:
    """Run `provider` until a shutdown request, SIGTERM/SIGINT, or `stop` is set."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread / platform
            pass
    try:
        await HostBridge(provider).run(stop)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def run_provider(provider_cls: type[ProviderBase], *, stdin: IO[bytes] | None = None) -> int:
    """Entry point of a provider process; returns its exit code.

    Sets PR_SET_PDEATHSIG(SIGKILL) first (no orphan if the host dies), reads one host data line
    from stdin, configures logging to stderr (JSON when the host logs structured), then serves.
    Returns 0 after a shutdown request or SIGTERM, 1 if the host data is unusable or serving fails.
    """
    set_pdeathsig()
    if os.getppid() == 1:  # the host died before PDEATHSIG was armed
        return 1
    line = (stdin or sys.stdin.buffer).readline()
    try:
        host_data = HostData.from_wire(line)
    except HostDataInvalid as e:
        print(f"error loading host data: {e.wire}", file=sys.stderr, flush=True)
        return 1
    level = (host_data.log_level or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        level = "INFO"
    logging.config.dictConfig(log_defs(level, host_data.enable_structured_logging))
    log.info("starting capability provider", extra={
        "provider": provider_cls.__name__, "provider_key": host_data.provider_key,
        "link_name": host_data.link_name, "instance_id": host_data.instance_id, "nats_url": host_data.nats_url})
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # less CPU per request
            runner.run(serve_provider(provider_cls(host_data)))
    except Exception:
        log.exception("provider failed")
        return 1
    return 0
