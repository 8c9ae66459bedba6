"""HostCallRouter (hostcore/actors/outbound.py): how an actor's host call finds its target
(protocol.md §4.10) and what goes out, with a recording connection instead of NATS."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LOOPING_WAT, signed_wat_actor

from hostcore.tree.messages import LatticeSnapshot
from hostcore.actors.outbound import HostCallRouter
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.errors import HostCallError, RpcTimeout
from hostcore.native.claims import ActorClaims, extract_claims
from hostcore.native.invocation import Invocation, InvocationResponse, InvocationValidator, WasmCloudEntity
from hostcore.native.nkeys import KeyKind, KeyPair

LATTICE = "unit"
KV = "wasmcloud:keyvalue"
REDIS = "VAZVC4RX54J2NVCMCW7BPCAHGGG5XZXDBXFUMDUXGESTMQEJLC3YVZWB"
OTHER_REDIS = "VBB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE"
CLUSTER = KeyPair.generate(KeyKind.CLUSTER)


def claims_with(*caps: str) -> ActorClaims:
    module, _ = signed_wat_actor(LOOPING_WAT, "caller", caps=list(caps))
    return extract_claims(module)


class RecordingConnection:
    """Stands in for OutboundConnection: records requests, answers with `reply(invocation)`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Invocation, float]] = []
        self.reply: Any = lambda inv: InvocationResponse.success(inv.id, b"pong", "i-1").to_wire()

    def request(self, subject: str, data: bytes, timeout_s: float, headers: dict[str, str] | None = None) -> bytes:
        inv = Invocation.from_wire(data)
        self.sent.append((subject, inv, timeout_s))
        return bytes(self.reply(inv))


def router(claims: ActorClaims, *, links: tuple[LinkDefinition, ...] = (), aliases: dict[str, str] | None = None,
           connection: RecordingConnection | None = None, on_result: Any = None) -> HostCallRouter:
    r = HostCallRouter(claims=claims, lattice_prefix=LATTICE, signer=CLUSTER, rpc_timeout_s=2.0,
                       connection=connection or RecordingConnection(), on_result=on_result)  # type: ignore[arg-type]
    r.update(LatticeSnapshot(links=links, aliases=aliases or {}))
    return r


def link(actor: str, provider: str = REDIS, name: str = "default", contract: str = KV) -> LinkDefinition:
    return LinkDefinition(actor_id=actor, provider_id=provider, link_name=name, contract_id=contract)


@pytest.fixture(scope="module")
def kv_actor() -> ActorClaims:
    return claims_with(KV)


# --- resolve -----------------------------------------------------------------------------------------


def test_a_linked_contract_resolves_to_its_provider_by_link_name(kv_actor: ActorClaims) -> None:
    me = kv_actor.public_key
    r = router(kv_actor, links=(link(me), link(me, OTHER_REDIS, "cache"), link("MSOMEONEELSE", OTHER_REDIS)))
    assert r.resolve("", KV) == WasmCloudEntity(REDIS, KV, "default")  # no binding means "default"
    assert r.resolve("default", KV) == WasmCloudEntity(REDIS, KV, "default")
    assert r.resolve("cache", KV) == WasmCloudEntity(OTHER_REDIS, KV, "cache")


def test_a_linked_contract_without_its_claim_is_not_authorized() -> None:
    claims = claims_with()
    with pytest.raises(HostCallError) as err:
        router(claims, links=(link(claims.public_key),)).resolve("default", KV)
    assert err.value.wire == f"Invocation not authorized: missing capability claim for {KV}"


def test_an_actor_key_is_a_target_as_it_is(kv_actor: ActorClaims) -> None:
    callee = KeyPair.generate(KeyKind.MODULE).public_key
    target = router(kv_actor).resolve("default", callee)
    assert target == WasmCloudEntity(callee) and target.is_actor


def test_a_call_alias_resolves_to_its_actor(kv_actor: ActorClaims) -> None:
    callee = KeyPair.generate(KeyKind.MODULE).public_key
    assert router(kv_actor, aliases={"tests/callee": callee}).resolve("", "tests/callee") == WasmCloudEntity(callee)


@pytest.mark.parametrize("namespace", ["nobody/here", KV, "M-too-short"])
def test_no_link_no_key_no_alias_is_call_alias_not_found(kv_actor: ActorClaims, namespace: str) -> None:
    # QUIRK (as OTP): a contract without a link is looked up as a call alias, whatever the claims.
    with pytest.raises(HostCallError) as err:
        router(kv_actor).resolve("default", namespace)
    assert err.value.wire == f"Call alias not found: {namespace} on {LATTICE}"


def test_a_link_under_another_name_does_not_match(kv_actor: ActorClaims) -> None:
    with pytest.raises(HostCallError) as err:
        router(kv_actor, links=(link(kv_actor.public_key, name="cache"),)).resolve("default", KV)
    assert err.value.wire == f"Call alias not found: {KV} on {LATTICE}"


def test_a_new_snapshot_replaces_the_tables(kv_actor: ActorClaims) -> None:
    r = router(kv_actor, links=(link(kv_actor.public_key),), aliases={"tests/callee": "M" + "A" * 55})
    r.update(LatticeSnapshot())
    for namespace in (KV, "tests/callee"):
        with pytest.raises(HostCallError):
            r.resolve("default", namespace)


# --- the call itself ---------------------------------------------------------------------------------


def test_a_provider_call_goes_to_the_link_subject_signed_by_the_cluster(kv_actor: ActorClaims) -> None:
    conn = RecordingConnection()
    results: list[tuple[Any, ...]] = []
    r = router(kv_actor, links=(link(kv_actor.public_key),), connection=conn, on_result=lambda *a: results.append(a))
    assert r("default", KV, "KeyValue.Get", b"key") == b"pong"
    [(subject, inv, timeout)] = conn.sent
    assert subject == f"wasmbus.rpc.{LATTICE}.{REDIS}.default"
    assert (inv.origin, inv.target, inv.operation, inv.msg) == (
        WasmCloudEntity(kv_actor.public_key), WasmCloudEntity(REDIS, KV, "default"), "KeyValue.Get", b"key")
    assert timeout == 2.0
    InvocationValidator([CLUSTER.public_key]).validate(inv)  # a receiving host accepts it
    assert results == [(True, WasmCloudEntity(kv_actor.public_key), WasmCloudEntity(REDIS, KV, "default"),
                        "KeyValue.Get", 3)]


def test_an_actor_call_goes_to_the_actor_subject(kv_actor: ActorClaims) -> None:
    conn = RecordingConnection()
    callee = KeyPair.generate(KeyKind.MODULE).public_key
    router(kv_actor, aliases={"tests/callee": callee}, connection=conn)("", "tests/callee", "Echo.Echo", b"")
    assert conn.sent[0][0] == f"wasmbus.rpc.{LATTICE}.{callee}"


@pytest.mark.parametrize(("reply", "error"), [
    (lambda inv: InvocationResponse.failure(inv.id, "callee said no", "i-1").to_wire(), "callee said no"),
    (lambda inv: b"\xc1", "Failed to deserialize invocation response"),
])
def test_a_failed_reply_is_a_host_call_error(kv_actor: ActorClaims, reply: Any, error: str) -> None:
    conn = RecordingConnection()
    conn.reply = reply
    results: list[tuple[Any, ...]] = []
    r = router(kv_actor, links=(link(kv_actor.public_key),), connection=conn, on_result=lambda *a: results.append(a))
    with pytest.raises(HostCallError) as err:
        r("default", KV, "KeyValue.Get", b"key")
    assert err.value.wire == error
    assert [res[0] for res in results] == [False]


def test_a_timeout_reaches_the_guest_as_its_wire_text(kv_actor: ActorClaims) -> None:
    conn = RecordingConnection()

    def no_answer(inv: Invocation) -> bytes:
        raise RpcTimeout()
    conn.reply = no_answer
    with pytest.raises(HostCallError) as err:
        router(kv_actor, links=(link(kv_actor.public_key),), connection=conn)("default", KV, "KeyValue.Get", b"")
    assert err.value.wire == "Failed to perform RPC call: request timeout"
