"""Control-interface request and reply payloads (protocol.md §2.2–2.4), each with
`from_wire` / `to_wire`. Raw dicts appear only inside those functions.

"Required" follows v0.58+: the key is present and its value is neither null nor false.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from hostcore.errors import ControlReplyInvalid, ControlRequestError, ControlRequestRefused
from hostcore.wire.linkdefs import LinkDefinition

__all__ = [
    "ActorDescription",
    "HostInventory",
    "InstanceDescription",
    "PingReply",
    "ProviderDescription",
    "Ack",
    "AuctionActorRequest",
    "AuctionProviderRequest",
    "LaunchActorRequest",
    "LaunchProviderRequest",
    "ScaleRequest",
    "StopActorRequest",
    "StopHostRequest",
    "StopProviderRequest",
    "UpdateActorRequest",
    "claims_reply",
    "dumps",
    "failure_ack",
    "links_reply",
    "parse_claims_reply",
    "parse_links_reply",
    "labels_match",
    "success_ack",
]


def _object(data: bytes, error: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ControlRequestError(error) from None
    if not isinstance(obj, dict):
        raise ControlRequestError(error)
    return obj


def _required(obj: dict[str, Any], error: str, *keys: str) -> None:
    if any(obj.get(k) is None or obj.get(k) is False for k in keys):
        raise ControlRequestError(error)


def _str(obj: dict[str, Any], key: str, error: str, default: str = "") -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ControlRequestError(error)
    return value


def _int(obj: dict[str, Any], key: str, error: str, default: int = 0) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlRequestError(error)
    return value


def _annotations(obj: dict[str, Any], error: str) -> dict[str, str]:
    value = obj.get("annotations") or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ControlRequestError(error)
    return dict(value)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def success_ack() -> bytes:
    return dumps({"accepted": True, "error": ""})


def failure_ack(error: str) -> bytes:
    return dumps({"accepted": False, "error": error})


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleRequest:
    actor_id: str
    actor_ref: str
    count: int
    host_id: str = ""
    ERROR = "Invalid scale actor JSON request"

    @classmethod
    def from_wire(cls, data: bytes) -> ScaleRequest:
        obj = _object(data, cls.ERROR)
        _required(obj, cls.ERROR, "actor_id", "actor_ref", "count")
        return cls(actor_id=_str(obj, "actor_id", cls.ERROR), actor_ref=_str(obj, "actor_ref", cls.ERROR),
                   count=_int(obj, "count", cls.ERROR), host_id=_str(obj, "host_id", cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps({"actor_id": self.actor_id, "actor_ref": self.actor_ref, "count": self.count,
                      "host_id": self.host_id, "annotations": {}})


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchActorRequest:
    actor_ref: str
    count: int = 1
    annotations: dict[str, str] = field(default_factory=dict)
    host_id: str = ""
    ERROR = "Invalid launch actor JSON request"

    @classmethod
    def from_wire(cls, data: bytes) -> LaunchActorRequest:
        obj = _object(data, cls.ERROR)
        _required(obj, cls.ERROR, "actor_ref")
        return cls(actor_ref=_str(obj, "actor_ref", cls.ERROR), count=_int(obj, "count", cls.ERROR, 1),
                   annotations=_annotations(obj, cls.ERROR), host_id=_str(obj, "host_id", cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps(asdict(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class StopActorRequest:
    actor_ref: str  # the actor's public key (protocol.md §2.3 `sa`)
    count: int
    annotations: dict[str, str] = field(default_factory=dict)
    host_id: str = ""
    ERROR = "Invalid request to stop actor"

    @classmethod
    def from_wire(cls, data: bytes) -> StopActorRequest:
        obj = _object(data, cls.ERROR)
        # `count` 0 means "all": present-and-not-null is what matters (0 is truthy in Elixir).
        _required(obj, cls.ERROR, "actor_ref", "count")
        return cls(actor_ref=_str(obj, "actor_ref", cls.ERROR), count=_int(obj, "count", cls.ERROR),
                   annotations=_annotations(obj, cls.ERROR), host_id=_str(obj, "host_id", cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps(asdict(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class StopHostRequest:
    host_id: str = ""
    timeout: int | None = None

    @classmethod
    def from_wire(cls, data: bytes) -> StopHostRequest:
        try:
            obj = json.loads(data) if data.strip() else {}
        except (ValueError, UnicodeDecodeError) as err:
            raise ControlRequestError(f"Unable to parse stop host command: {err}") from None
        if not isinstance(obj, dict):
            raise ControlRequestError("Unable to parse stop host command: not a JSON object")
        host_id = obj.get("host_id") or ""
        return cls(host_id=host_id if isinstance(host_id, str) else "", timeout=None)

    def to_wire(self) -> bytes:
        return dumps({"host_id": self.host_id, "timeout": self.timeout})


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    accepted: bool
    error: str = ""

    @classmethod
    def from_wire(cls, data: bytes) -> Ack:
        obj = json.loads(data)
        return cls(accepted=bool(obj.get("accepted")), error=str(obj.get("error") or ""))


    def raise_if_refused(self) -> Ack:
        """Self when accepted; else ControlRequestRefused with the host's text."""
        if not self.accepted:
            raise ControlRequestRefused(self.error)
        return self


def claims_reply(records: list[dict[str, Any]]) -> bytes:
    """The get.claims reply (protocol.md §2.4): `{"claims": [record, …]}`."""
    return dumps({"claims": records})


def links_reply(links: list[dict[str, Any]]) -> bytes:
    """The get.links reply (protocol.md §2.4): `{"links": [LinkDefinition.to_map(), …]}`."""
    return dumps({"links": links})


def _list_reply(data: bytes, key: str, subject: str) -> list[Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ControlReplyInvalid(subject) from None
    if isinstance(obj, dict) and obj.get("accepted") is False:
        raise ControlRequestRefused(str(obj.get("error") or ""))
    if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
        raise ControlReplyInvalid(subject)
    return list(obj[key])


def parse_claims_reply(data: bytes, subject: str = "get.claims") -> list[dict[str, Any]]:
    """The claims records of a get.claims reply (entries that are not maps are dropped).
    Raises ControlRequestRefused on a failure ack, ControlReplyInvalid on anything else."""
    return [c for c in _list_reply(data, "claims", subject) if isinstance(c, dict)]


def parse_links_reply(data: bytes, subject: str = "get.links") -> list[LinkDefinition]:
    """The link definitions of a get.links reply, read as a provider reads them (the host's id
    kept). Raises ControlRequestRefused on a failure ack, ControlReplyInvalid on anything else."""
    try:
        return [LinkDefinition.from_provider_map(obj) for obj in _list_reply(data, "links", subject)]
    except ValueError:
        raise ControlReplyInvalid(subject) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateActorRequest:
    actor_id: str
    new_actor_ref: str
    host_id: str = ""
    ERROR = "Invalid JSON request to update actor"

    @classmethod
    def from_wire(cls, data: bytes) -> UpdateActorRequest:
        # QUIRK (protocol.md §2.3): v0.59 crashed on bad JSON and never replied; we answer.
        obj = _object(data, cls.ERROR)
        _required(obj, cls.ERROR, "new_actor_ref", "actor_id")
        return cls(actor_id=_str(obj, "actor_id", cls.ERROR), new_actor_ref=_str(obj, "new_actor_ref", cls.ERROR),
                   host_id=_str(obj, "host_id", cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps({"actor_id": self.actor_id, "new_actor_ref": self.new_actor_ref, "host_id": self.host_id,
                      "annotations": {}})


def _constraints(obj: dict[str, Any], error: str) -> dict[str, str]:
    value = obj.get("constraints") or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ControlRequestError(error)
    return dict(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuctionActorRequest:
    actor_ref: str
    constraints: dict[str, str] = field(default_factory=dict)
    ERROR = "Invalid JSON request for actor auction"

    @classmethod
    def from_wire(cls, data: bytes) -> AuctionActorRequest:
        obj = _object(data, cls.ERROR)
        _required(obj, cls.ERROR, "actor_ref")
        return cls(actor_ref=_str(obj, "actor_ref", cls.ERROR), constraints=_constraints(obj, cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps({"actor_ref": self.actor_ref, "constraints": self.constraints})

    def reply(self, host_id: str) -> bytes:
        return dumps({"actor_ref": self.actor_ref, "constraints": self.constraints, "host_id": host_id})


@dataclass(frozen=True, slots=True, kw_only=True)
class AuctionProviderRequest:
    provider_ref: str
    link_name: str = "default"
    constraints: dict[str, str] = field(default_factory=dict)
    ERROR = "Invalid JSON request to auction provider"

    @classmethod
    def from_wire(cls, data: bytes) -> AuctionProviderRequest:
        obj = _object(data, cls.ERROR)
        _required(obj, cls.ERROR, "provider_ref")
        return cls(provider_ref=_str(obj, "provider_ref", cls.ERROR),
                   link_name=_str(obj, "link_name", cls.ERROR, "default") or "default",
                   constraints=_constraints(obj, cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps({"provider_ref": self.provider_ref, "link_name": self.link_name,
                      "constraints": self.constraints})

    def reply(self, host_id: str) -> bytes:
        return dumps({"provider_ref": self.provider_ref, "link_name": self.link_name,
                      "constraints": self.constraints, "host_id": host_id})


def labels_match(constraints: dict[str, str], labels: dict[str, str]) -> bool:
    """protocol.md §2.4 auctions: every constraint key present with an equal value."""
    return all(labels.get(k) == v for k, v in constraints.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchProviderRequest:
    provider_ref: str
    link_name: str
    configuration: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    host_id: str = ""
    ERROR = "Improperly formed start provider command JSON"

    @classmethod
    def from_wire(cls, data: bytes) -> LaunchProviderRequest:
        obj = _object(data, cls.ERROR)
        _required(obj, cls.ERROR, "provider_ref", "link_name")
        return cls(provider_ref=_str(obj, "provider_ref", cls.ERROR), link_name=_str(obj, "link_name", cls.ERROR),
                   configuration=_str(obj, "configuration", cls.ERROR), annotations=_annotations(obj, cls.ERROR),
                   host_id=_str(obj, "host_id", cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps(asdict(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class StopProviderRequest:
    provider_ref: str  # the provider's public key
    link_name: str
    contract_id: str = ""
    host_id: str = ""
    ERROR = "Invalid JSON request for stop provider"

    @classmethod
    def from_wire(cls, data: bytes) -> StopProviderRequest:
        obj = _object(data, cls.ERROR)
        _required(obj, cls.ERROR, "provider_ref", "link_name")
        return cls(provider_ref=_str(obj, "provider_ref", cls.ERROR), link_name=_str(obj, "link_name", cls.ERROR),
                   contract_id=_str(obj, "contract_id", cls.ERROR), host_id=_str(obj, "host_id", cls.ERROR))

    def to_wire(self) -> bytes:
        return dumps(asdict(self))


# --- replies to queries (protocol.md §2.4) ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PingReply:
    """One host's answer to ping.hosts (v0.59 keys plus v0.60+'s host names and lattice)."""

    id: str
    issuer: str
    labels: dict[str, str]
    friendly_name: str
    uptime_seconds: int
    uptime_human: str
    version: str
    cluster_issuers: str  # comma-separated, as OTP sends them
    js_domain: str | None
    ctl_host: str
    prov_rpc_host: str
    rpc_host: str
    lattice_prefix: str

    def to_map(self) -> dict[str, Any]:
        return {
            "id": self.id, "issuer": self.issuer, "labels": self.labels, "friendly_name": self.friendly_name,
            "uptime_seconds": self.uptime_seconds, "uptime_human": self.uptime_human, "version": self.version,
            "cluster_issuers": self.cluster_issuers, "js_domain": self.js_domain, "ctl_host": self.ctl_host,
            "prov_rpc_host": self.prov_rpc_host, "rpc_host": self.rpc_host, "lattice_prefix": self.lattice_prefix,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceDescription:
    annotations: dict[str, str]
    instance_id: str
    revision: int

    def to_map(self) -> dict[str, Any]:
        return {"annotations": self.annotations, "instance_id": self.instance_id, "revision": self.revision}


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorDescription:
    id: str
    image_ref: str
    name: str
    instances: tuple[InstanceDescription, ...]

    def to_map(self) -> dict[str, Any]:
        return {"id": self.id, "image_ref": self.image_ref, "name": self.name,
                "instances": [i.to_map() for i in self.instances]}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderDescription:
    id: str
    image_ref: str
    link_name: str
    name: str
    instance_id: str
    annotations: dict[str, str]
    revision: int
    contract_id: str  # v0.63

    def to_map(self) -> dict[str, Any]:
        return {"id": self.id, "image_ref": self.image_ref, "link_name": self.link_name, "name": self.name,
                "instance_id": self.instance_id, "annotations": self.annotations, "revision": self.revision,
                "contract_id": self.contract_id}


@dataclass(frozen=True, slots=True, kw_only=True)
class HostInventory:
    """The get.{host}.inv reply (v0.59 shape; provider entries also carry v0.63's contract_id)."""

    host_id: str
    issuer: str
    labels: dict[str, str]
    friendly_name: str
    actors: tuple[ActorDescription, ...]
    providers: tuple[ProviderDescription, ...]

    def to_map(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "issuer": self.issuer, "labels": self.labels,
                "friendly_name": self.friendly_name, "actors": [a.to_map() for a in self.actors],
                "providers": [p.to_map() for p in self.providers]}
