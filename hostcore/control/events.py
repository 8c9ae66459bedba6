"""The LatticeEvents actor: publishes the host's lifecycle events and heartbeats on
`wasmbus.evt.{lattice}` (protocol.md §3). The envelope and each event's data are built in
hostcore.wire.cloudevents."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from nats.aio.client import Client as NatsClient
from thespian.actors import ActorExitRequest, WakeupMessage

from hostcore import COMPAT_VERSION
from hostcore.config import HostConfig
from hostcore.control.inventory import InventoryJoin, JoinedInventory
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import Flush, Rewirable, crash_if_asked
from hostcore.telemetry.process import open_process
from hostcore.tree.bridge import NatsBridgeActor
from hostcore.tree.messages import (
    Done,
    GetInventory,
    InitEvents,
    InitFailed,
    Inventory,
    ProviderInventory,
    PublishEvent,
    PublishEvents,
    Ready,
    SendHeartbeat,
)
from hostcore.wire import cloudevents, subjects

log = logging.getLogger(__name__)

__all__ = ["LatticeEvents", "heartbeat_data"]


def heartbeat_data(config: HostConfig, inventory: JoinedInventory, started_at: float) -> dict[str, Any]:
    """host_heartbeat data for this host's joined inventory (shape: wire.cloudevents.host_heartbeat)."""
    counts: dict[str, int] = {}
    for inst in inventory.actors.instances:
        counts[inst.public_key] = counts.get(inst.public_key, 0) + 1
    return cloudevents.host_heartbeat(
        actor_counts=counts,
        providers=[{"public_key": p.public_key, "link_name": p.link_name, "contract_id": p.contract_id}
                   for p in inventory.providers.providers],
        labels=config.labels, friendly_name=config.friendly_name, version=COMPAT_VERSION,
        uptime_seconds=int(time.time() - started_at)).data


class LatticeEvents(Rewirable, NatsBridgeActor):
    """Publishes lifecycle CloudEvents and the periodic host_heartbeat for one host.

    Owns its NATS connection. Never creates children (it holds threads).
    """

    PEERS = frozenset({"actor_supervisor", "provider_supervisor"})

    def receiveMsg_InitEvents(self, msg: InitEvents, sender: Any) -> None:
        set_pdeathsig()
        crash_if_asked(msg.config, "events", msg.restart)
        self.config = msg.config
        open_process(msg.config, role="events")  # log context; counts its NATS reconnects
        self.actor_supervisor, self.provider_supervisor = msg.actor_supervisor, msg.provider_supervisor
        self.inventories = InventoryJoin()
        self.heartbeats = 0
        self.started_at = msg.started_at or time.time()
        self.subject = subjects.lattice_events(msg.config.lattice_prefix)

        async def setup(nc: NatsClient) -> None:
            return None

        try:
            self.nats_start(msg.config.ctl, setup, name=f"hostcore-events-{msg.config.host_id[:8]}")
        except Exception as err:  # noqa: BLE001 -- reported to the supervisor, which gives up
            self.send(sender, InitFailed(role="events", error=f"NATS connection failed: {err}"))
            return
        # The first heartbeat is asked for by the HostSupervisor right after host_started (OTP's
        # child order publishes host_started first), the next ones every interval.
        self.wakeupAfter(dt.timedelta(seconds=msg.config.heartbeat_interval_s))
        self.send(sender, Ready(role="events"))

    def _heartbeat(self) -> None:
        self.heartbeats += 1
        for supervisor in (self.actor_supervisor, self.provider_supervisor):
            self.send(supervisor, GetInventory(request_id=f"heartbeat-{self.heartbeats}"))

    def receiveMsg_PublishEvent(self, msg: PublishEvent, sender: Any) -> None:
        self.publish(self.subject, cloudevents.cloud_event(msg.event_type, msg.data, self.config.host_id))

    def receiveMsg_PublishEvents(self, msg: PublishEvents, sender: Any) -> None:
        for event in msg.events:
            self.receiveMsg_PublishEvent(event, sender)

    def receiveMsg_Flush(self, msg: Flush, sender: Any) -> None:
        """Answer once every event published before this message has reached the server."""
        async def flush() -> None:
            try:
                await self.published()
                await self.nc.flush(timeout=2)
            finally:
                self.to_actor(msg)

        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(flush()))

    def on_inbox_item(self, item: Any) -> None:
        if isinstance(item, Flush):  # flushed
            self.send(item.reply_to, Done(request_id=item.request_id))

    def receiveMsg_SendHeartbeat(self, msg: SendHeartbeat, sender: Any) -> None:
        self._heartbeat()

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        self._heartbeat()
        self.wakeupAfter(dt.timedelta(seconds=self.config.heartbeat_interval_s))

    def receiveMsg_Inventory(self, msg: Inventory, sender: Any) -> None:
        self._inventory_part(msg)

    def receiveMsg_ProviderInventory(self, msg: ProviderInventory, sender: Any) -> None:
        self._inventory_part(msg)

    def _inventory_part(self, msg: Inventory | ProviderInventory) -> None:
        inv = self.inventories.add(msg)
        if inv is not None:
            data = heartbeat_data(self.config, inv, self.started_at)
            self.publish(self.subject, cloudevents.cloud_event(cloudevents.EventType.HOST_HEARTBEAT, data, self.config.host_id))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        self.nats_stop()
