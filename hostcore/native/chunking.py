"""Large RPC payloads through the lattice's JetStream object store (protocol.md §4.9, §12.4).

A payload above the threshold travels as an object in the bucket named after the lattice prefix:
requests under `{invocation id}`, responses under `{invocation id}-r`. The message then carries an
empty `msg` and the full `content_length`; the reader fetches the object and deletes it.

Bucket names: NATS object stores allow only `[A-Za-z0-9_-]`. A prefix made only of those is used
unchanged (so OTP hosts and wasmbus-rpc providers share the bucket). Any other prefix, which is not
a valid bucket name for their NATS clients either, maps deterministically to the prefix with each
other character replaced by `_`, plus `_` and the first 8 hex digits of SHA-256(prefix), so two
such prefixes cannot share a bucket by accident (`bucket_name`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
from collections.abc import AsyncIterator

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from hostcore.errors import ChunkError, ChunkMissing, ChunkStoreFailed, ChunkTimeout
from hostcore.native.invocation import Invocation, InvocationResponse
from hostcore.wire.chunking_rules import CHUNK_THRESHOLD, OBJECT_STORE_TIMEOUT_S, RESPONSE_CHUNK_THRESHOLD

__all__ = [
    "CHUNK_THRESHOLD",
    "DEFAULT_TIMEOUT_S",
    "RESPONSE_CHUNK_THRESHOLD",
    "ChunkStore",
    "bucket_name",
    "chunk_invocation",
    "chunk_response",
    "dechunk_invocation",
    "dechunk_response",
    "needs_dechunk",
    "request_object_name",
    "response_object_name",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = OBJECT_STORE_TIMEOUT_S

_VALID_BUCKET = re.compile(r"[A-Za-z0-9_-]+")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def bucket_name(lattice_prefix: str) -> str:
    """The object-store bucket for `lattice_prefix` (see the module docstring)."""
    if _VALID_BUCKET.fullmatch(lattice_prefix):
        return lattice_prefix
    digest = hashlib.sha256(lattice_prefix.encode()).hexdigest()[:8]
    return f"{_INVALID_CHAR.sub('_', lattice_prefix)}_{digest}"


def needs_dechunk(content_length: int | None, msg: bytes) -> bool:
    """§4.9 de-chunk rule: the full length is larger than what the message carries."""
    return content_length is not None and content_length > len(msg)


def request_object_name(invocation_id: str) -> str:
    return invocation_id


def response_object_name(invocation_id: str) -> str:
    return f"{invocation_id}-r"


class ChunkStore:
    """The chunking object store of one lattice, on a JetStream context the caller owns.

    The bucket is opened on first use and created if missing. Each `put`/`take` is bounded by
    `timeout_s` and raises a ChunkError subclass: ChunkMissing (no such object), ChunkTimeout, or
    ChunkStoreFailed (any other NATS/JetStream failure). Safe for concurrent use from one loop.
    """

    def __init__(
        self, js: JetStreamContext, lattice_prefix: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._js = js
        self.bucket = bucket_name(lattice_prefix)
        self._timeout_s = timeout_s
        self._store: ObjectStore | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> ObjectStore:
        async with self._opening:
            if self._store is None:
                try:
                    self._store = await self._js.object_store(self.bucket)
                except BucketNotFoundError:
                    # Another host may create it at the same moment: creating a stream with an
                    # identical config is idempotent in JetStream.
                    self._store = await self._js.create_object_store(self.bucket)
                    log.info("chunking object store created", extra={"bucket": self.bucket})
            return self._store

    async def put(self, name: str, data: bytes) -> None:
        """Store `data` as object `name` (replacing any object of that name)."""
        async with self._operation(name):
            store = await self._open()
            await store.put(name, data)
        log.debug("chunk stored", extra={"object": name, "size": len(data), "bucket": self.bucket})

    async def take(self, name: str) -> bytes:
        """Read object `name`, then delete it (readers delete, §12.4).

        The delete is best effort: if it fails after a good read, the payload is still returned
        and a warning logged (a leftover object costs only storage). Raises ChunkMissing if there
        is no such object.
        """
        async with self._operation(name):
            store = await self._open()
            result = await store.get(name)
            data = bytes(result.data or b"")
        try:
            async with self._operation(name):
                await store.delete(name)
        except ChunkError as err:
            log.warning("chunk not deleted after read", extra={"object": name, "error": err.wire})
        log.debug("chunk taken", extra={"object": name, "size": len(data), "bucket": self.bucket})
        return data

    @contextlib.asynccontextmanager
    async def _operation(self, name: str) -> AsyncIterator[None]:
        """Bound one object operation by `timeout_s` and turn NATS errors into ChunkErrors."""
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except ObjectNotFoundError as err:
            raise ChunkMissing(name, self.bucket) from err
        except TimeoutError as err:  # our deadline, or a JetStream API request's own
            # Known leak: nats-py's ObjectStore.get does not unsubscribe its ordered consumer
            # when cancelled, so a get cut off here leaves that subscription (and its heartbeat
            # task) on the connection until the connection closes.
            raise ChunkTimeout(name, self.bucket, self._timeout_s) from err
        except nats.errors.Error as err:
            raise ChunkStoreFailed(name, self.bucket, str(err) or type(err).__name__) from err


async def chunk_invocation(store: ChunkStore, inv: Invocation) -> Invocation:
    """`inv` unchanged if its payload is at most CHUNK_THRESHOLD; otherwise a copy with `msg`
    emptied and `content_length` = full size, the payload stored as object `{inv.id}`.

    The invocation's hash and JWT cover the FULL payload (§4.4), so sign first, then chunk.
    Raises a ChunkError if the store fails (nothing is sent then).
    """
    if len(inv.msg) <= CHUNK_THRESHOLD:
        return inv
    await store.put(request_object_name(inv.id), inv.msg)
    return dataclasses.replace(inv, msg=b"", content_length=len(inv.msg))


async def dechunk_invocation(store: ChunkStore, inv: Invocation) -> Invocation:
    """`inv` with its payload restored from (and removed from) the store, if it was chunked."""
    if not needs_dechunk(inv.content_length, inv.msg):
        return inv
    return dataclasses.replace(inv, msg=await store.take(request_object_name(inv.id)))


async def chunk_response(
    store: ChunkStore, resp: InvocationResponse, invocation_id: str
) -> InvocationResponse:
    """A success response above RESPONSE_CHUNK_THRESHOLD, stored as `{invocation_id}-r` and sent
    with an empty `msg` and the full `content_length`; anything else unchanged."""
    if resp.error is not None or len(resp.msg) <= RESPONSE_CHUNK_THRESHOLD:
        return resp
    await store.put(response_object_name(invocation_id), resp.msg)
    return dataclasses.replace(resp, msg=b"", content_length=len(resp.msg))


async def dechunk_response(
    store: ChunkStore, resp: InvocationResponse, invocation_id: str
) -> InvocationResponse:
    """`resp` with its payload restored from `{invocation_id}-r`, if it was chunked. Error
    responses are returned as they are (§4.8: receivers ignore `msg` then)."""
    if resp.error is not None or not needs_dechunk(resp.content_length, resp.msg):
        return resp
    return dataclasses.replace(resp, msg=await store.take(response_object_name(invocation_id)))
