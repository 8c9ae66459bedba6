"""wascap actor claims: the JWT embedded in a module's `jwt` custom section (protocol.md §5).

`extract_claims` is the host's gate for starting an actor (§5.5); `sign_actor` is its inverse,
used by the CLI and by tests. The generic JWT code lives in wascap_jwt.py and the section
handling in wasm_sections.py. All functions are pure and thread-safe.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hostcore.errors import (
    ClaimsBadSignature,
    ClaimsExpired,
    ClaimsExtractFailed,
    ClaimsHashMismatch,
    ClaimsInvalid,
    ClaimsNotYetValid,
    NoClaims,
    TokenError,
    TokenMalformed,
)
from hostcore.native.nkeys import KeyPair
from hostcore.native.wascap_jwt import (
    WASCAP_REVISION,
    b64url_segment,
    check_claim_types,
    encode_jwt,
    new_jti,
    parse_token,
)
from hostcore.native.wasm_sections import append_jwt_section, jwt_section_payload, module_hash, strip_jwt_sections
from hostcore.wire.claims_records import actor_event_claims, actor_record

__all__ = ["ActorClaims", "extract_claims", "normalize_call_alias", "sign_actor"]

_HASH_ENFORCED_FROM_REVISION = 3


def normalize_call_alias(alias: str) -> str:
    """wascap's call alias normalisation (§5.2): lower, trim, ASCII only, ` `/`-`/`.` → `_`."""
    normalized = "".join(c for c in alias.lower().strip() if c.isascii())
    for char in " -.":
        normalized = normalized.replace(char, "_")
    return normalized


# --- human time strings ----------------------------------------------------------------------------

_MINUTE, _HOUR, _DAY = 60, 3600, 86400
# chrono-humanize rough periods: (exclusive lower bound s, text for exactly one, plural noun,
# unit s); a row with a singular text never shows a count.
_ROUGH_PERIODS: tuple[tuple[int, str, str, int], ...] = (
    (547 * _DAY, "", "years", 365 * _DAY),
    (345 * _DAY, "a year", "", 0),
    (45 * _DAY, "", "months", 30 * _DAY),
    (29 * _DAY, "a month", "", 0),
    (10 * _DAY + 12 * _HOUR, "", "weeks", 7 * _DAY),
    (6 * _DAY + 12 * _HOUR, "a week", "", 0),
    (36 * _HOUR, "", "days", _DAY),
    (22 * _HOUR, "a day", "", 0),
    (90 * _MINUTE, "", "hours", _HOUR),
    (45 * _MINUTE, "an hour", "", 0),
    (90, "", "minutes", _MINUTE),
    (45, "a minute", "", 0),
    (10, "", "seconds", 1),
)


def _humanize_stamp(stamp: int, now: float) -> str:
    """`stamp` relative to `now` as OTP v0.59 renders it: chrono-humanize "rough" English.

    The host NIF and wascap 0.8 use chrono_humanize::HumanTime (later wascap switched to the
    `humantime` crate's "in 3days" style, which §3.3 quotes): "in 3 days", "2 hours ago",
    "a day ago", "in a month"; within ±10 s it is just "now".
    """
    diff = stamp - int(now)
    seconds = abs(diff)
    for bound, singular, plural, unit in _ROUGH_PERIODS:
        if seconds > bound:
            text = singular or f"{max(seconds // unit, 2) if unit > 1 else seconds} {plural}"
            return f"in {text}" if diff > 0 else f"{text} ago"
    return "now"


# --- actor claims ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorClaims:
    """The verified claims of a signed actor module (§5.2, §5.6). Immutable and picklable."""

    public_key: str  # `sub`, the actor's identity (M…)
    issuer: str  # `iss`, the signing account (A…)
    name: str | None
    call_alias: str | None
    version: str | None  # `ver`
    rev: int | None
    issued_at: int
    expires: int | None
    not_before: int | None
    tags: tuple[str, ...]
    caps: tuple[str, ...]
    module_hash: str
    jwt: str = field(repr=False)
    wascap_revision: int | None
    provider: bool

    @property
    def revision(self) -> int:
        # QUIRK: §5.6 revision_or_iat — a missing or zero `rev` is reported as the `iat` stamp.
        return self.rev if self.rev is not None and self.rev > 0 else self.issued_at

    def expires_human(self, now: float | None = None) -> str:
        """`never` without `exp`, else e.g. "in 3 days" / "2 hours ago" (see `_humanize_stamp`)."""
        if self.expires is None:
            return "never"
        return _humanize_stamp(self.expires, time.time() if now is None else now)

    def not_before_human(self, now: float | None = None) -> str:
        """`immediately` without `nbf`, else e.g. "in 3 days" / "2 hours ago"."""
        if self.not_before is None:
            return "immediately"
        return _humanize_stamp(self.not_before, time.time() if now is None else now)

    def has_cap(self, contract_id: str) -> bool:
        return contract_id in self.caps

    def to_cache_record(self) -> dict[str, str | None]:
        """The claims record of `get.claims` and the lattice cache (§5.7)."""
        return actor_record(self)

    def to_event_claims(self, now: float | None = None) -> dict[str, Any]:
        """The `claims` map of the actor_started event (§3.3)."""
        return actor_event_claims(self, not_before_human=self.not_before_human(now),
                                  expires_human=self.expires_human(now))


def _optional(meta: dict[str, Any], key: str, kind: type) -> Any:
    value = meta.get(key)
    if value is not None and (type(value) is not kind):
        raise ClaimsExtractFailed()
    return value


def _string_list(meta: dict[str, Any], key: str) -> tuple[str, ...]:
    value = meta.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ClaimsExtractFailed()
    return tuple(value)


def _decode_actor_claims(token: str) -> dict[str, Any]:
    """wascap `Claims::<Actor>::decode`: only the claims segment, no header or signature."""
    segments = token.split(".")
    if len(segments) != 3:
        raise ClaimsExtractFailed()
    try:
        claims = json.loads(b64url_segment(segments[1]))
    except (TokenMalformed, ValueError, RecursionError) as e:
        raise ClaimsExtractFailed() from e
    if not isinstance(claims, dict):
        raise ClaimsExtractFailed()
    try:
        check_claim_types(claims)
    except TokenMalformed as e:
        raise ClaimsExtractFailed() from e
    meta = claims.get("wascap")
    if not isinstance(meta, dict) or not isinstance(meta.get("hash"), str):
        raise ClaimsExtractFailed()
    rev = _optional(meta, "rev", int)
    if rev is not None and not -(2**31) <= rev < 2**31:  # an i32 in wascap
        raise ClaimsExtractFailed()
    return claims


def extract_claims(module: bytes, *, now: float | None = None) -> ActorClaims:
    """Find, verify and return the claims of a signed actor module (§5.5).

    Checks in the order of wascap 0.8 + the OTP `extract_claims` NIF, first failure wins:
    1. no `jwt`/`wasmcloud_jwt` section → NoClaims (not wasm at all → NotWasm);
    2. claims segment undecodable or mistyped → ClaimsExtractFailed;
       module hash ≠ `wascap.hash` → ClaimsHashMismatch (enforced unless `wascap_revision` < 3);
    3. header/issuer/subject invalid → ClaimsInvalid; then `exp` passed → ClaimsExpired,
       `nbf` not reached → ClaimsNotYetValid, signature invalid → ClaimsBadSignature.
    So a tampered *and* expired token reports ClaimsExpired, exactly as OTP does.
    """
    payload = jwt_section_payload(module)
    if payload is None:
        raise NoClaims()
    try:
        token = payload.decode("ascii")
    except UnicodeDecodeError as e:
        raise ClaimsExtractFailed() from e
    claims = _decode_actor_claims(token)
    meta = claims["wascap"]
    revision = claims.get("wascap_revision")
    if revision is None or revision >= _HASH_ENFORCED_FROM_REVISION:
        # §5.4: rev-2 (wascap 0.9.x walrus) hashes cannot be reproduced, so they are not checked.
        if module_hash(module) != meta["hash"]:
            raise ClaimsHashMismatch()
    current = time.time() if now is None else now
    try:
        parsed = parse_token(token)
        signature_ok = parsed.signature_valid()
    except TokenError as e:
        raise ClaimsInvalid(e.wire) from e
    if parsed.expired(current):
        raise ClaimsExpired()
    if parsed.not_yet_valid(current):
        raise ClaimsNotYetValid()
    if not signature_ok:
        raise ClaimsBadSignature()
    return ActorClaims(
        public_key=claims["sub"],
        issuer=claims["iss"],
        name=_optional(meta, "name", str),
        call_alias=_optional(meta, "call_alias", str),
        version=_optional(meta, "ver", str),
        rev=_optional(meta, "rev", int),
        issued_at=claims["iat"],
        expires=claims.get("exp"),
        not_before=claims.get("nbf"),
        tags=_string_list(meta, "tags"),
        caps=_string_list(meta, "caps"),
        module_hash=meta["hash"],
        jwt=token,
        wascap_revision=revision,
        provider=_optional(meta, "prov", bool) or False,
    )


def sign_actor(
    module: bytes,
    *,
    account: KeyPair,
    module_key: KeyPair,
    name: str,
    caps: Sequence[str] = (),
    tags: Sequence[str] = (),
    rev: int | None = None,
    ver: str | None = None,
    call_alias: str | None = None,
    expires: int | None = None,
    not_before: int | None = None,
    issued_at: int | None = None,
) -> bytes:
    """Sign `module` as actor `module_key`, issued by `account`; returns the new module bytes.

    Any existing jwt sections are removed first and a `jwt` custom section (the name OTP ≤0.59
    reads) is appended. Claims follow wascap's field order (§5.1/§5.2) with
    `wascap_revision` 3, so `extract_claims` enforces the hash. `expires`, `not_before` and
    `issued_at` are epoch seconds (`issued_at` defaults to now). Raises NotWasm.
    """
    stripped = strip_jwt_sections(module)
    meta: dict[str, Any] = {"name": name, "hash": module_hash(stripped)}
    meta["tags"] = list(tags)
    meta["caps"] = list(caps)
    if rev is not None:
        meta["rev"] = rev
    if ver is not None:
        meta["ver"] = ver
    if call_alias is not None:
        meta["call_alias"] = normalize_call_alias(call_alias)
    meta["prov"] = False
    claims: dict[str, Any] = {}
    if expires is not None:
        claims["exp"] = expires
    claims["jti"] = new_jti()
    claims["iat"] = int(time.time()) if issued_at is None else issued_at
    claims["iss"] = account.public_key
    claims["sub"] = module_key.public_key
    if not_before is not None:
        claims["nbf"] = not_before
    claims["wascap"] = meta
    claims["wascap_revision"] = WASCAP_REVISION
    token = encode_jwt(claims, account)
    return append_jwt_section(stripped, token)
