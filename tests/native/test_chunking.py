"""Chunked RPC payloads through a real JetStream object store (§4.9, §12.4)."""

from __future__ import annotations

import os
import re

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError

from hostcore.errors import ChunkMissing, HostcoreError
from hostcore.native.chunking import (
    CHUNK_THRESHOLD,
    RESPONSE_CHUNK_THRESHOLD,
    ChunkStore,
    bucket_name,
    chunk_invocation,
    chunk_response,
    dechunk_invocation,
    dechunk_response,
    needs_dechunk,
    request_object_name,
    response_object_name,
)
from hostcore.native.invocation import (
    Invocation,
    InvocationResponse,
    InvocationValidator,
    WasmCloudEntity,
    new_invocation,
)
from hostcore.native.nkeys import KeyKind, KeyPair

TWO_MB = 2 * 1024 * 1024
ORIGIN = WasmCloudEntity("VPROVIDERKEY", "wasmcloud:httpserver", "default")
TARGET = WasmCloudEntity("MACTORKEY")


@pytest.fixture
def js(own_nc: NatsClient) -> JetStreamContext:
    return own_nc.jetstream()


@pytest.fixture
def store(js: JetStreamContext) -> ChunkStore:
    return ChunkStore(js, "default")


@pytest.fixture
def signer() -> KeyPair:
    return KeyPair.generate(KeyKind.CLUSTER)


def signed(signer: KeyPair, msg: bytes) -> Invocation:
    return new_invocation(signer, ORIGIN, TARGET, "HttpServer.HandleRequest", msg)


# --- pure helpers --------------------------------------------------------------------------------


def test_thresholds_and_names() -> None:
    assert (CHUNK_THRESHOLD, RESPONSE_CHUNK_THRESHOLD) == (716_800, 921_600)
    assert request_object_name("abc") == "abc"
    assert response_object_name("abc") == "abc-r"
    assert needs_dechunk(10, b"")
    assert not needs_dechunk(0, b"")
    assert not needs_dechunk(3, b"abc")
    assert not needs_dechunk(None, b"")


def test_bucket_names() -> None:
    for valid in ("default", "my_lattice", "Lattice-7"):
        assert bucket_name(valid) == valid
    mapped = bucket_name("acme.prod")
    assert re.fullmatch(r"acme_prod_[0-9a-f]{8}", mapped)
    assert bucket_name("acme.prod") == mapped  # deterministic
    assert bucket_name("acme prod") != mapped
    assert re.fullmatch(r"[A-Za-z0-9_-]+", bucket_name(""))


# --- round trips through the object store --------------------------------------------------------


async def test_two_megabyte_request_round_trip(store: ChunkStore, signer: KeyPair) -> None:
    payload = os.urandom(TWO_MB)
    inv = signed(signer, payload)
    chunked = await chunk_invocation(store, inv)
    assert chunked.msg == b"" and chunked.content_length == TWO_MB
    assert chunked.encoded_claims == inv.encoded_claims and chunked.id == inv.id
    received = Invocation.from_wire(chunked.to_wire())  # what travels on NATS
    validator = InvocationValidator([signer.public_key])
    validator.validate(received)  # §4.6 step 4: hash check skipped while msg is empty
    restored = await dechunk_invocation(store, received)
    assert restored.msg == payload
    validator.validate(restored)  # the JWT hash covers the full payload
    with pytest.raises(ChunkMissing):  # the reader deleted it
        await store.take(request_object_name(inv.id))


async def test_two_megabyte_response_round_trip(store: ChunkStore) -> None:
    payload = os.urandom(TWO_MB)
    resp = InvocationResponse.success("inv-1", payload, "instance-1")
    chunked = await chunk_response(store, resp, "inv-1")
    assert chunked.msg == b"" and chunked.content_length == TWO_MB
    received = InvocationResponse.from_wire(chunked.to_wire())
    restored = await dechunk_response(store, received, "inv-1")
    assert restored.msg == payload and restored.content_length == TWO_MB
    with pytest.raises(ChunkMissing):
        await store.take(response_object_name("inv-1"))


async def test_payloads_at_the_threshold_are_untouched(store: ChunkStore, signer: KeyPair) -> None:
    inv = signed(signer, b"x" * CHUNK_THRESHOLD)
    assert await chunk_invocation(store, inv) is inv
    assert await dechunk_invocation(store, inv) is inv
    resp = InvocationResponse.success(inv.id, b"y" * RESPONSE_CHUNK_THRESHOLD, "i")
    assert await chunk_response(store, resp, inv.id) is resp
    assert await dechunk_response(store, resp, inv.id) is resp
    for name in (request_object_name(inv.id), response_object_name(inv.id)):
        with pytest.raises(ChunkMissing):
            await store.take(name)
    # One byte more is chunked: the thresholds are exclusive, as in OTP.
    bigger = await chunk_invocation(store, signed(signer, b"x" * (CHUNK_THRESHOLD + 1)))
    assert bigger.msg == b"" and bigger.content_length == CHUNK_THRESHOLD + 1


async def test_a_request_between_the_thresholds_is_chunked_but_its_response_is_not(
        store: ChunkStore, signer: KeyPair) -> None:
    payload = b"z" * 800_000
    assert (await chunk_invocation(store, signed(signer, payload))).msg == b""
    resp = InvocationResponse.success("id", payload, "i")
    assert await chunk_response(store, resp, "id") is resp


async def test_error_responses_are_never_chunked(store: ChunkStore) -> None:
    failure = InvocationResponse.failure("inv-2", "boom", "i")
    assert await chunk_response(store, failure, "inv-2") is failure
    odd = InvocationResponse(invocation_id="inv-2", error="boom", content_length=5)
    assert await dechunk_response(store, odd, "inv-2") is odd


async def test_missing_object_is_a_clear_error(store: ChunkStore, signer: KeyPair) -> None:
    inv = signed(signer, b"")
    lost = Invocation.from_wire(
        Invocation(origin=inv.origin, target=inv.target, operation=inv.operation, msg=b"", id="lost-id",
                   encoded_claims=inv.encoded_claims, host_id=inv.host_id, content_length=TWO_MB).to_wire())
    with pytest.raises(ChunkMissing) as err:
        await dechunk_invocation(store, lost)
    assert isinstance(err.value, HostcoreError) and isinstance(err.value, LookupError)
    assert err.value.wire == "Chunked payload 'lost-id' not found in object store 'default'"
    assert err.value.name == "lost-id"


async def test_bucket_is_created_on_first_use_with_a_mapped_name(js: JetStreamContext) -> None:
    store = ChunkStore(js, "acme.prod")
    with pytest.raises(BucketNotFoundError):
        await js.object_store(store.bucket)
    await store.put("obj", b"payload")
    await js.object_store(store.bucket)  # exists now
    # A second store (another host) finds the same bucket and the same object.
    assert await ChunkStore(js, "acme.prod").take("obj") == b"payload"


async def test_put_replaces_an_object_of_the_same_name(store: ChunkStore) -> None:
    await store.put("same", b"first")
    await store.put("same", b"second")
    assert await store.take("same") == b"second"
