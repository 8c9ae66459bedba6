"""A host's inventory comes from two supervisors (actors, providers); this joins their answers
to one GetInventory and builds the wire shapes that carry it (protocol.md §2.4 get.H.inv, §3.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hostcore.tree.messages import Inventory, ProviderInventory
from hostcore.config import HostConfig

__all__ = ["HostInventory", "InventoryJoin", "inventory_reply", "nats_host"]


@dataclass(frozen=True, slots=True)
class HostInventory:
    actors: Inventory
    providers: ProviderInventory


@dataclass(slots=True)
class InventoryJoin:
    """Pairs Inventory and ProviderInventory answers by request id. Not thread-safe (actor use)."""

    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, msg: Inventory | ProviderInventory) -> HostInventory | None:
        """Record one half; returns the whole inventory once both halves arrived."""
        slot = self.parts.setdefault(msg.request_id, {})
        slot["actors" if isinstance(msg, Inventory) else "providers"] = msg
        if len(slot) < 2:
            return None
        del self.parts[msg.request_id]
        return HostInventory(actors=slot["actors"], providers=slot["providers"])

    def forget(self, request_id: str) -> None:
        """Drop a half that will never be paired (its other half's role was restarted)."""
        self.parts.pop(request_id, None)


def inventory_reply(config: HostConfig, inv: HostInventory) -> dict[str, Any]:
    """get.{host}.inv reply (v0.59 shape; provider entries also carry v0.63's contract_id)."""
    actors: dict[str, dict[str, Any]] = {}
    for inst in inv.actors.instances:
        entry = actors.setdefault(inst.public_key, {"id": inst.public_key, "image_ref": inst.image_ref,
                                                    "name": inst.name, "instances": []})
        entry["instances"].append({"annotations": inst.annotations, "instance_id": inst.instance_id,
                                   "revision": inst.revision})
    providers = [{"id": p.public_key, "image_ref": p.image_ref, "link_name": p.link_name, "name": p.name,
                  "instance_id": p.instance_id, "annotations": p.annotations, "revision": p.revision,
                  "contract_id": p.contract_id} for p in inv.providers.providers]
    return {"host_id": config.host_id, "issuer": config.cluster_key.public_key, "labels": config.labels,
            "friendly_name": config.friendly_name, "actors": list(actors.values()), "providers": providers}


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
