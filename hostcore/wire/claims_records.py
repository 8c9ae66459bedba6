"""Claims as the lattice shows them (protocol.md §3.3, §5.7): the record of `get.claims` and the
lattice cache, and the `claims` map of the started events, for actors and providers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "ActorClaimsLike",
    "ProviderClaimsLike",
    "actor_event_claims",
    "actor_record",
    "provider_event_claims",
    "provider_record",
]


class ActorClaimsLike(Protocol):
    """What the records read from an actor's claims (hostcore.native.claims.ActorClaims)."""

    @property
    def public_key(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def call_alias(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def revision(self) -> int: ...
    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def caps(self) -> Sequence[str]: ...


class ProviderClaimsLike(Protocol):
    """What the records and events read from a provider's claims (a PAR's ProviderClaims)."""

    @property
    def public_key(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def ver(self) -> str | None: ...
    @property
    def capid(self) -> str: ...
    @property
    def revision(self) -> int: ...


def actor_record(claims: ActorClaimsLike) -> dict[str, str | None]:
    """The claims record of `get.claims` and the lattice cache, keys and types of §5.7."""
    return {
        "call_alias": claims.call_alias or "",
        "iss": claims.issuer,
        "name": claims.name or "",
        "caps": ",".join(claims.caps),
        "rev": str(claims.revision),
        "tags": ",".join(claims.tags),
        "version": claims.version,
        "sub": claims.public_key,
    }


def actor_event_claims(claims: ActorClaimsLike, *, not_before_human: str, expires_human: str) -> dict[str, Any]:
    """The `claims` map of the actor_started event (§3.3). Absent tags/caps are sent as empty
    lists (OTP sends null); we do not keep that difference."""
    return {
        "call_alias": claims.call_alias,
        "caps": list(claims.caps),
        "issuer": claims.issuer,
        "tags": list(claims.tags),
        "name": claims.name,
        "version": claims.version,
        "revision": claims.revision,
        "not_before_human": not_before_human,
        "expires_human": expires_human,
    }


def provider_record(claims: ProviderClaimsLike) -> dict[str, str | None]:
    """§5.7 record for a provider (v0.63 adds contract_id). QUIRK: `caps` is `""`, as OTP stores
    a provider's absent caps claim."""
    return {"call_alias": "", "iss": claims.issuer, "name": claims.name or "", "caps": "",
            "rev": str(claims.revision), "tags": "", "version": claims.ver, "sub": claims.public_key,
            "contract_id": claims.capid}


def provider_event_claims(claims: ProviderClaimsLike) -> dict[str, Any]:
    """The `claims` map of the provider_started event (§3.3)."""
    return {"issuer": claims.issuer, "tags": None, "name": claims.name, "version": claims.ver,
            "not_before_human": "immediately", "expires_human": "never"}
