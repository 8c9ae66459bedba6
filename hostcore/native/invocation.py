"""Actor RPC payloads: Invocation and InvocationResponse, their JWT and anti-forgery (§4.2–4.8).

Both payloads are msgpack maps with string keys. We emit `msg` as bin and accept bin or str
(§4.2). Everything here is pure; `InvocationValidator` holds only an idempotent key cache.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Self

import msgpack
import nacl.signing

from hostcore.errors import (
    InvocationBadHostId,
    InvocationBadSignature,
    InvocationDecodeFailed,
    InvocationExpired,
    InvocationHashMismatch,
    InvocationMsgpackFailed,
    InvocationNotYetValid,
    InvocationNoWascap,
    InvocationOriginMismatch,
    InvocationTargetMismatch,
    InvocationTokenInvalid,
    InvocationUntrustedIssuer,
    NkeyError,
    TokenBadIssuerKey,
    TokenError,
    TokenMalformed,
)
from hostcore.native import nkeys
from hostcore.native.wascap_jwt import HEADER_SEGMENT, new_jti, parse_token
from hostcore.native.nkeys import KeyPair

__all__ = [
    "Invocation",
    "InvocationResponse",
    "InvocationValidator",
    "WasmCloudEntity",
    "invocation_hash",
    "new_invocation",
    "success_wire",
    "validate_antiforgery",
]

_HOST_ID_LEN = 56
_HOST_ID_PREFIXES = ("N", "C")
_JWT_PREFIX = HEADER_SEGMENT.encode() + b"."


def _unpack_map(data: bytes) -> dict[str, Any]:
    """msgpack → dict. Raises InvocationMsgpackFailed for anything but one msgpack map."""
    try:
        # surrogateescape keeps non-UTF-8 `str` payloads (Elixir packs binaries as str) lossless.
        value = msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")
    except (ValueError, msgpack.UnpackException, TypeError) as e:
        raise InvocationMsgpackFailed() from e
    if not isinstance(value, dict):
        raise InvocationMsgpackFailed()
    return value


def _bytes_field(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise InvocationDecodeFailed()


def _str_field(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str):
        raise InvocationDecodeFailed()
    return value


def _optional_length(fields: dict[str, Any], key: str) -> int | None:
    value = fields.get(key)
    if value is not None and (type(value) is not int or value < 0):
        raise InvocationDecodeFailed()
    return value


@dataclass(frozen=True, slots=True)
class WasmCloudEntity:
    """An RPC endpoint: actors use only `public_key` (M…); providers add contract and link."""

    public_key: str
    contract_id: str = ""
    link_name: str = ""

    @property
    def is_actor(self) -> bool:
        """The §4.4 URL rule: an M… key is an actor, whatever the other fields say."""
        return self.public_key.upper().startswith("M")

    def url(self) -> str:
        """`wasmbus://{pk}` for actors, `wasmbus://{contract}/{link}/{pk}` for providers (§4.4)."""
        if self.is_actor:
            return f"wasmbus://{self.public_key}"
        contract = self.contract_id.replace(":", "/").replace(" ", "_").lower()
        link = self.link_name.replace(" ", "_").lower()
        return f"wasmbus://{contract}/{link}/{self.public_key}"

    def _to_map(self) -> dict[str, str]:
        return {
            "public_key": self.public_key,
            "contract_id": self.contract_id,
            "link_name": self.link_name,
        }

    @classmethod
    def _from_map(cls, value: Any) -> Self:
        if not isinstance(value, dict) or not isinstance(value.get("public_key"), str):
            raise InvocationDecodeFailed()
        # OTP-era senders may send null for an actor's contract/link (§4.7 step 5).
        contract_id, link_name = value.get("contract_id") or "", value.get("link_name") or ""
        if not isinstance(contract_id, str) or not isinstance(link_name, str):
            raise InvocationDecodeFailed()
        # Interned: the same few entities arrive on every call, and a frozen dataclass costs
        # three object.__setattr__ to build (equal values, so nothing observable changes).
        key = (value["public_key"], contract_id, link_name)
        entity = _ENTITIES.get(key)
        if entity is None or type(entity) is not cls:
            if len(_ENTITIES) >= _ENTITY_CACHE_SIZE:
                _ENTITIES.clear()
            entity = _ENTITIES[key] = cls(*key)
        return entity


_ENTITY_CACHE_SIZE = 4096
_ENTITIES: dict[tuple[str, str, str], WasmCloudEntity] = {}  # GIL-atomic operations only


def invocation_hash(origin_url: str, target_url: str, operation: str, msg: bytes) -> str:
    """Upper hex SHA-256 of origin_url ‖ target_url ‖ operation ‖ msg (§4.4)."""
    digest = hashlib.sha256(origin_url.encode())
    digest.update(target_url.encode())
    digest.update(operation.encode())
    digest.update(msg)
    return digest.hexdigest().upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """An RPC request (§4.3). `host_id` is the signer's public key (QUIRK: the cluster key)."""

    origin: WasmCloudEntity
    target: WasmCloudEntity
    operation: str
    msg: bytes
    id: str
    encoded_claims: str
    host_id: str
    content_length: int | None = None

    def origin_url(self) -> str:
        return self.origin.url()

    def target_url(self) -> str:
        """The target's URL plus `/{operation}`, as signed into the JWT (§4.4)."""
        return f"{self.target.url()}/{self.operation}"

    def hash(self) -> str:
        return invocation_hash(self.origin_url(), self.target_url(), self.operation, self.msg)

    def to_wire(self) -> bytes:
        """msgpack map in Rust declaration order; `content_length` omitted when None (TV-5)."""
        fields: dict[str, Any] = {
            "origin": self.origin._to_map(),
            "target": self.target._to_map(),
            "operation": self.operation,
            "msg": self.msg,
            "id": self.id,
            "encoded_claims": self.encoded_claims,
            "host_id": self.host_id,
        }
        if self.content_length is not None:
            fields["content_length"] = self.content_length
        return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode an Invocation. Unknown keys (e.g. `traceContext`) are ignored.

        Raises InvocationMsgpackFailed if `data` is not one msgpack map, InvocationDecodeFailed
        if a required field is missing or mistyped (everything but `content_length` is required).
        """
        fields = _unpack_map(data)
        if "msg" not in fields:
            raise InvocationDecodeFailed()
        return cls(
            origin=WasmCloudEntity._from_map(fields.get("origin")),
            target=WasmCloudEntity._from_map(fields.get("target")),
            operation=_str_field(fields, "operation"),
            msg=_bytes_field(fields["msg"]),
            id=_str_field(fields, "id"),
            encoded_claims=_str_field(fields, "encoded_claims"),
            host_id=_str_field(fields, "host_id"),
            content_length=_optional_length(fields, "content_length"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationResponse:
    """An RPC reply (§4.8): success carries `msg`; failure carries `error` and an empty `msg`."""

    invocation_id: str
    msg: bytes = b""
    error: str | None = None
    content_length: int | None = None
    instance_id: str = ""

    @classmethod
    def success(
        cls, invocation_id: str, msg: bytes, instance_id: str, content_length: int | None = None
    ) -> Self:
        """A success reply; `content_length` defaults to `len(msg)` (set it when chunked)."""
        length = len(msg) if content_length is None else content_length
        return cls(
            invocation_id=invocation_id, msg=msg, content_length=length, instance_id=instance_id
        )

    @classmethod
    def failure(cls, invocation_id: str, error: str, instance_id: str) -> Self:
        return cls(invocation_id=invocation_id, error=error, instance_id=instance_id)

    def to_wire(self) -> bytes:
        """Success `{msg, invocation_id, instance_id, content_length}`; failure
        `{msg: b"", invocation_id, error, instance_id}` (§4.8)."""
        fields: dict[str, Any]
        if self.error is None:
            fields = {
                "msg": self.msg,
                "invocation_id": self.invocation_id,
                "instance_id": self.instance_id,
            }
            if self.content_length is not None:
                fields["content_length"] = self.content_length
        else:
            fields = {
                "msg": b"",
                "invocation_id": self.invocation_id,
                "error": self.error,
                "instance_id": self.instance_id,
            }
        return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode a reply from OTP, Rust or us; missing `msg`/ids default to empty (serde defaults).

        Raises InvocationMsgpackFailed / InvocationDecodeFailed like `Invocation.from_wire`.
        """
        fields = _unpack_map(data)
        error = fields.get("error")
        if error is not None and not isinstance(error, str):
            raise InvocationDecodeFailed()
        invocation_id, instance_id = fields.get("invocation_id", ""), fields.get("instance_id", "")
        if not isinstance(invocation_id, str) or not isinstance(instance_id, str):
            raise InvocationDecodeFailed()
        return cls(
            invocation_id=invocation_id,
            msg=_bytes_field(fields.get("msg", b"")),
            error=error,
            content_length=_optional_length(fields, "content_length"),
            instance_id=instance_id,
        )


def success_wire(invocation_id: str, msg: bytes, instance_id: str) -> bytes:
    """`InvocationResponse.success(invocation_id, msg, instance_id).to_wire()`, without the
    intermediate object: the reply of every call served."""
    return msgpack.packb({"msg": msg, "invocation_id": invocation_id, "instance_id": instance_id,  # type: ignore[no-any-return]
                          "content_length": len(msg)}, use_bin_type=True)


def new_invocation(
    signer: KeyPair,
    origin: WasmCloudEntity,
    target: WasmCloudEntity,
    operation: str,
    msg: bytes,
    *,
    invocation_id: str | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> Invocation:
    """A signed Invocation (§4.5): JWT by `signer`, `host_id` = its public key, full length.

    QUIRK: OTP signs with the cluster seed, so `host_id` is a C… key, not the host's N… key.
    `invocation_id` defaults to a random UUID v4; `now`/`jti` exist for reproducible tests (TV-5).
    Chunking (§4.9) is the caller's job: pass the already-emptied `msg` only after hashing.
    """
    # One CSPRNG read for the id and the jti; both are plain ASCII, so their JSON is just quoted.
    inv_id, id_json, jti_json = _fresh_ids()
    if invocation_id is not None:
        inv_id, id_json = invocation_id, _json_str(invocation_id)
    if jti is not None:
        jti_json = _json_str(jti)
    route = _route(origin, target, operation)
    digest = route.digest.copy()
    digest.update(msg)
    # The claims JSON as json.dumps(compact, ensure_ascii=False) writes the wascap claims map
    # {jti, iat, iss, sub, wascap: {target_url, origin_url, hash}} (golden-tested); the URLs'
    # JSON comes from the route cache; an nkey (base32) needs no escaping either.
    payload = b'{"jti":%s,"iat":%d,"iss":"%s","sub":%s,%s%s"}}' % (
        jti_json, int(time.time() if now is None else now), signer.public_key.encode(), id_json,
        route.wascap_json, digest.hexdigest().upper().encode())
    signing_input = _JWT_PREFIX + _b64url(payload)
    return Invocation(
        origin=origin,
        target=target,
        operation=operation,
        msg=msg,
        id=inv_id,
        encoded_claims=(signing_input + b"." + _b64url(signer.sign(signing_input))).decode(),
        host_id=signer.public_key,
        content_length=len(msg),
    )


def _fresh_ids() -> tuple[str, bytes, bytes]:
    """(a UUID v4 as str(uuid.uuid4()) writes it, its JSON, a fresh jti's JSON)."""
    raw = bytearray(os.urandom(48))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw[:16].hex()
    inv_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return inv_id, b'"%s"' % inv_id.encode(), b'"%s"' % new_jti(bytes(raw[16:])).encode()


_B64_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_B64_TO_URLSAFE).rstrip(b"=")


def _json_str(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class _Route:
    """What every invocation from `origin` to `target`'s `operation` shares (§4.4): the URLs, the
    hash state after them, and the JSON of the wascap block up to its hash."""

    origin_url: str
    target_url: str
    digest: Any  # hashlib sha256, fed origin_url ‖ target_url ‖ operation; copy() before use
    wascap_json: bytes


_ROUTE_CACHE_SIZE = 4096
_ROUTES: dict[tuple[WasmCloudEntity, WasmCloudEntity, str], _Route] = {}  # GIL-atomic operations only


def _route(origin: WasmCloudEntity, target: WasmCloudEntity, operation: str) -> _Route:
    key = (origin, target, operation)
    route = _ROUTES.get(key)
    if route is None:
        origin_url, target_url = origin.url(), f"{target.url()}/{operation}"
        digest = hashlib.sha256(origin_url.encode())
        digest.update(target_url.encode())
        digest.update(operation.encode())
        wascap = b'"wascap":{"target_url":%s,"origin_url":%s,"hash":"' % (_json_str(target_url), _json_str(origin_url))
        if len(_ROUTES) >= _ROUTE_CACHE_SIZE:
            _ROUTES.clear()
        route = _ROUTES[key] = _Route(origin_url, target_url, digest, wascap)
    return route


def _plausible_host_id(host_id: str) -> bool:
    # QUIRK: OTP tests `!starts_with('N') && len != 56`, which lets any 56-char id (and any N…
    # id) through. The intent is "a host or cluster public key": we require 56 chars and N or C.
    return len(host_id) == _HOST_ID_LEN and host_id.startswith(_HOST_ID_PREFIXES)


class InvocationValidator:
    """Anti-forgery checks (§4.6 steps 2–7) against a fixed set of trusted cluster issuers.

    Owns a cache of Ed25519 verify keys for the trusted issuers only (bounded by their number).
    Cache writes are idempotent, so one validator may be shared by threads. `validate` raises the
    first failing check's InvocationError; it never mutates the invocation.
    """

    __slots__ = ("_issuers", "_keys")

    def __init__(self, cluster_issuers: Collection[str]) -> None:
        self._issuers = frozenset(cluster_issuers)
        self._keys: dict[str, nacl.signing.VerifyKey] = {}

    def _verify_key(self, issuer: str) -> nacl.signing.VerifyKey:
        key = self._keys.get(issuer)
        if key is None:
            try:
                key = nkeys.verify_key(issuer)
            except NkeyError as e:
                raise InvocationTokenInvalid(TokenBadIssuerKey(e.wire).wire) from e
            if issuer in self._issuers:
                self._keys[issuer] = key
        return key

    def validate(self, inv: Invocation, *, now: float | None = None) -> None:
        """Raise the InvocationError of the first failed check, in OTP's order:
        token structure → expired → signature → not-before → wascap block → hash (non-empty
        `msg` only) → host id → trusted issuer → target URL → origin URL.
        """
        try:
            token = parse_token(inv.encoded_claims)
            meta = token.claims.get("wascap")
            if meta is not None and not all(
                isinstance(meta.get(k), str) for k in ("target_url", "origin_url", "hash")
            ):
                raise TokenMalformed("invocation claims need target_url, origin_url and hash")
        except TokenError as e:
            raise InvocationTokenInvalid(e.wire) from e
        key = self._verify_key(token.issuer)
        current = time.time() if now is None else now
        if token.expired(current):
            raise InvocationExpired()
        if not token.signature_valid(key):
            raise InvocationBadSignature()
        if token.not_yet_valid(current):
            raise InvocationNotYetValid()
        if meta is None:
            raise InvocationNoWascap()
        route = _route(inv.origin, inv.target, inv.operation)
        origin_url, target_url = route.origin_url, route.target_url
        if inv.msg:  # chunked invocations carry an empty msg; their hash cannot be checked here
            digest = route.digest.copy()
            digest.update(inv.msg)
            computed = digest.hexdigest().upper()
            if meta["hash"] != computed:
                raise InvocationHashMismatch(meta["hash"], computed)
        if not _plausible_host_id(inv.host_id):
            raise InvocationBadHostId(inv.host_id)
        if token.issuer not in self._issuers:
            raise InvocationUntrustedIssuer()
        if meta["target_url"] != target_url:
            raise InvocationTargetMismatch()
        if meta["origin_url"] != origin_url:
            raise InvocationOriginMismatch()


def validate_antiforgery(
    inv: Invocation, cluster_issuers: Collection[str], *, now: float | None = None
) -> None:
    """One-shot `InvocationValidator(cluster_issuers).validate(inv)`; hot paths keep a validator."""
    InvocationValidator(cluster_issuers).validate(inv, now=now)
