"""nkeys: the NATS/wasmCloud Ed25519 key encoding (protocol.md §7).

A public key is `base32(prefix ‖ key32 ‖ crc16_le)` (56 chars); a seed is
`base32(b1 ‖ b2 ‖ seed32 ‖ crc16_le)` (58 chars, starting with `S`). We implement the codec
ourselves because PyPI `nkeys` rejects module (`M`) and service (`V`) keys (§7.4).

Every function here is pure and thread-safe. Malformed keys raise `NkeyError`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from hostcore.errors import NkeyError

__all__ = [
    "KeyKind",
    "KeyPair",
    "decode_public_key",
    "encode_public_key",
    "encode_seed",
    "is_valid_public_key",
    "verify",
    "verify_key",
]


class KeyKind(enum.StrEnum):
    """The role a key plays; the value is the first character of its public key."""

    ACCOUNT = "A"
    CLUSTER = "C"
    MODULE = "M"
    SERVER = "N"
    OPERATOR = "O"
    USER = "U"
    SERVICE = "V"
    CURVE = "X"


# §7.1: the first decoded byte of a public key; seeds and private keys have their own.
_PREFIX_BYTE: dict[KeyKind, int] = {
    KeyKind.ACCOUNT: 0 << 3,
    KeyKind.CLUSTER: 2 << 3,
    KeyKind.MODULE: 12 << 3,
    KeyKind.SERVER: 13 << 3,
    KeyKind.OPERATOR: 14 << 3,
    KeyKind.USER: 20 << 3,
    KeyKind.SERVICE: 21 << 3,
    KeyKind.CURVE: 23 << 3,
}
_KIND_BY_PREFIX: dict[int, KeyKind] = {byte: kind for kind, byte in _PREFIX_BYTE.items()}
_SEED_PREFIX_BYTE = 18 << 3
_PUBLIC_KEY_LEN = 56
_SEED_LEN = 58
_RAW_KEY_LEN = 32


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM: poly 0x1021, init 0, no reflection, no final xor (§7.2)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _b32decode_checked(text: str, what: str) -> bytes:
    """Decode unpadded base32 and check and remove the trailing little-endian CRC16."""
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as e:
        raise NkeyError(f"Invalid {what}: not base32") from e
    if len(raw) < 3:
        raise NkeyError(f"Invalid {what}: too short")
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if _crc16(body) != crc:
        raise NkeyError(f"Invalid {what}: checksum mismatch")
    return body


def _with_crc(body: bytes) -> bytes:
    return body + _crc16(body).to_bytes(2, "little")


def encode_public_key(kind: KeyKind, raw: bytes) -> str:
    """Encode a 32-byte Ed25519 (or X25519 for CURVE) public key as a 56-char nkey."""
    if len(raw) != _RAW_KEY_LEN:
        raise NkeyError(f"Invalid public key: expected {_RAW_KEY_LEN} bytes, got {len(raw)}")
    return _b32encode(_with_crc(bytes([_PREFIX_BYTE[kind]]) + raw))


def encode_seed(kind: KeyKind, raw_seed: bytes) -> str:
    """Encode a 32-byte raw seed as a 58-char `S…` seed of the given kind (§7.3)."""
    if len(raw_seed) != _RAW_KEY_LEN:
        raise NkeyError(f"Invalid seed: expected {_RAW_KEY_LEN} bytes, got {len(raw_seed)}")
    prefix = _PREFIX_BYTE[kind]
    b1 = _SEED_PREFIX_BYTE | (prefix >> 5)
    b2 = (prefix & 0x1F) << 3
    return _b32encode(_with_crc(bytes([b1, b2]) + raw_seed))


def _decode_seed(seed: str) -> tuple[KeyKind, bytes]:
    if not isinstance(seed, str) or len(seed) != _SEED_LEN:
        raise NkeyError(f"Invalid seed: expected {_SEED_LEN} characters")
    body = _b32decode_checked(seed, "seed")
    b1, b2 = body[0], body[1]
    if b1 & 0xF8 != _SEED_PREFIX_BYTE:
        raise NkeyError("Invalid seed: missing seed prefix")
    kind = _KIND_BY_PREFIX.get(((b1 & 0x07) << 5) | ((b2 & 0xF8) >> 3))
    if kind is None:
        raise NkeyError("Invalid seed: unknown key type prefix")
    return kind, body[2:]


def decode_public_key(public_key: str) -> tuple[KeyKind, bytes]:
    """Return (kind, raw 32-byte key) of a 56-char public nkey. Raises NkeyError if malformed."""
    if not isinstance(public_key, str) or len(public_key) != _PUBLIC_KEY_LEN:
        raise NkeyError(f"Invalid public key: expected {_PUBLIC_KEY_LEN} characters")
    body = _b32decode_checked(public_key, "public key")
    kind = _KIND_BY_PREFIX.get(body[0])
    if kind is None:
        raise NkeyError("Invalid public key: unknown prefix byte")
    return kind, body[1:]


def is_valid_public_key(public_key: str, kind: KeyKind | None = None) -> bool:
    """True if `public_key` is a well-formed public nkey (of `kind`, when given). Never raises."""
    try:
        decoded_kind, _ = decode_public_key(public_key)
    except NkeyError:
        return False
    return kind is None or decoded_kind is kind


def verify_key(public_key: str) -> nacl.signing.VerifyKey:
    """An Ed25519 verifier for a signing public key. Raises NkeyError for malformed/curve keys.

    Callers on hot paths may keep the result; it is immutable and thread-safe.
    """
    kind, raw = decode_public_key(public_key)
    if kind is KeyKind.CURVE:
        raise NkeyError("Invalid public key: curve keys cannot verify signatures")
    return nacl.signing.VerifyKey(raw)


def verify(public_key: str, data: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `data` by `public_key`.

    A wrong or malformed signature gives False; a malformed key raises NkeyError.
    """
    key = verify_key(public_key)
    if len(signature) != nacl.bindings.crypto_sign_BYTES:
        return False
    try:
        key.verify(data, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A seed with its public key. Immutable, hashable, picklable, safe to share across threads.

    Construct with `generate` or `from_seed`; direct construction checks that the three fields
    agree and raises NkeyError otherwise. The Ed25519 signing key is derived once, at
    construction, and kept out of repr, equality and pickles (a pickle carries only the seed).
    """

    seed: str = field(repr=False)
    public_key: str
    kind: KeyKind
    _signing_key: nacl.signing.SigningKey | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        kind, raw_seed = _decode_seed(self.seed)
        if kind is KeyKind.CURVE:
            signing_key = None
            raw_public = nacl.bindings.crypto_scalarmult_base(raw_seed)
        else:
            signing_key = nacl.signing.SigningKey(raw_seed)
            raw_public = bytes(signing_key.verify_key)
        if kind is not self.kind or encode_public_key(kind, raw_public) != self.public_key:
            raise NkeyError("Invalid key pair: public key does not match seed")
        object.__setattr__(self, "_signing_key", signing_key)

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        """The key pair of an encoded `S…` seed. Raises NkeyError if the seed is malformed."""
        kind, raw_seed = _decode_seed(seed)
        if kind is KeyKind.CURVE:
            raw_public = nacl.bindings.crypto_scalarmult_base(raw_seed)
        else:
            raw_public = bytes(nacl.signing.SigningKey(raw_seed).verify_key)
        return cls(seed=seed, public_key=encode_public_key(kind, raw_public), kind=kind)

    @classmethod
    def generate(cls, kind: KeyKind) -> KeyPair:
        """A fresh key pair of `kind` from the OS CSPRNG."""
        return cls.from_seed(encode_seed(kind, secrets.token_bytes(_RAW_KEY_LEN)))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`. Raises NkeyError for curve keys."""
        if self._signing_key is None:
            raise NkeyError("Invalid key pair: curve keys cannot sign")
        return self._signing_key.sign(data).signature

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Same as module-level `verify` with this pair's public key."""
        return verify(self.public_key, data, signature)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Only the seed travels; the receiver re-derives (and re-checks) everything else.
        return (KeyPair.from_seed, (self.seed,))
