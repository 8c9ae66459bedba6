"""Golden checks for the RPC hot path's hand-built bytes: the invocation JWT that
`new_invocation` frames itself, the parser's shortcut for wascap's constant JWT header, interned
entities, and the rpcevt events RpcEvents encodes from cached parts. Each is compared with the
general encoder it replaces, byte for byte."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import random
import re
import uuid
from collections.abc import Iterator

import pytest

from hostcore.errors import TokenMalformed
from hostcore.native.invocation import (
    Invocation,
    InvocationResponse,
    WasmCloudEntity,
    new_invocation,
    success_wire,
    validate_antiforgery,
)
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.native.wascap_jwt import HEADER_SEGMENT, b64url_segment, encode_jwt, new_jti, parse_token
from hostcore.telemetry.rpc import RpcEvents, _uuid4_text
from hostcore.wire import cloudevents

SIGNER = KeyPair.from_seed("SCAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HYO7Q")
HOST = "NBNXRMWOBTVHXNNJ5VD7LVCXMPMF5VRVTGZ5MS2YTNMMM4QIBQUXIC66"
ACTOR = WasmCloudEntity("MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5")
PROVIDER = WasmCloudEntity("VAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE", "wasmcloud:httpserver",
                           "default")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.mark.parametrize(("origin", "target", "operation", "msg"), [
    (PROVIDER, ACTOR, "HttpServer.HandleRequest", b"\x85payload"),
    (ACTOR, PROVIDER, "Opération.ünïcode", b""),
    (ACTOR, WasmCloudEntity("MB" + "A" * 54), 'Quote"and\\slash', bytes(range(256))),
])
def test_invocation_jwt_is_the_generic_encoders(origin: WasmCloudEntity, target: WasmCloudEntity,
                                                 operation: str, msg: bytes) -> None:
    inv = new_invocation(SIGNER, origin, target, operation, msg, invocation_id="id-1", now=1_700_000_000,
                         jti="J" * 22)
    claims = parse_token(inv.encoded_claims).claims
    # Same claims, same key (Ed25519 signatures are deterministic): the very same token.
    assert inv.encoded_claims == encode_jwt(claims, SIGNER)
    assert inv.encoded_claims.startswith(HEADER_SEGMENT + ".")
    validate_antiforgery(inv, [SIGNER.public_key], now=1_700_000_000)


def test_fresh_ids_are_a_uuid4_and_a_jti_the_generic_encoder_agrees_with() -> None:
    seen = set()
    for _ in range(200):
        inv = new_invocation(SIGNER, PROVIDER, ACTOR, "HttpServer.HandleRequest", b"\x85payload")
        claims = parse_token(inv.encoded_claims).claims
        assert inv.encoded_claims == encode_jwt(claims, SIGNER)
        assert UUID4.fullmatch(inv.id) and str(uuid.UUID(inv.id)) == inv.id and uuid.UUID(inv.id).version == 4
        assert claims["sub"] == inv.id and re.fullmatch(r"[0-9A-Za-z]{22}", claims["jti"])
        seen.add((inv.id, claims["jti"]))
    assert len(seen) == 200


def test_jti_uses_the_given_entropy_first() -> None:
    assert new_jti(bytes(range(22))) == "0123456789ABCDEFGHIJKL"
    assert re.fullmatch(r"[0-9A-Za-z]{22}", new_jti(bytes([248] * 32)))  # every byte dropped: topped up


def test_constant_header_shortcut_matches_decoding() -> None:
    assert parse_token(new_invocation(SIGNER, ACTOR, PROVIDER, "A.B", b"x").encoded_claims).header == \
        json.loads(b64url_segment(HEADER_SEGMENT))


def test_entities_are_interned_but_equal() -> None:
    inv = new_invocation(SIGNER, PROVIDER, ACTOR, "HttpServer.HandleRequest", b"x")
    a, b = Invocation.from_wire(inv.to_wire()), Invocation.from_wire(inv.to_wire())
    assert a == inv and a.origin is b.origin and a.target is b.target
    assert (a.origin.public_key, a.origin.contract_id, a.origin.link_name) == (
        PROVIDER.public_key, "wasmcloud:httpserver", "default")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _reference(ok: bool, source: WasmCloudEntity, dest: WasmCloudEntity, operation: str, size: int,
               when: dt.datetime) -> tuple[bytes, str, str]:
    event = cloudevents.invocation(source, dest, operation, size, ok=ok)
    body = cloudevents.cloud_event(event.type, event.data, HOST, now=when)
    parsed = json.loads(body)
    return body, parsed["id"], parsed["time"]


@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.parametrize(("source", "dest", "operation"), [
    (PROVIDER, ACTOR, "HttpServer.HandleRequest"),
    (ACTOR, PROVIDER, "Opération.ünïcode"),
    (ACTOR, ACTOR, 'Quote"and\\slash\u0000'),
])
def test_rpc_event_bytes_are_cloud_events(ok: bool, source: WasmCloudEntity, dest: WasmCloudEntity,
                                          operation: str, loop: asyncio.AbstractEventLoop) -> None:
    events = RpcEvents(_no_publish, "wasmbus.rpcevt.default", HOST, loop)
    when = dt.datetime(2026, 11, 29, 10, 0, 1, 2345, tzinfo=dt.timezone.utc)
    for size in (0, 52, 10_000_000):  # the second and third use the cached parts
        body, event_id, time_text = _reference(ok, source, dest, operation, size, when)
        assert events.encode(ok, source, dest, operation, size, event_id=event_id,
                             time_text=time_text.encode()) == body


def test_rpc_event_time_shape(loop: asyncio.AbstractEventLoop) -> None:
    events = RpcEvents(_no_publish, "s", HOST, loop)
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    stamp = events.now_text().decode()
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert before - dt.timedelta(seconds=1) <= parsed <= dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert len(stamp) == len("2026-11-29T10:00:01.002345Z")


async def _no_publish(subject: str, body: bytes) -> None:
    raise AssertionError("not published in this test")


def test_rpc_events_flush_in_order_and_without_a_call() -> None:
    published: list[tuple[str, dict[str, object]]] = []

    async def publish(subject: str, body: bytes) -> None:
        published.append((subject, json.loads(body)))

    async def scenario() -> None:
        events = RpcEvents(publish, "wasmbus.rpcevt.lat", HOST, asyncio.get_running_loop())
        events.add(True, PROVIDER, ACTOR, "A.One", 1)
        events.add(False, ACTOR, PROVIDER, "A.Two", 2)
        assert events.queued
        await events.flush()  # as _on_rpc does right after its reply
        assert not events.queued
        events.add(True, ACTOR, ACTOR, "A.Three", 3)  # outside a call: flushed by the loop itself
        for _ in range(5):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert [(s, e["type"], e["data"]["operation"], e["data"]["bytes"]) for s, e in published] == [
        ("wasmbus.rpcevt.lat", "com.wasmcloud.lattice.invocation_succeeded", "A.One", 1),
        ("wasmbus.rpcevt.lat", "com.wasmcloud.lattice.invocation_failed", "A.Two", 2),
        ("wasmbus.rpcevt.lat", "com.wasmcloud.lattice.invocation_succeeded", "A.Three", 3),
    ]
    assert all(UUID4.fullmatch(e["id"]) and e["source"] == HOST for _, e in published)
    assert len({e["id"] for _, e in published}) == 3


@pytest.mark.parametrize("msg", [b"", b"\x81\xa4body\xc4\x05hello", bytes(70_000)])
def test_success_reply_is_the_response_encoders(msg: bytes) -> None:
    assert success_wire("inv-1", msg, "inst-1") == InvocationResponse.success("inv-1", msg, "inst-1").to_wire()


def test_event_ids_are_uuid4_text() -> None:
    ids = {_uuid4_text() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(UUID4.fullmatch(i) and str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)


def _b64url_reference(segment: str) -> bytes | None:
    """The strict decoding by its definition: alphabet, length, and re-encoding gives it back."""
    if len(segment) % 4 == 1 or not re.fullmatch(r"[A-Za-z0-9_-]*", segment):
        return None
    decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return decoded if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() == segment else None


def test_b64url_segment_is_strict_base64url() -> None:
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(20_000):
        if i % 2:  # canonical encodings
            segment = base64.urlsafe_b64encode(rng.randbytes(rng.randint(0, 12))).rstrip(b"=").decode()
        else:  # anything, mostly from the alphabet: non-canonical tails, bad lengths, stray chars
            segment = "".join(rng.choice(alphabet if rng.random() < 0.9 else "+/=. \u00e9") for _ in range(rng.randint(0, 9)))
        try:
            got: bytes | None = b64url_segment(segment)
        except TokenMalformed:
            got = None
        assert got == _b64url_reference(segment), segment
