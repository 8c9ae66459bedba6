"""LatticeCache: lattice-wide metadata in the JetStream KV bucket `LATTICEDATA_{lattice}`
(protocol.md §12.2): claims, link definitions, refmaps, and the call-alias table derived from claims.

Every host watches the bucket, so every host sees the same data; this actor keeps the in-memory
view, answers get.links / get.claims, and pushes a LatticeSnapshot to the ActorSupervisor when
links or aliases change, so instances resolve host calls without asking anyone.

A link another client writes into the bucket (wadm does, and OTP v0.60+ hosts) is announced as
OTP's metadata cache loader does: `linkdef_set` / `linkdef_deleted` and the msgpack link to its
provider. Our own writes are announced where they are made, so their echo from the watch is not;
every other host announces them too, so a link is announced once per host (as in OTP v0.63).
On start, a legacy `LATTICECACHE_{lattice}` stream is migrated into the bucket (migration.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from thespian.actors import ActorExitRequest

from hostcore.config import HostConfig
from hostcore.control.migration import migrate_legacy_cache, refmap_key
from hostcore.control.policy import Decision, PolicyEvaluator, PolicyHost
from hostcore.native.par import ProviderClaims
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import Rewirable, crash_if_asked
from hostcore.telemetry.process import open_process
from hostcore.tree.bridge import NatsBridgeActor
from hostcore.tree.messages import (
    DelLink,
    Done,
    EvaluateStart,
    GetLatticeData,
    InitFailed,
    InitLattice,
    LatticeData,
    LatticeSnapshot,
    PolicyVerdict,
    PutClaims,
    PutLink,
    PutRefmap,
    Ready,
)
from hostcore.wire import cloudevents, subjects
from hostcore.wire.linkdefs import LinkDefinition, link_id

log = logging.getLogger(__name__)

__all__ = ["JETSTREAM_WAIT_S", "LatticeCache", "LatticeView", "bucket_name", "open_bucket", "refmap_key"]

_PURGE_OPS = frozenset({"DEL", "PURGE"})
_REPLAY_GAP_S = 3.0  # the longest wait for the next initial value of the bucket
# A NATS cluster that has just started elects its JetStream leader before it answers anything
# (seconds, more on a loaded machine): the bucket is retried this long before the host gives up.
JETSTREAM_WAIT_S = 20.0
_JETSTREAM_RETRY_S = 0.5


def bucket_name(lattice_prefix: str) -> str:
    return f"LATTICEDATA_{lattice_prefix}"


@dataclass(frozen=True, slots=True)
class _KvUpdate:
    key: str
    value: bytes
    deleted: bool


@dataclass(frozen=True, slots=True)
class _ReplayDone:
    """The watch delivered the bucket's contents as of start; later updates are live changes."""


class LatticeView:
    """The in-memory lattice data one host knows; pure, so it is unit-tested directly."""

    def __init__(self, *, claims_matter: bool = False) -> None:
        self.claims_matter = claims_matter  # policy on: instances need every claims record
        self.claims: dict[str, dict[str, Any]] = {}
        self.links: dict[str, LinkDefinition] = {}
        self.refmaps: dict[str, str] = {}
        self.aliases: dict[str, str] = {}

    def apply(self, key: str, value: bytes, deleted: bool) -> bool:
        """Apply one KV entry; returns True when links or aliases changed (instances care)."""
        kind, _, name = key.partition("_")
        if kind == "LINKDEF":
            if deleted:
                return self.links.pop(name, None) is not None
            try:
                self.links[name] = LinkDefinition.from_map(json.loads(value))
            except Exception:  # noqa: BLE001 -- another host's bad record must not stop our view
                log.warning("ignoring a malformed link record", extra={"key": key})
                return False
            return True
        if kind == "CLAIMS":
            if deleted:
                self.claims.pop(name, None)
                return False
            try:
                record = json.loads(value)
            except ValueError:
                record = None
            alias = record.get("call_alias") if isinstance(record, dict) else None
            if not isinstance(record, dict) or not isinstance(alias, str | None):
                # Another host's bad record must not stop our view (it would crash again on replay).
                log.warning("ignoring a malformed claims record", extra={"key": key})
                return False
            self.claims[name] = record
            alias = alias or ""
            # protocol.md §5.7: an alias longer than one character is registered, first writer wins.
            new_alias = len(alias) > 1 and alias not in self.aliases
            if new_alias:
                self.aliases[alias] = name
            return new_alias or self.claims_matter
        if kind == "REFMAP" and not deleted:
            try:
                entry = json.loads(value)
                self.refmaps[entry["oci_url"]] = entry["public_key"]
            except (ValueError, KeyError, TypeError):
                pass
        return False

    def snapshot(self) -> LatticeSnapshot:
        """With claims only when policy needs them in the instances (they can be many)."""
        return LatticeSnapshot(links=tuple(self.links.values()), aliases=dict(self.aliases),
                               claims=dict(self.claims) if self.claims_matter else {})


async def open_bucket(js: JetStreamContext, name: str) -> KeyValue:
    """The lattice bucket `name`, created as v0.63.2 creates it (allow_direct too) when missing;
    an existing one is used as it is. Retried while JetStream does not answer yet (a timeout, or
    503 while the cluster elects its leader), for up to JETSTREAM_WAIT_S."""
    deadline = time.monotonic() + JETSTREAM_WAIT_S
    while True:
        try:
            try:
                return await js.key_value(name)
            except BucketNotFoundError:
                return await js.create_key_value(KeyValueConfig(bucket=name, history=1, storage=StorageType.FILE,
                                                                direct=True))
        except (nats.errors.TimeoutError, ServiceUnavailableError) as err:
            if time.monotonic() + _JETSTREAM_RETRY_S > deadline:
                raise
            log.warning("waiting for JetStream", extra={"bucket": name, "error": str(err) or type(err).__name__})
            await asyncio.sleep(_JETSTREAM_RETRY_S)


class LatticeCache(Rewirable, NatsBridgeActor):
    """Owns the lattice KV bucket for one host (creating it when missing) and its watch. A
    restarted LatticeCache reloads everything from the bucket (the watch replays it)."""

    PEERS = frozenset({"actor_supervisor", "provider_supervisor"})

    def receiveMsg_InitLattice(self, msg: InitLattice, sender: Any) -> None:
        set_pdeathsig()
        crash_if_asked(msg.config, "lattice", msg.restart)
        self.config: HostConfig = msg.config
        open_process(msg.config, role="lattice")  # log context; counts its NATS reconnects
        self.actor_supervisor, self.provider_supervisor = msg.actor_supervisor, msg.provider_supervisor
        self.view = LatticeView(claims_matter=bool(msg.config.policy_topic))
        self.kv: KeyValue | None = None
        self.live = False  # past the watch's initial replay
        self.own_writes: dict[str, bytes | None] = {}  # key → value we wrote (None: purged), until its echo

        async def setup(nc: NatsClient) -> None:
            js = nc.jetstream(domain=self.config.js_domain)
            self.kv = await open_bucket(js, bucket_name(self.config.lattice_prefix))
            await migrate_legacy_cache(js, self.kv, self.config.lattice_prefix)  # before the watch: in its replay
            watcher = await self.kv.watchall()
            await self._replay(watcher)  # the bucket as of now is in the inbox before we report Ready
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(watcher))
            self.policy = PolicyEvaluator(nc, topic=self.config.policy_topic, timeout_s=self.config.policy_timeout_s,
                                          host=PolicyHost.from_config(self.config))
            if self.config.policy_topic and self.config.policy_changes_topic:
                await self.policy.subscribe_changes(self.config.policy_changes_topic)

        try:
            self.nats_start(self.config.ctl, setup, name=f"hostcore-lattice-{self.config.host_id[:8]}",
                            timeout_s=JETSTREAM_WAIT_S + 10)
        except Exception as err:  # noqa: BLE001 -- the supervisor reports and gives up
            self.send(sender, InitFailed(role="lattice", error=f"lattice cache unavailable: {err}"))
            return
        self.send(sender, Ready(role="lattice"))

    async def _replay(self, watcher: Any) -> None:
        """Hand the watch's initial values to the actor thread; later updates are live changes."""
        while True:
            try:
                entry = await watcher.updates(timeout=_REPLAY_GAP_S)
            except asyncio.TimeoutError:
                log.warning("lattice bucket replay stalled; continuing with what arrived")
                break
            if entry is None:  # end of the initial replay
                break
            self.to_actor(_KvUpdate(entry.key, bytes(entry.value or b""), entry.operation in _PURGE_OPS))
        self.to_actor(_ReplayDone())

    async def _watch(self, watcher: Any) -> None:
        while True:
            try:
                entry = await watcher.updates(timeout=3600)
            except asyncio.TimeoutError:
                continue
            if entry is None:
                continue
            self.to_actor(_KvUpdate(entry.key, bytes(entry.value or b""), entry.operation in _PURGE_OPS))

    def on_inbox_item(self, item: Any) -> None:
        if isinstance(item, _ReplayDone):
            self.live = True
        elif isinstance(item, _KvUpdate):
            self._announce_external(item)
            if self.view.apply(item.key, item.value, item.deleted):
                snapshot = self.view.snapshot()
                for supervisor in (self.actor_supervisor, self.provider_supervisor):
                    self.send(supervisor, snapshot)
        else:
            reply_to, verdict = item
            self.send(reply_to, verdict)

    def peer_restarted(self, role: str) -> None:
        # A restarted supervisor starts with no links: give it what we know.
        self.send(getattr(self, role), self.view.snapshot())

    def _announce_external(self, item: _KvUpdate) -> None:
        """A live link change written by someone else → the same announcements as our own puts
        and deletes (OTP v0.63 metadata_cache_loader.ex). Called before the view applies it."""
        if not item.key.startswith("LINKDEF_"):
            return
        if item.key in self.own_writes and self.own_writes.pop(item.key) == (None if item.deleted else item.value):
            return  # the echo of our own write, announced when we made it
        if not self.live:
            return
        if item.deleted:
            gone = self.view.links.get(item.key.removeprefix("LINKDEF_"))
            if gone is not None:
                self._announce_link(gone, deleted=True)
            return
        try:
            link = LinkDefinition.from_map(json.loads(item.value))
        except Exception:  # noqa: BLE001 -- the view logs the malformed record
            return
        self._announce_link(link, deleted=False)

    # --- policy for starts (protocol.md §9; invocations are checked in the instances) -------------

    def receiveMsg_EvaluateStart(self, msg: EvaluateStart, sender: Any) -> None:
        claims = msg.claims
        if isinstance(claims, ProviderClaims):
            coro = self.policy.evaluate_start_provider(claims.public_key, claims.issuer, msg.link_name, claims.capid)
        else:
            coro = self.policy.evaluate_start_actor(claims)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)

        def done(f: Any) -> None:
            try:
                decision: Decision = f.result()
                verdict = PolicyVerdict(request_id=msg.request_id, permitted=decision.permitted,
                                        message=decision.message)
            except Exception as err:  # noqa: BLE001 -- fail closed
                verdict = PolicyVerdict(request_id=msg.request_id, permitted=False, message=str(err))
            self.to_actor((sender, verdict))

        future.add_done_callback(done)

    # --- writes --------------------------------------------------------------------------------

    def _kv(self, op: str, key: str, value: bytes = b"") -> None:
        """Write to the bucket and wait for JetStream's ack (bounded), so a caller told "done"
        can rely on the write; failures are logged, the cache keeps serving."""
        assert self.kv is not None
        coro = self.kv.put(key, value) if op == "put" else self.kv.purge(key)
        try:
            asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.config.rpc_timeout_s + 1)
        except Exception as err:  # noqa: BLE001 -- lattice writes are best effort, as in OTP
            log.error("lattice cache write failed", extra={"key": key, "error": str(err)})
            self.own_writes.pop(key, None)  # no echo will come

    def _kv_put(self, key: str, value: bytes) -> None:
        self._kv("put", key, value)

    def receiveMsg_PutClaims(self, msg: PutClaims, sender: Any) -> None:
        self._kv_put(f"CLAIMS_{msg.record['sub']}", json.dumps(msg.record).encode())

    def receiveMsg_PutRefmap(self, msg: PutRefmap, sender: Any) -> None:
        self._kv_put(refmap_key(msg.actor_ref), json.dumps({"oci_url": msg.actor_ref, "public_key": msg.public_key}).encode())

    def receiveMsg_PutLink(self, msg: PutLink, sender: Any) -> None:
        link: LinkDefinition = msg.link
        self.own_writes[f"LINKDEF_{link.id}"] = link.to_json()
        self._kv_put(f"LINKDEF_{link.id}", link.to_json())
        self._announce_link(link, deleted=False)
        self.send(sender, Done(request_id=msg.request_id))

    def receiveMsg_DelLink(self, msg: DelLink, sender: Any) -> None:
        link = self.view.links.get(link_id(msg.actor_id, msg.contract_id, msg.link_name))
        if link is None:
            log.warning("link to delete not found", extra={"actor_id": msg.actor_id, "contract_id": msg.contract_id})
        else:
            self.own_writes[f"LINKDEF_{link.id}"] = None
            self._kv("purge", f"LINKDEF_{link.id}")
            self._announce_link(link, deleted=True)
        self.send(sender, Done(request_id=msg.request_id))

    def _announce_link(self, link: LinkDefinition, *, deleted: bool) -> None:
        """protocol.md §2.4: tell the provider (msgpack) and the lattice (event) about the change."""
        provider = subjects.provider_rpc(self.config.lattice_prefix, link.provider_id, link.link_name)
        self.publish(subjects.provider_linkdefs(provider, "del" if deleted else "put"), link.to_msgpack(deleted=deleted))
        event = cloudevents.linkdef(link.to_map(), deleted=deleted)
        self.publish(subjects.lattice_events(self.config.lattice_prefix),
                     cloudevents.cloud_event(event.type, event.data, self.config.host_id))

    def receiveMsg_GetLatticeData(self, msg: GetLatticeData, sender: Any) -> None:
        # Bucket updates already received answer too, even if their wake-up is still queued.
        while self._inbox:
            self.on_inbox_item(self._inbox.popleft())
        if msg.kind == "links":
            items = tuple(link.to_map() for link in self.view.links.values())
        else:
            items = tuple(self.view.claims.values())
        self.send(sender, LatticeData(request_id=msg.request_id, items=items))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        self.nats_stop()
