"""LatticeModel: what the dashboard knows about its lattice, built only from control-interface
replies and lattice events (protocol.md §2.4, §3). Pure state: no I/O, an injectable clock.

Hosts come from `ping.hosts` replies, heartbeats and `host_started`; they leave on `host_stopped`
or when nothing was heard from them for `host_timeout_s` (OTP never removed a killed host, its
issue #643). Actors and providers per host come from inventories and per-instance events. An
inventory answers a request sent earlier, so after applying one the model replays that host's
events received since the request went out (start/stop events are idempotent set operations).
Hosts whose heartbeat disagrees with the model are marked stale for the owner to re-inventory.

Provider health comes from `health_check_passed/failed` and from `health_check_status` (v0.63:
sent on every check whose result did not change; hostcore adds a `healthy` flag to it), and for a
provider found only in an inventory, from the owner's own probe (`apply_probe`), so a provider
started before the dashboard does not stay "unknown" until its next health change.

Not thread-safe: one event loop owns it.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from hostcore.wire.cloudevents import event_name, humanize_seconds

__all__ = ["ActorView", "EventRecord", "Health", "HostView", "LatticeModel", "LinkView", "ProviderView"]

# Events that change a host's actors or providers; replayed after an inventory.
_INSTANCE_EVENTS = frozenset({"actor_started", "actor_stopped", "provider_started", "provider_stopped",
                              "health_check_passed", "health_check_failed", "health_check_status"})


class Health(enum.StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(slots=True)
class ActorView:
    id: str
    name: str = ""
    image_ref: str = ""
    instances: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ProviderView:
    id: str
    link_name: str
    contract_id: str = ""
    name: str = ""
    image_ref: str = ""
    health: Health = Health.UNKNOWN


@dataclass(slots=True)
class HostView:
    id: str
    last_seen: float
    friendly_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    version: str = ""
    uptime_seconds: int = 0
    uptime_seen_at: float = 0.0
    actors: dict[str, ActorView] = field(default_factory=dict)
    providers: dict[tuple[str, str], ProviderView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkView:
    """One link definition as `get.links` entries and linkdef events carry it (protocol.md §2.4,
    §3.3); parsed leniently, since it is only shown."""

    actor_id: str
    provider_id: str
    link_name: str
    contract_id: str
    values: dict[str, str] = field(default_factory=dict)
    id: str = ""  # v0.60+ only

    @property
    def key(self) -> tuple[str, str, str]:
        """The identity hosts use: a put for the same triple overwrites (protocol.md §2.4)."""
        return (self.actor_id, self.contract_id, self.link_name)

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> LinkView:
        return cls(actor_id=str(obj.get("actor_id") or ""), provider_id=str(obj.get("provider_id") or ""),
                   link_name=str(obj.get("link_name") or ""), contract_id=str(obj.get("contract_id") or ""),
                   values=_str_map(obj.get("values")), id=str(obj.get("id") or ""))


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One received CloudEvent; `type` without the `com.wasmcloud.lattice.` prefix."""

    seq: int
    type: str
    source: str
    time: str
    data: dict[str, Any]


def _is_host_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == 56 and value.startswith("N")


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_map(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _heartbeat_counts(actors: object) -> dict[str, int]:
    """Instances per actor key from either heartbeat shape (v0.59 list, v0.60+ map)."""
    counts: dict[str, int] = {}
    if isinstance(actors, dict):
        counts = {str(k): int(v) for k, v in actors.items() if isinstance(v, int) and v > 0}
    elif isinstance(actors, list):
        for entry in actors:
            if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
                counts[entry["public_key"]] = counts.get(entry["public_key"], 0) + 1
    return counts


class LatticeModel:
    """The dashboard's view of one lattice. `version` grows on every change."""

    def __init__(self, lattice_prefix: str, *, host_timeout_s: float, event_buffer: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lattice_prefix = lattice_prefix
        self.host_timeout_s = host_timeout_s
        self.clock = clock
        self.hosts: dict[str, HostView] = {}
        self.links: dict[tuple[str, str, str], LinkView] = {}
        self.names: dict[str, str] = {}  # public key → name from claims, lattice-wide
        self.events: deque[EventRecord] = deque(maxlen=event_buffer)
        self.seq = 0
        self.version = 0
        self.nats_connected = True  # the dashboard's own NATS connection (the page's `live` pill)
        self._stale: set[str] = set()
        # host id → when it said host_stopped: a stopping host may still heartbeat or answer a
        # ping for a moment (protocol.md §2.3 `stop`: purge, host_stopped, 300 ms, exit); those
        # must not bring it back. Only its own host_started does (a restart with the same key).
        self._stopped: dict[str, float] = {}

    # --- inputs ----------------------------------------------------------------------------------

    def apply_event(self, event: dict[str, Any]) -> None:
        """Record one CloudEvent from `wasmbus.evt.{lattice}` and apply it."""
        etype = event_name(str(event.get("type", "")))
        data = _obj(event.get("data"))
        self.seq += 1
        record = EventRecord(self.seq, etype, str(event.get("source", "")), str(event.get("time", "")), data)
        self.events.append(record)
        self._mutate(record, replay=False)
        self.version += 1

    def apply_ping(self, reply: dict[str, Any]) -> None:
        """A `ping.hosts` reply: the host is alive; its fields replace what we had."""
        host_id = reply.get("id")
        if not _is_host_id(host_id) or self._recently_stopped(host_id):
            return
        host = self._host(host_id)
        host.friendly_name = str(reply.get("friendly_name") or host.friendly_name)
        host.labels = _str_map(reply.get("labels"))
        host.version = str(reply.get("version") or host.version)
        self._uptime(host, reply.get("uptime_seconds"))
        self.version += 1

    def apply_inventory(self, host_id: str, inventory: dict[str, Any], since_seq: int) -> None:
        """Replace the host's actors and providers with `inventory` (requested when `seq` was
        `since_seq`), then replay the host's instance events received after that."""
        if host_id not in self.hosts or not isinstance(inventory.get("actors"), list):
            return
        host = self.hosts[host_id]
        host.friendly_name = str(inventory.get("friendly_name") or host.friendly_name)
        host.labels = _str_map(inventory.get("labels")) or host.labels
        host.actors = {}
        for entry in inventory["actors"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            name = str(entry.get("name") or "")
            if name and name != "N/A":
                self.names[entry["id"]] = name
            host.actors[entry["id"]] = ActorView(
                entry["id"], name=name, image_ref=str(entry.get("image_ref") or ""),
                instances={str(i.get("instance_id")) for i in entry.get("instances") or [] if isinstance(i, dict)})
        old = host.providers
        host.providers = {}
        for entry in inventory.get("providers") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            key = (entry["id"], str(entry.get("link_name") or "default"))
            prev = old.get(key)
            host.providers[key] = ProviderView(
                key[0], key[1], contract_id=str(entry.get("contract_id") or (prev.contract_id if prev else "")),
                name=str(entry.get("name") or ""), image_ref=str(entry.get("image_ref") or ""),
                health=prev.health if prev else Health.UNKNOWN)
        for record in self.events:
            if record.seq > since_seq and record.source == host_id and record.type in _INSTANCE_EVENTS:
                self._mutate(record, replay=True)
        self._stale.discard(host_id)
        self.version += 1

    def apply_links(self, links: Iterable[LinkView], since_seq: int) -> None:
        """Replace the link definitions with a `get.links` reply (requested when `seq` was
        `since_seq`), then replay the link events received after that."""
        self.links = {link.key: link for link in links}
        for record in self.events:
            if record.seq > since_seq and record.type in ("linkdef_set", "linkdef_deleted"):
                self._mutate(record, replay=True)
        self.version += 1

    def apply_claims(self, entries: Iterable[dict[str, Any]]) -> None:
        """A `get.claims` reply: names for keys the dashboard saw no event or inventory for (a
        link to an actor that runs nowhere yet is still shown by name)."""
        for entry in entries:
            if isinstance(entry.get("sub"), str) and entry.get("name") and entry.get("name") != "N/A":
                self.names[entry["sub"]] = str(entry["name"])
        self.version += 1

    def expire(self) -> list[str]:
        """Drop hosts not heard from for `host_timeout_s`; returns their ids. Nothing expires
        while the dashboard's own NATS connection is down (it hears nobody then)."""
        if not self.nats_connected:
            return []
        now = self.clock()
        gone = [h for h, host in self.hosts.items() if now - host.last_seen > self.host_timeout_s]
        for host_id in gone:
            del self.hosts[host_id]
            self._stale.discard(host_id)
        self._stopped = {h: t for h, t in self._stopped.items() if now - t <= self.host_timeout_s}
        if gone:
            self.version += 1
        return gone

    def set_connected(self, connected: bool) -> None:
        """The dashboard's NATS connection went down or came back. Back up, every host gets a
        fresh `host_timeout_s` to be heard from: the silence was ours, not theirs."""
        if connected == self.nats_connected:
            return
        self.nats_connected = connected
        if connected:
            now = self.clock()
            for host in self.hosts.values():
                host.last_seen = now
        self.version += 1

    def apply_probe(self, host_id: str, provider_id: str, link_name: str, healthy: bool) -> None:
        """The owner's own health probe of a provider whose health no event told yet; the host's
        events win over it (a probe result never replaces a known state)."""
        host = self.hosts.get(host_id)
        provider = host.providers.get((provider_id, link_name)) if host else None
        if provider is not None and provider.health is Health.UNKNOWN:
            provider.health = Health.HEALTHY if healthy else Health.UNHEALTHY
            self.version += 1

    def unknown_health(self, host_id: str) -> list[tuple[str, str]]:
        """(provider key, link name) of the host's providers whose health is not known."""
        host = self.hosts.get(host_id)
        return [key for key, p in host.providers.items() if p.health is Health.UNKNOWN] if host else []

    def take_stale(self) -> set[str]:
        """Hosts whose actors/providers should be re-read from an inventory (cleared here)."""
        stale, self._stale = self._stale, set()
        return {h for h in stale if h in self.hosts}

    # --- event application -----------------------------------------------------------------------

    def _recently_stopped(self, host_id: str) -> bool:
        stopped_at = self._stopped.get(host_id)
        if stopped_at is None:
            return False
        if self.clock() - stopped_at > self.host_timeout_s:
            del self._stopped[host_id]
            return False
        return True

    def _host(self, host_id: str) -> HostView:
        """The host, created (and marked stale) if new; either way it was just heard from."""
        host = self.hosts.get(host_id)
        if host is None:
            host = self.hosts[host_id] = HostView(host_id, last_seen=self.clock())
            self._stale.add(host_id)
        host.last_seen = self.clock()
        return host

    def _uptime(self, host: HostView, seconds: object) -> None:
        if isinstance(seconds, int):
            host.uptime_seconds, host.uptime_seen_at = seconds, self.clock()

    def _mutate(self, ev: EventRecord, *, replay: bool) -> None:
        d = ev.data
        if ev.type in ("linkdef_set", "linkdef_deleted"):
            link = LinkView.from_obj(d)
            if ev.type == "linkdef_set":
                self.links[link.key] = link
            else:
                self.links.pop(link.key, None)
            return
        if not _is_host_id(ev.source):
            return
        if ev.type == "host_stopped":
            self.hosts.pop(ev.source, None)
            self._stale.discard(ev.source)
            self._stopped[ev.source] = self.clock()
            return
        if ev.type == "host_started":
            self._stopped.pop(ev.source, None)
        elif self._recently_stopped(ev.source):
            return
        if replay and ev.source not in self.hosts:
            return
        host = self._host(ev.source) if not replay else self.hosts[ev.source]
        match ev.type:
            case "host_started":
                host.friendly_name = str(d.get("friendly_name") or host.friendly_name)
                host.labels = _str_map(d.get("labels"))
                host.version = str(d.get("version") or host.version)
                host.actors, host.providers = {}, {}
                self._uptime(host, d.get("uptime_seconds", 0))
                self._stale.discard(ev.source)  # a new host runs nothing yet
            case "host_heartbeat":
                self._heartbeat(host, d)
            case "actor_started":
                key = str(d.get("public_key", ""))
                claims = _obj(d.get("claims"))
                name = str(claims.get("name") or self.names.get(key, ""))
                if name:
                    self.names[key] = name
                actor = host.actors.setdefault(key, ActorView(key))
                actor.name = name or actor.name
                actor.image_ref = str(d.get("image_ref") or actor.image_ref)
                actor.instances.add(str(d.get("instance_id", "")))
            case "actor_stopped":
                key = str(d.get("public_key", ""))
                if (stopped := host.actors.get(key)) is not None:
                    stopped.instances.discard(str(d.get("instance_id", "")))
                    if not stopped.instances:
                        del host.actors[key]
            case "provider_started":
                claims = _obj(d.get("claims"))
                pkey = (str(d.get("public_key", "")), str(d.get("link_name") or "default"))
                prev = host.providers.get(pkey)
                host.providers[pkey] = ProviderView(
                    pkey[0], pkey[1], contract_id=str(d.get("contract_id") or ""), name=str(claims.get("name") or ""),
                    image_ref=str(d.get("image_ref") or ""), health=prev.health if prev else Health.UNKNOWN)
                if claims.get("name"):
                    self.names[pkey[0]] = str(claims["name"])
            case "provider_stopped":
                host.providers.pop((str(d.get("public_key", "")), str(d.get("link_name") or "default")), None)
            case "health_check_passed" | "health_check_failed" | "health_check_status":
                checked = host.providers.get((str(d.get("public_key", "")), str(d.get("link_name") or "default")))
                if checked is None:
                    return
                if ev.type != "health_check_status":
                    checked.health = Health.HEALTHY if ev.type == "health_check_passed" else Health.UNHEALTHY
                elif isinstance(d.get("healthy"), bool):  # OTP's status carries no state; hostcore's does
                    checked.health = Health.HEALTHY if d["healthy"] else Health.UNHEALTHY

    def _heartbeat(self, host: HostView, d: dict[str, Any]) -> None:
        host.friendly_name = str(d.get("friendly_name") or host.friendly_name)
        host.labels = _str_map(d.get("labels")) or host.labels
        host.version = str(d.get("version") or host.version)
        self._uptime(host, d.get("uptime_seconds"))
        ours = {k: len(a.instances) for k, a in host.actors.items() if a.instances}
        providers = {(str(p.get("public_key")), str(p.get("link_name") or "default"))
                     for p in d.get("providers") or [] if isinstance(p, dict)}
        if _heartbeat_counts(d.get("actors")) != ours or providers != set(host.providers):
            self._stale.add(host.id)

    # --- output ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole model as JSON-able data, sorted for display (the `/api/lattice` body)."""
        now = self.clock()
        hosts = sorted(self.hosts.values(), key=lambda h: (h.friendly_name, h.id))
        names = {h.id: h.friendly_name or h.id[:12] for h in hosts}
        out_hosts, actors, providers = [], [], []
        for h in hosts:
            uptime = h.uptime_seconds + int(now - h.uptime_seen_at) if h.uptime_seen_at else h.uptime_seconds
            out_hosts.append({
                "id": h.id, "friendly_name": h.friendly_name, "labels": dict(sorted(h.labels.items())),
                "lattice_prefix": self.lattice_prefix, "version": h.version, "uptime_seconds": uptime,
                "uptime_human": humanize_seconds(uptime), "last_seen_s": round(now - h.last_seen, 1),
                "actor_count": sum(len(a.instances) for a in h.actors.values()), "provider_count": len(h.providers)})
            actors += [{"id": a.id, "name": a.name or self.names.get(a.id, "") or "N/A", "host_id": h.id,
                        "host_name": names[h.id], "image_ref": a.image_ref, "count": len(a.instances)}
                       for a in h.actors.values() if a.instances]
            providers += [{"id": p.id, "name": p.name or self.names.get(p.id, "") or "N/A", "link_name": p.link_name,
                           "contract_id": p.contract_id, "image_ref": p.image_ref, "health": str(p.health),
                           "host_id": h.id, "host_name": names[h.id]} for p in h.providers.values()]
        actors.sort(key=lambda a: (a["name"], a["id"], a["host_name"]))
        providers.sort(key=lambda p: (p["name"], p["link_name"], p["host_name"]))
        links = [{"actor_id": lk.actor_id, "actor_name": self.names.get(lk.actor_id, ""),
                  "provider_id": lk.provider_id, "provider_name": self.names.get(lk.provider_id, ""),
                  "link_name": lk.link_name, "contract_id": lk.contract_id, "values": lk.values, "id": lk.id}
                 for lk in sorted(self.links.values(), key=lambda lk: lk.key)]
        return {"lattice_prefix": self.lattice_prefix, "version": self.version, "nats_connected": self.nats_connected,
                "hosts": out_hosts,
                "actors": actors, "providers": providers, "links": links}

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` events, newest first."""
        return [{"seq": r.seq, "type": r.type, "source": r.source, "time": r.time, "data": r.data}
                for r in list(self.events)[-limit:][::-1]]
