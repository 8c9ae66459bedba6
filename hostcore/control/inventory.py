"""A host's inventory comes from two supervisors (actors, providers); this joins their answers
to one GetInventory and fills the wire shape that carries it (protocol.md §2.4 get.H.inv, §3.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hostcore.config import HostConfig
from hostcore.tree.messages import InstanceInfo, Inventory, ProviderInventory
from hostcore.wire.control import ActorDescription, HostInventory, InstanceDescription, ProviderDescription

__all__ = ["InventoryJoin", "JoinedInventory", "inventory_reply", "nats_host"]


@dataclass(frozen=True, slots=True)
class JoinedInventory:
    """Both halves of one host's inventory."""

    actors: Inventory
    providers: ProviderInventory


@dataclass(slots=True)
class InventoryJoin:
    """Pairs Inventory and ProviderInventory answers by request id. Not thread-safe (actor use)."""

    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, msg: Inventory | ProviderInventory) -> JoinedInventory | None:
        """Record one half; returns the whole inventory once both halves arrived."""
        slot = self.parts.setdefault(msg.request_id, {})
        slot["actors" if isinstance(msg, Inventory) else "providers"] = msg
        if len(slot) < 2:
            return None
        del self.parts[msg.request_id]
        return JoinedInventory(actors=slot["actors"], providers=slot["providers"])

    def forget(self, request_id: str) -> None:
        """Drop a half that will never be paired (its other half's role was restarted)."""
        self.parts.pop(request_id, None)


def inventory_reply(config: HostConfig, inv: JoinedInventory) -> dict[str, Any]:
    """The get.{host}.inv reply for this host (shape: wire.control.HostInventory)."""
    instances: dict[str, list[InstanceDescription]] = {}
    first: dict[str, InstanceInfo] = {}
    for inst in inv.actors.instances:
        first.setdefault(inst.public_key, inst)
        instances.setdefault(inst.public_key, []).append(
            InstanceDescription(annotations=inst.annotations, instance_id=inst.instance_id, revision=inst.revision))
    actors = tuple(ActorDescription(id=key, image_ref=first[key].image_ref, name=first[key].name,
                                    instances=tuple(described)) for key, described in instances.items())
    providers = tuple(ProviderDescription(id=p.public_key, image_ref=p.image_ref, link_name=p.link_name, name=p.name,
                                          instance_id=p.instance_id, annotations=p.annotations, revision=p.revision,
                                          contract_id=p.contract_id) for p in inv.providers.providers)
    return HostInventory(host_id=config.host_id, issuer=config.cluster_key.public_key, labels=config.labels,
                         friendly_name=config.friendly_name, actors=actors, providers=providers).to_map()


def nats_host(nats_url: str) -> str:
    """The host name of the (first) NATS URL, as OTP reports its configured `ctl_host`/`rpc_host`
    (`nats://127.0.0.1:4222` → `127.0.0.1`)."""
    first = nats_url.split(",", 1)[0].strip()
    if "://" not in first:
        first = f"nats://{first}"
    try:
        return urlsplit(first).hostname or first
    except ValueError:
        return first
