"""ControlServer: answers `wasmbus.ctl.{lattice}.…` (protocol.md §2) for one host.

NATS-bridged; it turns control requests into messages for the supervision tree and never creates
children. Every request gets a reply: malformed ones a failure ack with the documented text. It
owns the ack envelope (`success_ack` / `failure_ack` from wire/control.py are built only here).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from thespian.actors import ActorExitRequest

from hostcore import COMPAT_VERSION
from hostcore.config import HostConfig
from hostcore.control.inventory import InventoryJoin, inventory_reply, nats_host
from hostcore.errors import (
    ControlRequestError,
    HostcoreError,
    RegistryCredentialsInvalid,
    RoleRestarted,
    WrongHost,
    WrongHostStop,
)
from hostcore.native.oci import normalize_registry_credentials
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import Rewirable, crash_if_asked
from hostcore.telemetry.control import ControlTelemetry, command_name
from hostcore.tree.bridge import NatsBridgeActor
from hostcore.tree.messages import (
    DelLink,
    Done,
    GetInventory,
    GetLatticeData,
    InitControl,
    InitFailed,
    Inventory,
    LatticeData,
    ProviderInventory,
    PutLink,
    PutRegistryCredentials,
    Ready,
    ScaleActor,
    SendHeartbeat,
    StartActor,
    StartProvider,
    StartProviderAck,
    StopHost,
    StopProvider,
    TerminateActor,
    UpdateActor,
    UpdateDone,
)
from hostcore.wire import subjects
from hostcore.wire.cloudevents import humanize_seconds
from hostcore.wire.control import (
    AuctionActorRequest,
    AuctionProviderRequest,
    LaunchActorRequest,
    ScaleRequest,
    StopActorRequest,
    LaunchProviderRequest,
    PingReply,
    StopHostRequest,
    StopProviderRequest,
    UpdateActorRequest,
    claims_reply,
    dumps,
    failure_ack,
    links_reply,
    labels_match,
    success_ack,
)
from hostcore.wire.linkdefs import LinkDefinition, LinkDeleteRequest

log = logging.getLogger(__name__)

__all__ = ["ControlServer", "ping_reply", "registry_credentials"]


@dataclass(frozen=True, slots=True)
class _Request:
    subject: str
    reply: str
    data: bytes
    headers: dict[str, str] | None = None  # traceparent (protocol.md §1.2)


def ping_reply(config: HostConfig, started_at: float) -> dict[str, Any]:
    uptime = int(time.time() - started_at)
    return PingReply(
        id=config.host_id, issuer=config.cluster_key.public_key, labels=config.labels,
        friendly_name=config.friendly_name, uptime_seconds=uptime, uptime_human=humanize_seconds(uptime),
        version=COMPAT_VERSION, cluster_issuers=",".join(config.cluster_issuers), js_domain=config.js_domain,
        ctl_host=nats_host(config.ctl.url), prov_rpc_host=nats_host(config.prov_rpc.url),
        rpc_host=nats_host(config.rpc.url), lattice_prefix=config.lattice_prefix).to_map()


def registry_credentials(data: bytes) -> dict[str, Any]:
    """protocol.md §2.4 registries.put → OCI credentials by registry host. QUIRK: an unknown
    registryType crashed the OTP task (no reply); here it is a failure ack."""
    try:
        return normalize_registry_credentials(json.loads(data))
    except (ValueError, HostcoreError) as err:
        raise RegistryCredentialsInvalid(str(getattr(err, "wire", err))) from err


_PING_HEARTBEAT_INTERVAL_S = 1.0

# Which role answers a request that waits for an answer from the tree, by request kind.
_ANSWERED_BY = {
    "sa": ("actor_supervisor",), "upd": ("actor_supervisor",),
    "lp": ("provider_supervisor",), "sp": ("provider_supervisor",),
    "inv": ("actor_supervisor", "provider_supervisor"), "auction": ("actor_supervisor", "provider_supervisor"),
    "claims": ("lattice",), "links": ("lattice",), "linkdefs": ("lattice",),
}
_ROLE_NAMES = {"actor_supervisor": "actor supervisor", "provider_supervisor": "provider supervisor",
               "lattice": "lattice cache", "native": "native worker", "events": "event publisher"}


class ControlServer(Rewirable, NatsBridgeActor):
    """Subscribes to this host's control subjects and dispatches them. A restarted ControlServer
    subscribes again; requests the dead one had not answered get no reply (their clients time out)."""

    PEERS = frozenset({"actor_supervisor", "provider_supervisor", "events", "lattice", "native"})

    def receiveMsg_InitControl(self, msg: InitControl, sender: Any) -> None:
        set_pdeathsig()
        crash_if_asked(msg.config, "control", msg.restart)
        self.config = cfg = msg.config
        self.host_supervisor, self.actor_supervisor, self.events = msg.host_supervisor, msg.actor_supervisor, msg.events
        self.lattice, self.native = msg.lattice, msg.native
        self.provider_supervisor = msg.provider_supervisor
        self.inventories = InventoryJoin()
        self.prefix = subjects.prefix(cfg.ctl_topic_prefix, cfg.lattice_prefix)
        self.started_at = msg.started_at or time.time()
        self.last_ping_heartbeat = -_PING_HEARTBEAT_INTERVAL_S
        self.waiting: dict[str, tuple[str, str]] = {}  # request_id → (kind, reply subject)
        self.auctions: dict[str, AuctionProviderRequest] = {}
        self.telemetry = ControlTelemetry.open(cfg)

        async def setup(nc: NatsClient) -> None:
            subs = subjects.control_subscriptions(self.prefix, cfg.host_id)
            queue = self.prefix
            await nc.subscribe(subs["cmd"], cb=self._on_request)
            await nc.subscribe(subs["inv"], cb=self._on_request)
            await nc.subscribe(subs["ping"], cb=self._on_ping)
            await nc.subscribe(subs["get"], queue=queue, cb=self._on_request)
            await nc.subscribe(subs["linkdefs"], queue=queue, cb=self._on_request)
            await nc.subscribe(subs["registries"], cb=self._on_request)  # every host
            await nc.subscribe(subs["auction"], cb=self._on_request)  # every host; matching ones bid

        try:
            self.nats_start(cfg.ctl, setup, name=f"hostcore-ctl-{cfg.host_id[:8]}")
        except Exception as err:  # noqa: BLE001 -- the supervisor reports and gives up
            self.send(sender, InitFailed(role="control", error=f"NATS connection failed: {err}"))
            return
        self.send(sender, Ready(role="control"))

    # --- loop thread -----------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        self.to_actor(_Request(msg.subject, msg.reply, msg.data, msg.headers))

    async def _on_ping(self, msg: Msg) -> None:
        # Answered on the loop: it needs nothing from the tree (protocol.md §2.4 ping.hosts).
        if msg.reply:
            await self.nc.publish(msg.reply, dumps(ping_reply(self.config, self.started_at)))
        self.to_actor(SendHeartbeat())

    # --- actor thread ----------------------------------------------------------------------------

    def on_inbox_item(self, item: Any) -> None:
        if isinstance(item, SendHeartbeat):
            # OTP answers every ping with a heartbeat; a heartbeat is a full inventory round through
            # both supervisors, so a client pinging often made the host do O(instances) work per
            # ping, in the middle of a scale. Pings within one interval share one heartbeat.
            now = time.monotonic()
            if now - self.last_ping_heartbeat >= _PING_HEARTBEAT_INTERVAL_S:
                self.last_ping_heartbeat = now
                self.send(self.events, item)
            return
        topic = subjects.parse(self.prefix, item.subject)
        with self.telemetry.request(command_name(topic), item.reply, item.headers):
            if topic is None:
                return self._reply(item.reply, failure_ack(f"Unknown control subject {item.subject}"))
            try:
                self._dispatch(topic, item)
            except ControlRequestError as err:
                log.info("control request refused", extra={"subject": item.subject, "error": err.wire})
                self._reply(item.reply, failure_ack(err.wire))

    def _dispatch(self, topic: subjects.ControlTopic, req: _Request) -> None:
        if topic.host_id and topic.host_id != self.config.host_id:
            raise WrongHostStop() if topic.op == "stop" else WrongHost()
        match (topic.kind, topic.op):
            case ("cmd", "scale"):
                scale = ScaleRequest.from_wire(req.data)
                self._reply(req.reply, success_ack())  # protocol.md §2.3: ack first, work after
                self.send(self.actor_supervisor, ScaleActor(actor_id=scale.actor_id, actor_ref=scale.actor_ref,
                                                            count=scale.count, trace=self.telemetry.carrier()))
            case ("cmd", "la"):
                launch = LaunchActorRequest.from_wire(req.data)
                self._reply(req.reply, success_ack())
                self.send(self.actor_supervisor, StartActor(actor_ref=launch.actor_ref, count=launch.count,
                                                            annotations=launch.annotations,
                                                            trace=self.telemetry.carrier()))
            case ("cmd", "sa"):
                stop = StopActorRequest.from_wire(req.data)
                self.send(self.actor_supervisor, TerminateActor(
                    actor_id=stop.actor_ref, count=stop.count, annotations=stop.annotations,
                    request_id=self._await("sa", req.reply), trace=self.telemetry.carrier()))
            case ("cmd", "stop"):
                StopHostRequest.from_wire(req.data)  # the body's host_id is ignored, as in OTP
                self._reply(req.reply, success_ack())
                self.send(self.host_supervisor, StopHost(reason="stop requested over the control interface"))
            case ("cmd", "upd"):
                update = UpdateActorRequest.from_wire(req.data)
                self.send(self.actor_supervisor, UpdateActor(actor_id=update.actor_id, new_actor_ref=update.new_actor_ref,
                                                             request_id=self._await("upd", req.reply)))
            case ("cmd", "lp"):
                launch_p = LaunchProviderRequest.from_wire(req.data)
                self.send(self.provider_supervisor, StartProvider(
                    provider_ref=launch_p.provider_ref, link_name=launch_p.link_name,
                    configuration=launch_p.configuration, annotations=launch_p.annotations,
                    request_id=self._await("lp", req.reply)))
            case ("cmd", "sp"):
                stop_p = StopProviderRequest.from_wire(req.data)
                self.send(self.provider_supervisor, StopProvider(
                    provider_id=stop_p.provider_ref, link_name=stop_p.link_name,
                    request_id=self._await("sp", req.reply)))
            case ("get", "inv"):
                self._ask_inventory(self._await("inv", req.reply))
            case ("get", "claims") | ("get", "links"):
                self.send(self.lattice, GetLatticeData(kind=topic.op, request_id=self._await(topic.op, req.reply)))
            case ("linkdefs", "put"):
                link = LinkDefinition.from_json(req.data)
                self.send(self.lattice, PutLink(link=link, request_id=self._await("linkdefs", req.reply)))
            case ("linkdefs", "del"):
                gone = LinkDeleteRequest.from_json(req.data)
                self.send(self.lattice, DelLink(actor_id=gone.actor_id, contract_id=gone.contract_id,
                                                link_name=gone.link_name,
                                                request_id=self._await("linkdefs", req.reply)))
            case ("registries", "put"):
                creds = registry_credentials(req.data)
                self.send(self.native, PutRegistryCredentials(credentials=creds))
                self._reply(req.reply, success_ack())
            case ("auction", "actor"):
                auction = AuctionActorRequest.from_wire(req.data)
                if labels_match(auction.constraints, self.config.labels):  # others stay silent
                    self._reply(req.reply, auction.reply(self.config.host_id))
            case ("auction", "provider"):
                # Bids only if labels match and the provider isn't running here: needs the inventory.
                bid = AuctionProviderRequest.from_wire(req.data)
                if labels_match(bid.constraints, self.config.labels):
                    request_id = self._await("auction", req.reply)
                    self.auctions[request_id] = bid
                    self._ask_inventory(request_id)
            case ("cmd", op):
                raise ControlRequestError(f"Command {op} is not supported by this host")
            case _:
                raise ControlRequestError(f"Unknown control request {topic.kind}.{topic.op}")

    def peer_restarted(self, role: str) -> None:
        """Requests waiting on the role that died get a failure ack (auctions stay silent)."""
        error = RoleRestarted(_ROLE_NAMES.get(role, role)).wire
        for request_id, (kind, reply) in list(self.waiting.items()):
            if role in _ANSWERED_BY.get(kind, ()):
                del self.waiting[request_id]
                self.inventories.forget(request_id)
                if self.auctions.pop(request_id, None) is None:
                    self._reply(reply, failure_ack(error))

    def _ask_inventory(self, request_id: str) -> None:
        self.send(self.actor_supervisor, GetInventory(request_id=request_id))
        self.send(self.provider_supervisor, GetInventory(request_id=request_id))

    def _await(self, kind: str, reply: str) -> str:
        request_id = str(uuid.uuid4())
        self.waiting[request_id] = (kind, reply)
        self.telemetry.defer()  # answered later: the request's span stays open until then
        return request_id

    def receiveMsg_Done(self, msg: Done, sender: Any) -> None:
        _, reply = self.waiting.pop(msg.request_id, ("", ""))
        self._reply(reply, success_ack())

    def receiveMsg_UpdateDone(self, msg: UpdateDone, sender: Any) -> None:
        _, reply = self.waiting.pop(msg.request_id, ("", ""))
        self._reply(reply, failure_ack(msg.error) if msg.error else success_ack())

    def receiveMsg_StartProviderAck(self, msg: StartProviderAck, sender: Any) -> None:
        _, reply = self.waiting.pop(msg.request_id, ("", ""))
        self._reply(reply, failure_ack(msg.error) if msg.error else success_ack())

    def receiveMsg_Inventory(self, msg: Inventory, sender: Any) -> None:
        self._inventory_part(msg)

    def receiveMsg_ProviderInventory(self, msg: ProviderInventory, sender: Any) -> None:
        self._inventory_part(msg)

    def _inventory_part(self, msg: Inventory | ProviderInventory) -> None:
        inv = self.inventories.add(msg)
        if inv is None:
            return
        kind, reply = self.waiting.pop(msg.request_id, ("", ""))
        if kind == "auction":
            bid = self.auctions.pop(msg.request_id)
            running = any(p.link_name == bid.link_name and bid.provider_ref in (p.public_key, p.image_ref)
                          for p in inv.providers.providers)
            if not running:
                self._reply(reply, bid.reply(self.config.host_id))
        else:
            self._reply(reply, dumps(inventory_reply(self.config, inv)))

    def receiveMsg_LatticeData(self, msg: LatticeData, sender: Any) -> None:
        kind, reply = self.waiting.pop(msg.request_id, ("", ""))
        self._reply(reply, claims_reply(list(msg.items)) if kind == "claims" else links_reply(list(msg.items)))

    def _reply(self, reply: str, data: bytes) -> None:
        if reply:
            self.telemetry.replied(reply, data)
            self.publish(reply, data)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        self.nats_stop()
        if getattr(self, "telemetry", None) is not None:
            self.telemetry.close()
