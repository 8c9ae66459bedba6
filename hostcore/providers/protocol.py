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
import base64
import binascii
import dataclasses
import json
import logging
import logging.config
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, ClassVar, Self

import msgpack
import nats
import nats.errors
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
    ChunkStore,
    chunk_invocation,
    chunk_response,
    dechunk_invocation,
    dechunk_response,
)
from hostcore.native.invocation import (
    Invocation,
    InvocationResponse,
    InvocationValidator,
    WasmCloudEntity,
    new_invocation,
)
from hostcore.native.nkeys import KeyPair
from hostcore.natsconn import NatsEndpoint
from hostcore.procutil import set_pdeathsig

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

DEFAULT_RPC_TIMEOUT_MS = 2000
_CHUNKED_EXTRA_TIMEOUT_S = 13.0  # §4.9: and gives such calls 13 s more
_RPC_QUEUE_GROUP = "rpc"  # wasmbus-rpc's queue group for provider RPC subscriptions
_SHUTDOWN_ACK = b"shutting down"  # what wasmbus-rpc providers answer a shutdown request with
_SHUTDOWN_HOOK_TIMEOUT_S = 1.5  # the host waits 2 s for the ack (§4.11)
_DRAIN_TIMEOUT_S = 0.5  # in-flight invocations get this long after a shutdown request
_NATS_CLOSE_TIMEOUT_S = 1.0


# --- wire shapes -------------------------------------------------------------------------------


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{what} must be a map of strings")
    return dict(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDefinition:
    """A link between an actor and this provider; `values` is the link's configuration."""

    actor_id: str
    provider_id: str
    link_name: str
    contract_id: str
    values: dict[str, str] = field(default_factory=dict)
    id: str = ""

    @classmethod
    def from_map(cls, fields: Any) -> Self:
        """From the map used in host data and on linkdefs subjects. Raises ValueError."""
        if not isinstance(fields, dict):
            raise ValueError("a link definition must be a map")
        strings = {}
        for key in ("actor_id", "provider_id", "link_name", "contract_id", "id"):
            value = fields.get(key) or ""
            if not isinstance(value, str):
                raise ValueError(f"link definition `{key}` must be a string")
            strings[key] = value
        if not strings["actor_id"]:
            raise ValueError("link definition has no actor_id")
        return cls(values=_str_map(fields.get("values"), "link definition `values`"), **strings)

    def to_map(self) -> dict[str, Any]:
        return {"id": self.id, "actor_id": self.actor_id, "provider_id": self.provider_id,
                "link_name": self.link_name, "contract_id": self.contract_id, "values": dict(self.values)}

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode a `linkdefs.put`/`linkdefs.del` payload (msgpack). Raises ValueError."""
        try:
            fields = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException, TypeError) as e:
            raise ValueError(f"not msgpack: {e}") from e
        return cls.from_map(fields)

    def to_wire(self, *, deleted: bool = False) -> bytes:
        """The msgpack map the host publishes on `linkdefs.put`/`.del` (§4.11)."""
        return msgpack.packb({**self.to_map(), "deleted": deleted}, use_bin_type=True)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, kw_only=True)
class HostData:
    """What the host tells a provider at start (§11.7), one base64 JSON line on stdin."""

    host_id: str = ""
    lattice_rpc_prefix: str = "default"
    link_name: str = "default"
    lattice_rpc_user_jwt: str = field(default="", repr=False)
    lattice_rpc_user_seed: str = field(default="", repr=False)
    lattice_rpc_url: str = "127.0.0.1:4222"
    lattice_rpc_tls: bool = False
    lattice_rpc_tls_ca_file: str | None = None  # hostcore extension: CA of the server's certificate
    env_values: dict[str, str] = field(default_factory=dict)
    instance_id: str = ""
    provider_key: str
    link_definitions: tuple[LinkDefinition, ...] = ()
    config_json: str | None = None
    default_rpc_timeout_ms: int = DEFAULT_RPC_TIMEOUT_MS
    cluster_issuers: tuple[str, ...] = ()
    invocation_seed: str = field(default="", repr=False)
    js_domain: str | None = None
    enable_structured_logging: bool = False
    log_level: str | None = None

    @property
    def rpc_topic(self) -> str:
        """`wasmbus.rpc.{lattice}.{provider_key}.{link_name}`, the root of every subject we use."""
        return f"wasmbus.rpc.{self.lattice_rpc_prefix}.{self.provider_key}.{self.link_name}"

    @property
    def nats_url(self) -> str:
        """`lattice_rpc_url` with a scheme (OTP sends `host:port`); `tls://` when TLS is on."""
        url = self.lattice_rpc_url or "127.0.0.1:4222"
        if "://" in url:
            return url
        return f"{'tls' if self.lattice_rpc_tls else 'nats'}://{url}"

    @classmethod
    def from_wire(cls, line: bytes | str) -> Self:
        """Parse the stdin line: base64 (standard or URL-safe, padding optional) of a JSON object.

        Unknown keys are ignored; v0.63's `structured_logging` is read as
        `enable_structured_logging`. Raises HostDataInvalid naming the first problem.
        """
        text = line.decode("ascii", "replace") if isinstance(line, bytes) else line
        text = text.strip()
        if not text:
            raise HostDataInvalid("stdin is empty - expecting host data configuration")
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
            fields = json.loads(raw)
        except (binascii.Error, ValueError) as e:
            raise HostDataInvalid(f"not base64-encoded JSON: {e}") from e
        if not isinstance(fields, dict):
            raise HostDataInvalid("not a JSON object")
        try:
            return cls._from_map(fields)
        except (TypeError, ValueError) as e:
            raise HostDataInvalid(str(e)) from e

    @classmethod
    def _from_map(cls, fields: dict[str, Any]) -> Self:
        def text(key: str, default: str = "") -> str:
            value = fields.get(key)
            if value is None:
                return default
            if not isinstance(value, str):
                raise ValueError(f"`{key}` must be a string")
            return value

        def optional_text(key: str) -> str | None:
            value = fields.get(key)
            return None if value is None or value == "" else text(key)

        provider_key = text("provider_key")
        if not provider_key:
            raise ValueError("`provider_key` is missing")
        timeout = fields.get("default_rpc_timeout_ms")
        if timeout is None:
            timeout = DEFAULT_RPC_TIMEOUT_MS
        if type(timeout) is not int or timeout <= 0:
            raise ValueError("`default_rpc_timeout_ms` must be a positive integer")
        issuers = fields.get("cluster_issuers") or []
        if not isinstance(issuers, list) or not all(isinstance(i, str) for i in issuers):
            raise ValueError("`cluster_issuers` must be a list of strings")
        links = fields.get("link_definitions") or []
        if not isinstance(links, list):
            raise ValueError("`link_definitions` must be a list")
        config_json = fields.get("config_json")
        if config_json is not None and not isinstance(config_json, str):
            config_json = json.dumps(config_json)  # tolerate a host that sends the object itself
        structured = fields.get("enable_structured_logging", fields.get("structured_logging", False))
        return cls(
            host_id=text("host_id"),
            lattice_rpc_prefix=text("lattice_rpc_prefix", "default"),
            link_name=text("link_name", "default"),
            lattice_rpc_user_jwt=text("lattice_rpc_user_jwt"),
            lattice_rpc_user_seed=text("lattice_rpc_user_seed"),
            lattice_rpc_url=text("lattice_rpc_url"),
            lattice_rpc_tls=bool(fields.get("lattice_rpc_tls") or False),
            lattice_rpc_tls_ca_file=optional_text("lattice_rpc_tls_ca_file"),
            env_values=_str_map(fields.get("env_values"), "`env_values`"),
            instance_id=text("instance_id"),
            provider_key=provider_key,
            link_definitions=tuple(LinkDefinition.from_map(ld) for ld in links),
            config_json=config_json or None,
            default_rpc_timeout_ms=timeout,
            cluster_issuers=tuple(issuers),
            invocation_seed=text("invocation_seed"),
            js_domain=optional_text("js_domain"),
            enable_structured_logging=bool(structured),
            log_level=optional_text("log_level"),
        )

    def to_wire(self) -> bytes:
        """The stdin line the host writes: base64(JSON) + `\\n` (§11.7)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["link_definitions"] = [ld.to_map() for ld in self.link_definitions]
        fields["cluster_issuers"] = list(self.cluster_issuers)
        return base64.b64encode(json.dumps(fields).encode()) + b"\n"


@dataclass(frozen=True, slots=True)
class HealthCheckResponse:
    """The reply to a `.health` request; the host counts any reply as healthy (§4.11)."""

    healthy: bool = True
    message: str = ""

    def to_wire(self) -> bytes:
        return msgpack.packb({"healthy": self.healthy, "message": self.message})  # type: ignore[no-any-return]


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
        self._chunks: ChunkStore | None = None
        self._subs: list[Subscription] = []
        self._inflight: set[asyncio.Task[None]] = set()
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
            self._subs = [
                await nc.subscribe(topic, queue=_RPC_QUEUE_GROUP, cb=self._on_invocation),
                # One subscription for put and del, so they are applied in the order sent.
                await nc.subscribe(f"{topic}.linkdefs.*", cb=self._on_linkdef),
                await nc.subscribe(f"{topic}.shutdown", cb=self._on_shutdown),
                # health last, as wasmbus-rpc does: a health reply means every subscription is up
                await nc.subscribe(f"{topic}.health", cb=self._on_health),
            ]
            await nc.flush()
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
            ld = LinkDefinition.from_wire(msg.data)
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
        try:
            host_id = json.loads(msg.data).get("host_id") if msg.data else None
        except (ValueError, AttributeError):
            host_id = None
        if host_id and self._hd.host_id and host_id != self._hd.host_id:
            log.debug("ignoring shutdown request for another host", extra={"host_id": host_id})
            return
        log.info("shutdown requested", extra={"provider_key": self._hd.provider_key})
        await self._shutdown_provider()
        if msg.reply and self._nc is not None:
            await self._nc.publish(msg.reply, _SHUTDOWN_ACK)
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

    async def call_actor(self, actor_id: str, operation: str, payload: bytes, *,
                         timeout_s: float | None = None) -> bytes:
        """See ProviderBase.call_actor."""
        if self._nc is None or self._signer is None:
            raise RuntimeError("call_actor needs a connected bridge and an invocation_seed")
        hd = self._hd
        ld = self._links.get(actor_id)
        origin = WasmCloudEntity(hd.provider_key, ld.contract_id if ld else self._provider.contract_id, hd.link_name)
        inv = new_invocation(self._signer, origin, WasmCloudEntity(actor_id), operation, payload)
        timeout = timeout_s if timeout_s is not None else hd.default_rpc_timeout_ms / 1000
        assert self._chunks is not None
        sent = await chunk_invocation(self._chunks, inv)  # signed over the full payload first (§4.4)
        if sent is not inv:
            timeout += _CHUNKED_EXTRA_TIMEOUT_S
        subject = f"wasmbus.rpc.{hd.lattice_rpc_prefix}.{actor_id}"
        try:
            reply = await self._nc.request(subject, sent.to_wire(), timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            raise RpcTimeout() from e
        resp = InvocationResponse.from_wire(reply.data)
        if resp.error is not None:
            raise ActorCallFailed(resp.error)
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
        asyncio.run(serve_provider(provider_cls(host_data)))
    except Exception:
        log.exception("provider failed")
        return 1
    return 0
