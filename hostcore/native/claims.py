"""wascap actor claims: the JWT embedded in a module's `jwt` custom section (protocol.md §5).

`extract_claims` is the host's gate for starting an actor (§5.5); `sign_actor` is its inverse,
used by the CLI and by tests. The generic JWT helpers (`encode_jwt`, `parse_token`,
`decode_jwt`) are shared with invocation.py. All functions are pure and thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
import jwt.algorithms
import nacl.exceptions
import nacl.signing

from hostcore.errors import (
    ClaimsBadSignature,
    ClaimsExpired,
    ClaimsExtractFailed,
    ClaimsHashMismatch,
    ClaimsInvalid,
    ClaimsNotYetValid,
    NkeyError,
    NoClaims,
    NotWasm,
    TokenBadAlgorithm,
    TokenBadHeader,
    TokenBadIssuerKey,
    TokenBadSignature,
    TokenError,
    TokenExpired,
    TokenMalformed,
    TokenMissingIssuer,
    TokenMissingSubject,
    TokenNotYetValid,
)
from hostcore.native import nkeys
from hostcore.native.nkeys import KeyPair

__all__ = [
    "ALGORITHM",
    "ActorClaims",
    "HEADER_SEGMENT",
    "Token",
    "WASCAP_REVISION",
    "decode_jwt",
    "encode_jwt",
    "extract_claims",
    "module_hash",
    "new_jti",
    "normalize_call_alias",
    "parse_token",
    "sign_actor",
    "strip_jwt_sections",
]

ALGORITHM = "Ed25519"
# §5.1: what every wascap token starts with; `encode_jwt` must reproduce it byte for byte.
HEADER_SEGMENT = "eyJ0eXAiOiJqd3QiLCJhbGciOiJFZDI1NTE5In0"
# We sign as wascap ≥0.10.1 does, so the module hash of our own tokens is always enforced (§5.4).
WASCAP_REVISION = 3
_HASH_ENFORCED_FROM_REVISION = 3
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_JTI_LEN = 22
_BASE64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class _NkeyAlgorithm(jwt.algorithms.Algorithm):
    """pyjwt algorithm `Ed25519` over nkeys: signs with a KeyPair, verifies with a public key."""

    def prepare_key(self, key: Any) -> Any:
        if isinstance(key, (KeyPair, nacl.signing.VerifyKey)):
            return key
        if isinstance(key, str):
            return nkeys.verify_key(key)
        raise TypeError("Ed25519 keys are nkeys KeyPair objects or public key strings")

    def sign(self, msg: bytes, key: Any) -> bytes:
        if not isinstance(key, KeyPair):
            raise TypeError("signing needs a KeyPair")
        return key.sign(msg)

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        verifier = key if isinstance(key, nacl.signing.VerifyKey) else self.prepare_key(key)
        if isinstance(verifier, KeyPair):
            verifier = nkeys.verify_key(verifier.public_key)
        if len(sig) != 64:
            return False
        try:
            verifier.verify(msg, sig)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError("nkeys have no JWK form")

    @staticmethod
    def from_jwk(jwk: Any) -> Any:
        raise NotImplementedError("nkeys have no JWK form")


def _make_jws() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=[])
    jws.register_algorithm(ALGORITHM, _NkeyAlgorithm())
    return jws


# A private, configured-once constant: nothing registers into pyjwt's global instances.
_JWS = _make_jws()
_ALG = _JWS.get_algorithm_by_name(ALGORITHM)


def new_jti() -> str:
    """A random 22-character base62 token id, the shape of wascap's NUID `jti`."""
    # One urandom read, not 22: this runs for every outbound invocation. 62**22 < 2**131, and
    # the 17 random bytes (136 bits) reduced mod 62**22 are uniform enough for an id.
    n = int.from_bytes(secrets.token_bytes(17), "big") % (62 ** _JTI_LEN)
    out = []
    for _ in range(_JTI_LEN):
        n, digit = divmod(n, 62)
        out.append(_BASE62[digit])
    return "".join(out)


def encode_jwt(claims: dict[str, Any], signer: KeyPair) -> str:
    """A wascap token for `claims`, signed by `signer` (which should be the `iss` key).

    The claims JSON is compact and keeps the dict's key order, so callers build `claims` in
    wascap's serialisation order (§5.1) to get byte-identical tokens. pyjwt does the framing:
    with `sort_headers=False` and `typ` overridden, its header is exactly wascap's.
    """
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
    # pyjwt's key annotation lists only its built-in key types; our algorithm takes a KeyPair.
    return _JWS.encode(
        payload,
        signer,  # type: ignore[arg-type]
        algorithm=ALGORITHM,
        headers={"typ": "jwt"},
        sort_headers=False,
    )


@dataclass(frozen=True, slots=True)
class Token:
    """A structurally valid wascap JWT (wascap `validate_token` minus the signature/time flags).

    `header` and `claims` are plain dicts nobody mutates. Time and signature checks are separate
    methods because callers report them in different orders (§4.6 vs §5.5).
    """

    raw: str = field(repr=False)
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def issuer(self) -> str:
        return str(self.claims["iss"])

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    def signature_valid(self, key: nacl.signing.VerifyKey | None = None) -> bool:
        """True iff the signature verifies with `key` (default: decoded from `iss`).

        Raises TokenBadIssuerKey if `iss` is not a usable public nkey.
        """
        if key is None:
            try:
                key = nkeys.verify_key(self.issuer)
            except NkeyError as e:
                raise TokenBadIssuerKey(e.wire) from e
        return bool(_ALG.verify(self.signing_input, key, self.signature))

    def expired(self, now: float) -> bool:
        exp = self.claims.get("exp")
        return exp is not None and exp < now

    def not_yet_valid(self, now: float) -> bool:
        nbf = self.claims.get("nbf")
        return nbf is not None and now < nbf


def _check_claim_types(claims: dict[str, Any]) -> None:
    """The serde shape of wascap's `Claims<T>` envelope; raises TokenMalformed."""
    for name in ("jti", "iss", "sub"):
        if not isinstance(claims.get(name), str):
            raise TokenMalformed(f"claim `{name}` missing or not a string")
    for name, required in (("iat", True), ("exp", False), ("nbf", False)):
        value = claims.get(name)
        if value is None and not required:
            continue
        if type(value) is not int or value < 0:
            raise TokenMalformed(f"claim `{name}` missing or not an unsigned integer")
    revision = claims.get("wascap_revision")
    if revision is not None and (type(revision) is not int or revision < 0):
        raise TokenMalformed("claim `wascap_revision` is not an unsigned integer")
    if claims.get("wascap") is not None and not isinstance(claims["wascap"], dict):
        raise TokenMalformed("claim `wascap` is not an object")


def _b64url_segment(segment: str) -> bytes:
    """Strict unpadded base64url, as wascap's BASE64URL_NOPAD: alphabet and canonical bits."""
    if len(segment) % 4 == 1 or not _BASE64URL_SEGMENT.fullmatch(segment):
        raise TokenMalformed("invalid base64url segment")
    decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != segment:
        raise TokenMalformed("invalid base64url segment")
    return decoded


def parse_token(token: str) -> Token:
    """Decode and structurally validate a wascap JWT, without checking signature or times.

    Checks, in wascap's order: three base64url segments of JSON, header `alg` Ed25519 and `typ`
    jwt, the claim types, non-empty `iss` and `sub`. Raises a TokenError subclass naming the
    first failure. This is on the RPC hot path, so it splits and decodes itself: pyjwt 2.15's
    `decode_complete` checks the alphabet one character at a time in Python and took 53 µs of a
    1 KB invocation's validation against 15 µs here, with the same strictness.
    """
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenMalformed("a JWT has three segments")
    try:
        header = json.loads(_b64url_segment(segments[0]))
        claims = json.loads(_b64url_segment(segments[1]))
    except (ValueError, RecursionError) as e:
        raise TokenMalformed(str(e)) from e
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        raise TokenBadAlgorithm()
    if header.get("typ") != "jwt":
        raise TokenBadHeader()
    if not isinstance(claims, dict):
        raise TokenMalformed("claims are not a JSON object")
    _check_claim_types(claims)
    if not claims["iss"]:
        raise TokenMissingIssuer()
    if not claims["sub"]:
        raise TokenMissingSubject()
    signature = _b64url_segment(segments[2])
    signing_input = f"{segments[0]}.{segments[1]}".encode()
    return Token(token, header, claims, signing_input, signature)


def decode_jwt(token: str, *, now: float | None = None) -> dict[str, Any]:
    """The verified claims of a wascap JWT: signature by `iss`, then `exp` and `nbf`.

    Raises TokenError subclasses: structural ones from `parse_token`, then TokenExpired,
    TokenNotYetValid, TokenBadSignature (the order the host applies to actor claims, §5.5).
    The signature is checked by pyjwt itself with our registered `Ed25519` algorithm.
    """
    parsed = parse_token(token)
    try:
        nkeys.verify_key(parsed.issuer)
    except NkeyError as e:
        raise TokenBadIssuerKey(e.wire) from e
    current = time.time() if now is None else now
    if parsed.expired(current):
        raise TokenExpired()
    if parsed.not_yet_valid(current):
        raise TokenNotYetValid()
    try:
        _JWS.decode_complete(token, key=parsed.issuer, algorithms=[ALGORITHM])
    except jwt.InvalidSignatureError as e:
        raise TokenBadSignature() from e
    except jwt.PyJWTError as e:
        raise TokenMalformed(str(e)) from e
    return parsed.claims


def normalize_call_alias(alias: str) -> str:
    """wascap's call alias normalisation (§5.2): lower, trim, ASCII only, ` `/`-`/`.` → `_`."""
    normalized = "".join(c for c in alias.lower().strip() if c.isascii())
    for char in " -.":
        normalized = normalized.replace(char, "_")
    return normalized


# --- wasm custom sections (§5.3, §5.4) ------------------------------------------------------------

_WASM_MAGIC = b"\0asm"
_WASM_HEADER_LEN = 8
_JWT_SECTION_NAMES = frozenset({"jwt", "wasmcloud_jwt"})


def _read_leb_u32(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise NotWasm()
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _leb_u32(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sections(module: bytes) -> Iterator[tuple[int, int, int, str | None]]:
    """(id, content start, content end, custom-section name or None) of each top-level section.

    Only the section framing is checked, not the contents. Raises NotWasm if the bytes are not a
    wasm binary or a section runs past the end.
    """
    if len(module) < _WASM_HEADER_LEN or module[:4] != _WASM_MAGIC:
        raise NotWasm()
    pos = _WASM_HEADER_LEN
    while pos < len(module):
        section_id = module[pos]
        size, start = _read_leb_u32(module, pos + 1)
        end = start + size
        if end > len(module):
            raise NotWasm()
        name = None
        if section_id == 0:
            name_len, name_start = _read_leb_u32(module, start)
            if name_start + name_len > end:
                raise NotWasm()
            try:
                name = module[name_start : name_start + name_len].decode()
            except UnicodeDecodeError as e:
                raise NotWasm() from e
        yield section_id, start, end, name
        pos = end


def _stripped_chunks(module: bytes) -> Iterator[bytes | memoryview]:
    view = memoryview(module)
    yield view[:_WASM_HEADER_LEN]
    for section_id, start, end, name in _sections(module):
        if name not in _JWT_SECTION_NAMES:
            yield bytes([section_id]) + _leb_u32(end - start)
            yield view[start:end]


def strip_jwt_sections(module: bytes) -> bytes:
    """The module without its top-level `jwt`/`wasmcloud_jwt` custom sections (wascap ≥0.10).

    Every other section is re-emitted as id + minimal LEB128 size + original contents, after
    the original 8-byte header. Nested (component) modules are not descended into. Raises NotWasm.
    """
    return b"".join(_stripped_chunks(module))


def module_hash(module: bytes) -> str:
    """Upper-case hex SHA-256 of `strip_jwt_sections(module)` (the `wascap.hash` claim, §5.4)."""
    digest = hashlib.sha256()
    for chunk in _stripped_chunks(module):
        digest.update(chunk)
    return digest.hexdigest().upper()


def _jwt_section_payload(module: bytes) -> bytes | None:
    # wascap uses the first matching section; later ones are ignored (but still stripped).
    for _, start, end, name in _sections(module):
        if name in _JWT_SECTION_NAMES:
            name_len, name_start = _read_leb_u32(module, start)
            return module[name_start + name_len : end]
    return None


def _custom_section(name: str, payload: bytes) -> bytes:
    encoded_name = name.encode()
    contents = _leb_u32(len(encoded_name)) + encoded_name + payload
    return b"\x00" + _leb_u32(len(contents)) + contents


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
        """The claims record of `get.claims` and the lattice cache, keys and types of §5.7."""
        return {
            "call_alias": self.call_alias or "",
            "iss": self.issuer,
            "name": self.name or "",
            "caps": ",".join(self.caps),
            "rev": str(self.revision),
            "tags": ",".join(self.tags),
            "version": self.version,
            "sub": self.public_key,
        }

    def to_event_claims(self, now: float | None = None) -> dict[str, Any]:
        """The `claims` map of the actor_started event (§3.3).

        Absent tags/caps are sent as empty lists (OTP sends null); we do not keep that difference.
        """
        return {
            "call_alias": self.call_alias,
            "caps": list(self.caps),
            "issuer": self.issuer,
            "tags": list(self.tags),
            "name": self.name,
            "version": self.version,
            "revision": self.revision,
            "not_before_human": self.not_before_human(now),
            "expires_human": self.expires_human(now),
        }


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
        claims = json.loads(_b64url_segment(segments[1]))
    except (TokenMalformed, ValueError, RecursionError) as e:
        raise ClaimsExtractFailed() from e
    if not isinstance(claims, dict):
        raise ClaimsExtractFailed()
    try:
        _check_claim_types(claims)
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
    payload = _jwt_section_payload(module)
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
    return stripped + _custom_section("jwt", token.encode())
