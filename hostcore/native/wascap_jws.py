"""pyjwt with wascap's `Ed25519` algorithm (nkeys) registered under wascap's name: the framing
behind `wascap_jwt.encode_jwt` and `decode_jwt`.

A module of its own because pyjwt imports the `cryptography` package (3.5 MB of the instance
template's memory and ~80 ms of its start, measured), which a process that only parses tokens and
checks their signatures (an actor instance, with every invocation it serves) never needs. `wascap_jwt` imports this module when it first encodes or
decodes a token.
"""

from __future__ import annotations

from typing import Any

import jwt
import jwt.algorithms
import nacl.signing

from hostcore.native import nkeys
from hostcore.native.nkeys import KeyPair
from hostcore.native.wascap_jwt import ALGORITHM, verify_signature

__all__ = ["JWS", "DecodeFailed", "SignatureInvalid"]

SignatureInvalid = jwt.InvalidSignatureError
DecodeFailed = jwt.PyJWTError


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
        return verify_signature(msg, verifier, sig)

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


# A private, configured-once instance: nothing registers into pyjwt's global ones.
JWS = _make_jws()
