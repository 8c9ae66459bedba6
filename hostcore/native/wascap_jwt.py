"""wascap JWTs (protocol.md §5.1): encoding with wascap's exact bytes (pyjwt does the framing,
hostcore/native/wascap_jws.py), and a strict, fast token parser with its Ed25519 check. Shared by
actor claims, invocations (§4.5) and provider archives. Pure and thread-safe.
"""

from __future__ import annotations

import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.signing

from hostcore.errors import (
    NkeyError,
    TokenBadAlgorithm,
    TokenBadHeader,
    TokenBadIssuerKey,
    TokenBadSignature,
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
    "HEADER_SEGMENT",
    "Token",
    "WASCAP_REVISION",
    "b64url_segment",
    "check_claim_types",
    "decode_jwt",
    "encode_jwt",
    "new_jti",
    "parse_token",
    "verify_signature",
]

ALGORITHM = "Ed25519"
# §5.1: what every wascap token starts with; `encode_jwt` must reproduce it byte for byte.
HEADER_SEGMENT = "eyJ0eXAiOiJqd3QiLCJhbGciOiJFZDI1NTE5In0"
_HEADER = {"typ": "jwt", "alg": ALGORITHM}  # HEADER_SEGMENT decoded
# We sign as wascap ≥0.10.1 does, so the module hash of our own tokens is always enforced (§5.4).
WASCAP_REVISION = 3
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_JTI_LEN = 22
_BASE64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def verify_signature(msg: bytes, key: nacl.signing.VerifyKey, sig: bytes) -> bool:
    """True iff `sig` is `key`'s Ed25519 signature of `msg`."""
    if len(sig) != 64:
        return False
    try:
        key.verify(msg, sig)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def new_jti(entropy: bytes = b"") -> str:
    """A random 22-character base62 token id, the shape of wascap's NUID `jti`. `entropy`: random
    bytes from the OS CSPRNG to use first (a caller that reads it anyway saves a read)."""
    # This runs for every outbound invocation: one urandom read mapped by a table in C. Bytes
    # >= 248 are dropped so each kept byte picks one of the 62 digits uniformly (248 = 4 * 62);
    # 32 bytes leave fewer than 22 about once in 10**8 calls, and then another read tops up.
    out = entropy.translate(_BASE62_OF_BYTE, _BYTES_OVER_BASE62)
    while len(out) < _JTI_LEN:
        out += secrets.token_bytes(32).translate(_BASE62_OF_BYTE, _BYTES_OVER_BASE62)
    return out[:_JTI_LEN].decode()


_BASE62_OF_BYTE = bytes(ord(_BASE62[b % 62]) for b in range(256))
_BYTES_OVER_BASE62 = bytes(range(248, 256))


def encode_jwt(claims: dict[str, Any], signer: KeyPair) -> str:
    """A wascap token for `claims`, signed by `signer` (which should be the `iss` key).

    The claims JSON is compact and keeps the dict's key order, so callers build `claims` in
    wascap's serialisation order (§5.1) to get byte-identical tokens. pyjwt does the framing:
    with `sort_headers=False` and `typ` overridden, its header is exactly wascap's.
    """
    from hostcore.native.wascap_jws import JWS  # pyjwt: see that module for why not at the top

    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
    # pyjwt's key annotation lists only its built-in key types; our algorithm takes a KeyPair.
    return JWS.encode(
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
        return verify_signature(self.signing_input, key, self.signature)

    def expired(self, now: float) -> bool:
        exp = self.claims.get("exp")
        return exp is not None and exp < now

    def not_yet_valid(self, now: float) -> bool:
        nbf = self.claims.get("nbf")
        return nbf is not None and now < nbf


def check_claim_types(claims: dict[str, Any]) -> None:
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


def b64url_segment(segment: str) -> bytes:
    """Strict unpadded base64url, as wascap's BASE64URL_NOPAD: alphabet and canonical bits."""
    tail = len(segment) % 4
    if tail == 1 or not _BASE64URL_SEGMENT.fullmatch(segment):
        raise TokenMalformed("invalid base64url segment")
    # Canonical: the bits of the last character beyond the decoded bytes are zero (what
    # re-encoding and comparing checked, without the second pass).
    if tail and _B64URL_VALUE[segment[-1]] & _B64URL_SPARE_BITS[tail]:
        raise TokenMalformed("invalid base64url segment")
    return binascii.a2b_base64(segment.encode("ascii").translate(_B64URL_TO_STD) + b"=" * (-tail % 4))


_B64URL_VALUE = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
_B64URL_SPARE_BITS = {2: 0x0F, 3: 0x03}  # 2 chars carry 1 byte (4 spare bits), 3 chars 2 bytes (2)
_B64URL_TO_STD = bytes.maketrans(b"-_", b"+/")


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
        # wascap's own header (nearly every token) is a known constant: no need to decode it.
        header = dict(_HEADER) if segments[0] == HEADER_SEGMENT else json.loads(b64url_segment(segments[0]))
        claims = json.loads(b64url_segment(segments[1]))
    except (ValueError, RecursionError) as e:
        raise TokenMalformed(str(e)) from e
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        raise TokenBadAlgorithm()
    if header.get("typ") != "jwt":
        raise TokenBadHeader()
    if not isinstance(claims, dict):
        raise TokenMalformed("claims are not a JSON object")
    check_claim_types(claims)
    if not claims["iss"]:
        raise TokenMissingIssuer()
    if not claims["sub"]:
        raise TokenMissingSubject()
    signature = b64url_segment(segments[2])
    signing_input = f"{segments[0]}.{segments[1]}".encode()
    return Token(token, header, claims, signing_input, signature)


def decode_jwt(token: str, *, now: float | None = None) -> dict[str, Any]:
    """The verified claims of a wascap JWT: signature by `iss`, then `exp` and `nbf`.

    Raises TokenError subclasses: structural ones from `parse_token`, then TokenExpired,
    TokenNotYetValid, TokenBadSignature (the order the host applies to actor claims, §5.5).
    The signature is checked by pyjwt itself with our registered `Ed25519` algorithm.
    """
    from hostcore.native.wascap_jws import JWS, DecodeFailed, SignatureInvalid  # see encode_jwt

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
        JWS.decode_complete(token, key=parsed.issuer, algorithms=[ALGORITHM])
    except SignatureInvalid as e:
        raise TokenBadSignature() from e
    except DecodeFailed as e:
        raise TokenMalformed(str(e)) from e
    return parsed.claims


