"""Messages of the LatticeCache (protocol.md §12) and of policy decisions (protocol.md §9).

Frozen dataclasses, pickled between processes by Thespian."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hostcore.config import HostConfig
from hostcore.native.claims import ActorClaims
from hostcore.native.par import ProviderClaims

__all__ = [
    "DelLink",
    "EvaluateStart",
    "GetLatticeData",
    "InitLattice",
    "LatticeData",
    "LatticeSnapshot",
    "PolicyVerdict",
    "PutClaims",
    "PutLink",
    "PutRefmap",
]

# --- lattice cache (protocol.md §12) -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InitLattice:
    config: HostConfig
    actor_supervisor: Any
    provider_supervisor: Any
    restart: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PutClaims:
    """To LatticeCache: publish an actor's claims record (§5.7) lattice-wide."""

    record: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class PutRefmap:
    actor_ref: str
    public_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PutLink:
    link: Any  # LinkDefinition
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DelLink:
    actor_id: str
    contract_id: str
    link_name: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetLatticeData:
    """To LatticeCache: `kind` is "links" or "claims"; replied with LatticeData."""

    kind: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LatticeData:
    request_id: str
    items: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LatticeSnapshot:
    """LatticeCache → ActorSupervisor → every ActorModule: what outbound host calls resolve
    against (protocol.md §4.10): link definitions and the call-alias table."""

    links: tuple[Any, ...] = ()  # LinkDefinition
    aliases: dict[str, str] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # only when policy is on


# --- policy (protocol.md §9) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateStart:
    """To LatticeCache: may this host start it? `claims` is ActorClaims (actor) or
    ProviderClaims (provider, with `link_name`). Replied with PolicyVerdict."""

    claims: ActorClaims | ProviderClaims
    request_id: str
    link_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVerdict:
    request_id: str
    permitted: bool
    message: str
