"""NATS decentralised-auth JWTs (operator, account, user; JWT v2) and `.creds` files.

For operators of a lattice that runs nats-server in operator mode without the `nsc` tool, and
for the tests that run such a server. Tokens are signed with hostcore's own nkeys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from hostcore.native.nkeys import KeyKind, KeyPair

__all__ = ["account_jwt", "format_creds", "operator_jwt", "user_jwt"]

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
# Unlimited, JetStream on (the lattice cache and the chunking store need it).
_ACCOUNT_LIMITS = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                   "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _encode(issuer: KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": issuer.public_key, "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}
    # jwt v2: the id is the base32 SHA-512/256 of the claims with an empty id.
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def _check(pair: KeyPair, kind: KeyKind, what: str) -> None:
    if pair.kind is not kind:
        raise ValueError(f"{what} must be a {kind.name.lower()} key, got {pair.kind.name.lower()}")


def operator_jwt(operator: KeyPair, name: str = "hostcore", system_account: str = "") -> str:
    """The self-signed operator token (`operator:` in the server config)."""
    _check(operator, KeyKind.OPERATOR, "operator")
    nats: dict[str, Any] = {"type": "operator"}
    if system_account:
        nats["system_account"] = system_account
    return _encode(operator, operator.public_key, name, nats)


def account_jwt(operator: KeyPair, account: str, name: str = "lattice", *, jetstream: bool = True) -> str:
    """An account token signed by the operator: unlimited, with JetStream unless told otherwise
    (the system account must not have it)."""
    _check(operator, KeyKind.OPERATOR, "operator")
    limits = {k: v for k, v in _ACCOUNT_LIMITS.items()
              if jetstream or k not in ("mem_storage", "disk_storage", "streams", "consumer")}
    return _encode(operator, account, name, {"type": "account", "limits": limits,
                                             "default_permissions": {"pub": {}, "sub": {}}})


def user_jwt(account: KeyPair, user: str, name: str = "host") -> str:
    """A user token signed by its account, with no permission limits."""
    _check(account, KeyKind.ACCOUNT, "account")
    return _encode(account, user, name, {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})


def format_creds(jwt: str, seed: str) -> str:
    """A standard NATS `.creds` file: the user JWT and the user's seed."""
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")
