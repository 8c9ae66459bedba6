"""Thespian's network exposure: bind address and frame authentication.

Thespian 4.0.1 has no setting for either. `TCPTransport` binds
`templateAddr.addressDetails.bindArgs`, and `IPActorAddress.bindname` is ('', port) for every
external address, so every process of a tree (admin, logger, each actor) listens on all
interfaces; THESPIAN_BASE_IPADDR only changes the address it advertises. Its transport then
unpickles whatever arrives (`ReceiveBuffer(serializer.loads)`, the module-global `serializer`),
before any capability or convention check could run: anyone who can connect can run code.

`secure_thespian` adapts both, in the launcher and before the ActorSystem forks, so every
process of the tree inherits it (Thespian forks, it does not spawn):

- bind: `IPActorAddress.bindArgs` binds the configured address instead of all interfaces, and
  THESPIAN_BASE_IPADDR advertises that same address (peers must be able to reach what we
  advertise);
- authentication: the transport's serializer prefixes each pickled frame with an HMAC-SHA256 of
  a secret and refuses, before unpickling, any frame whose tag does not match. The secret is
  HOSTCORE_CONVENTION_SECRET (shared by host and workers) or, for a host that leads no
  multi-machine convention, a random one nobody outside its process tree knows. Frames are
  authenticated, not encrypted, and a recorded frame could be replayed: across machines, run the
  convention on a private network.

Both are checked against the one Thespian version they were verified with; any other version is
refused (`ThespianUnverified`) rather than silently listening on every interface.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import importlib.metadata
import logging
import os
import pickle
import secrets
from typing import Any

from hostcore.config import ThespianNetwork
from hostcore.errors import HostcoreError

__all__ = ["VERIFIED_THESPIAN", "FrameAuthFailed", "HmacPickle", "ThespianUnverified", "check_version", "secure_thespian"]

log = logging.getLogger(__name__)

VERIFIED_THESPIAN = "4.0.1"
_TAG_BYTES = hashlib.sha256().digest_size


class ThespianUnverified(HostcoreError):
    """The installed Thespian is not the version the bind / authentication adaptation was verified on."""


class FrameAuthFailed(ValueError):
    """A Thespian frame without a valid tag: refused before unpickling."""


class HmacPickle:
    """A drop-in for the `pickle` module as Thespian's TCP serializer: `dumps` prefixes an
    HMAC-SHA256 tag, `loads` checks it before unpickling.

    Thespian's two fixed acknowledgements ("ACK", "ACK+DATAERR") are pre-serialized with plain
    pickle at import; exactly those byte strings are accepted untagged (they carry no data).
    """

    def __init__(self, secret: bytes, acks: frozenset[bytes]) -> None:
        self._key = hashlib.sha256(b"hostcore-thespian-frame\0" + secret).digest()
        self._acks = acks

    def _tag(self, payload: bytes) -> bytes:
        return hmac.digest(self._key, payload, hashlib.sha256)  # one-shot: no HMAC object per frame

    def dumps(self, obj: Any) -> bytes:
        payload = pickle.dumps(obj)
        return self._tag(payload) + payload

    def loads(self, frame: bytes) -> Any:
        frame = bytes(frame)
        if frame in self._acks:
            return pickle.loads(frame)
        tag, payload = frame[:_TAG_BYTES], frame[_TAG_BYTES:]
        if len(tag) != _TAG_BYTES or not hmac.compare_digest(tag, self._tag(payload)):
            raise FrameAuthFailed("Thespian frame without a valid authentication tag; refused")
        return pickle.loads(payload)


def check_version() -> None:
    try:
        version = importlib.metadata.version("thespian")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != VERIFIED_THESPIAN:
        raise ThespianUnverified(
            f"thespian {version} is installed; hostcore's bind-address and frame-authentication adaptation is "
            f"verified on thespian {VERIFIED_THESPIAN} only (install thespian=={VERIFIED_THESPIAN})")


def _ack_frames() -> frozenset[bytes]:
    stream: Any = importlib.import_module("thespian.system.transport.streamBuffer")
    return frozenset(m.partition(b">")[2] for m in (stream.ackMsg, stream.ackDataErrMsg))


def _patch_bind(bind: str) -> None:
    ipbase: Any = importlib.import_module("thespian.system.transport.IPBase")
    any_address = ("", "0.0.0.0")

    def bind_args(self: Any) -> tuple[tuple[Any, ...]]:
        host, port, *rest = self.bindname
        return ((bind, port, *rest),) if host in any_address and bind not in any_address else (self.bindname,)

    ipbase.IPActorAddress.bindArgs = property(bind_args)


def secure_thespian(network: ThespianNetwork, *, convention: bool) -> None:
    """Apply `network` to Thespian in this process, before the ActorSystem is created.

    `convention`: this node exchanges frames with other nodes (a host with workers, a worker);
    without a configured secret they then use plain pickle, which is allowed only on loopback
    (or with HOSTCORE_CONVENTION_INSECURE, logged as a risk). Idempotent; not thread-safe.

    Raises:
        ThespianUnverified: the installed Thespian is not the verified version.
    """
    check_version()
    _patch_bind(network.bind)
    if network.bind not in ("", "0.0.0.0"):
        os.environ["THESPIAN_BASE_IPADDR"] = network.bind
    if network.secret:
        secret = network.secret.encode()
    elif not convention:
        secret = secrets.token_bytes(32)  # only this process tree can talk to it
    else:
        secret = b""
        if network.loopback:
            log.warning("Thespian convention without HOSTCORE_CONVENTION_SECRET: any local user can send frames "
                        "to this node's loopback ports", extra={"bind": network.bind})
        else:
            log.error("UNAUTHENTICATED Thespian convention on a non-loopback address "
                      "(HOSTCORE_CONVENTION_INSECURE): anyone who reaches this address can run code here",
                      extra={"bind": network.bind})
    transport: Any = importlib.import_module("thespian.system.transport.TCPTransport")
    transport.serializer = HmacPickle(secret, _ack_frames()) if secret else pickle
