"""Link definitions (protocol.md §2.4 linkdefs.*, §4.11, §12): the one wire type, in JSON for the
lattice cache and events, and msgpack for providers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Self

import msgpack

from hostcore.errors import ControlRequestError

__all__ = ["LinkDefinition", "LinkDeleteRequest", "link_id", "str_map"]


def link_id(actor_id: str, contract_id: str, link_name: str) -> str:
    """v0.60+ deterministic id: upper hex SHA-256 of the three parts (protocol.md §12.2), so every
    host names a link the same and a re-put overwrites it."""
    return hashlib.sha256(f"{actor_id}{contract_id}{link_name}".encode()).hexdigest().upper()


def str_map(value: Any, what: str) -> dict[str, str]:
    """A JSON map of strings (`None` → {}); ValueError naming `what` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{what} must be a map of strings")
    return dict(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDefinition:
    """A link between an actor and a provider; `values` is the link's configuration.

    `id` defaults to the deterministic v0.60+ id (`link_id`); a provider keeps the id its host
    sent (hosts before v0.60 sent a random one)."""

    actor_id: str
    provider_id: str
    link_name: str
    contract_id: str
    values: dict[str, str] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", link_id(self.actor_id, self.contract_id, self.link_name))

    def to_map(self, *, deleted: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "actor_id": self.actor_id, "provider_id": self.provider_id,
                               "link_name": self.link_name, "contract_id": self.contract_id, "values": self.values}
        if deleted is not None:
            out["deleted"] = deleted
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_map(), separators=(",", ":")).encode()

    def to_msgpack(self, *, deleted: bool = False) -> bytes:
        """The msgpack map the host publishes to a provider on `linkdefs.put`/`.del` (§4.11)."""
        return bytes(msgpack.packb(self.to_map(deleted=deleted), use_bin_type=True))

    @classmethod
    def from_map(cls, obj: Any, error: str = "Invalid link definition put request") -> Self:
        """From a control request, the lattice cache or an event (JSON or msgpack map): all four
        ids required, `values` optional str → str, the id recomputed. Raises ControlRequestError(error)."""
        if not isinstance(obj, dict):
            raise ControlRequestError(error)
        ids = [obj.get(k) for k in ("actor_id", "provider_id", "link_name", "contract_id")]
        if not all(isinstance(v, str) and v for v in ids):
            raise ControlRequestError(error)
        values = obj.get("values") or {}
        if not isinstance(values, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            raise ControlRequestError(error)
        return cls(actor_id=ids[0], provider_id=ids[1], link_name=ids[2], contract_id=ids[3], values=dict(values))

    @classmethod
    def from_json(cls, data: bytes, error: str = "Invalid link definition put request") -> Self:
        try:
            return cls.from_map(json.loads(data), error)
        except (ValueError, UnicodeDecodeError):
            raise ControlRequestError(error) from None

    @classmethod
    def from_provider_map(cls, fields: Any) -> Self:
        """As a provider reads a link from its host data or a linkdefs subject: leniently, as
        wasmbus-rpc does (only `actor_id` is required; the sent id is kept). Raises ValueError."""
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
        return cls(values=str_map(fields.get("values"), "link definition `values`"), **strings)

    @classmethod
    def from_msgpack(cls, data: bytes) -> Self:
        """Decode a provider's `linkdefs.put`/`linkdefs.del` payload. Raises ValueError."""
        try:
            fields = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException, TypeError) as e:
            raise ValueError(f"not msgpack: {e}") from e
        return cls.from_provider_map(fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDeleteRequest:
    actor_id: str
    contract_id: str
    link_name: str
    ERROR = "Invalid link definition removal request"

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ControlRequestError(cls.ERROR) from None
        vals = [obj.get(k) if isinstance(obj, dict) else None for k in ("actor_id", "contract_id", "link_name")]
        if not all(isinstance(v, str) and v for v in vals):
            raise ControlRequestError(cls.ERROR)
        return cls(actor_id=vals[0], contract_id=vals[1], link_name=vals[2])

    def to_json(self) -> bytes:
        return json.dumps({"actor_id": self.actor_id, "contract_id": self.contract_id,
                           "link_name": self.link_name}).encode()
