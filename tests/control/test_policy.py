"""PolicyEvaluator against a real nats-server and a policy responder written here (§9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from hostcore.config import HostConfig
from hostcore.control.policy import (
    DISABLED_MESSAGE,
    Decision,
    PolicyEvaluator,
    PolicyHost,
    invocation_source,
    invocation_target,
)
from hostcore.errors import (
    PolicyDecodeFailed,
    PolicyDeniedInvocation,
    PolicyDeniedStartActor,
    PolicyDeniedStartProvider,
    PolicyNoResponders,
    PolicyTimedOut,
)
from hostcore.native.claims import ActorClaims
from hostcore.native.invocation import WasmCloudEntity
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.natsconn import flush_in_order

TOPIC = "wasmcloud.policy.test"
CHANGES = "wasmcloud.policy.changes"
NOW = 1_700_000_000.0

ACTOR = "MB2ZQB6ROOMAYBO4ZCTFYWN7YIVBWA3MTKZYAQKJMTIHE2ELLRW2E3ZW"
ACCOUNT = "ADT2YUKCRQUGXXM73BBWVI33E4QLQX2LWRCMSC3ZUSCVKBZ6KQMJNU3L"
PROVIDER = "VAHMIAAVLEZLKHF4CZJVBVBGGZTWGUUKBCH3MABLNMPPUPA6CJ2HSJCT"

HOST = PolicyHost(
    public_key="NHOSTKEY", issuer="CCLUSTERKEY", lattice_id="default",
    labels={"hostcore.os": "linux"}, cluster_issuers=("CCLUSTERKEY", "COTHER"),
)

ORIGIN = WasmCloudEntity(PROVIDER, "wasmcloud:httpserver", "default")
TARGET = WasmCloudEntity(ACTOR)
ORIGIN_RECORD = {"call_alias": "", "iss": ACCOUNT, "name": "httpserver", "caps": "",
                 "rev": "0", "tags": "", "version": None, "sub": PROVIDER}
TARGET_RECORD = {"call_alias": "", "iss": ACCOUNT, "name": "echo",
                 "caps": "wasmcloud:httpserver,wasmcloud:keyvalue", "rev": "1", "tags": "",
                 "version": "0.1.0", "sub": ACTOR}


def actor_claims(public_key: str = ACTOR) -> ActorClaims:
    return ActorClaims(public_key=public_key, issuer=ACCOUNT, name="echo", call_alias=None,
                       version="0.1.0", rev=1, issued_at=1, expires=None, not_before=None,
                       tags=(), caps=("wasmcloud:httpserver",), module_hash="00", jwt="x.y.z",
                       wascap_revision=3, provider=False)


class Responder:
    """A policy server: records every request; `reply(request)` gives the reply body, or None to
    stay silent (the host then times out)."""

    def __init__(self, reply: Callable[[dict[str, Any]], bytes | None]) -> None:
        self.requests: list[dict[str, Any]] = []
        self._reply = reply

    async def on_msg(self, msg: Msg) -> None:
        request = json.loads(msg.data)
        self.requests.append(request)
        body = self._reply(request)
        if body is not None:
            await msg.respond(body)


def answer(permitted: bool, message: str = "") -> Callable[[dict[str, Any]], bytes]:
    return lambda req: json.dumps(
        {"permitted": permitted, "message": message, "requestId": req["requestId"]}).encode()


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
def evaluator(own_nc: NatsClient, clock: list[float]) -> PolicyEvaluator:
    return PolicyEvaluator(own_nc, topic=TOPIC, timeout_s=0.3, host=HOST, clock=lambda: clock[0])


async def serve(own_nc: NatsClient, reply: Callable[[dict[str, Any]], bytes | None]) -> Responder:
    responder = Responder(reply)
    await own_nc.subscribe(TOPIC, cb=responder.on_msg)
    await flush_in_order(own_nc)
    return responder


def invocation_args() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return invocation_source(ORIGIN, ORIGIN_RECORD), invocation_target(TARGET, TARGET_RECORD)


# --- allow / deny and the exact request ------------------------------------------------------


async def test_allow_sends_the_start_actor_request_of_9_2(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, answer(True, "welcome"))
    decision = await evaluator.evaluate_start_actor(actor_claims())
    [request] = responder.requests
    assert decision == Decision(True, "welcome", request["requestId"])
    assert request == {
        "requestId": request["requestId"],
        "source": {"publicKey": "", "contractId": "", "linkName": "", "capabilities": [],
                   "issuer": "", "issuedOn": "", "expiresAt": int(NOW) + 60, "expired": False},
        "target": {"publicKey": ACTOR, "issuer": ACCOUNT, "contractId": None, "linkName": None},
        "action": "start_actor",
        "host": {"publicKey": "NHOSTKEY", "issuer": "CCLUSTERKEY", "latticeId": "default",
                 "labels": {"hostcore.os": "linux"}, "clusterIssuers": ["CCLUSTERKEY", "COTHER"]},
    }
    assert len(request["requestId"]) == 36  # a UUID v4 string


async def test_deny_with_message_for_a_provider(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, answer(False, "Issuer was not the official wasmCloud issuer"))
    decision = await evaluator.evaluate_start_provider(PROVIDER, ACCOUNT, "default", "wasmcloud:keyvalue")
    [request] = responder.requests
    assert decision == Decision(False, "Issuer was not the official wasmCloud issuer", request["requestId"])
    assert request["action"] == "start_provider"
    assert request["target"] == {"publicKey": PROVIDER, "issuer": ACCOUNT, "linkName": "default",
                                 "contractId": "wasmcloud:keyvalue"}
    assert PolicyDeniedStartProvider(PROVIDER, decision.message).wire == (
        f"Starting provider {PROVIDER} denied: Issuer was not the official wasmCloud issuer")


async def test_invocation_request_uses_the_claims_records(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, answer(False, "no"))
    decision = await evaluator.evaluate_invocation(*invocation_args())
    [request] = responder.requests
    assert request["action"] == "perform_invocation"
    assert request["source"] == {"publicKey": PROVIDER, "contractId": "wasmcloud:httpserver",
                                 "linkName": "default", "capabilities": "", "issuer": ACCOUNT,
                                 "issuedOn": None, "expiresAt": None, "expired": False}
    assert request["target"] == {"publicKey": ACTOR, "contractId": "", "linkName": "", "issuer": ACCOUNT}
    assert PolicyDeniedInvocation(decision.message).wire == "Policy denied invocation: no"


# --- failure defaults (§9.4): deny, never cached ----------------------------------------------


async def test_timeout_denies_and_is_not_cached(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, lambda req: None)
    first = await evaluator.evaluate_invocation(*invocation_args())
    assert first == Decision(False, "Policy request timed out", responder.requests[0]["requestId"])
    assert first.message == PolicyTimedOut.wire
    await evaluator.evaluate_invocation(*invocation_args())
    assert len(responder.requests) == 2


async def test_no_responders_denies_and_is_not_cached(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    decision = await evaluator.evaluate_start_actor(actor_claims())
    assert not decision.permitted
    assert decision.message == "No responders to policy request (policy server not listening?)"
    assert decision.message == PolicyNoResponders.wire
    assert evaluator.cached(decision.request_id) is None
    responder = await serve(own_nc, answer(True))  # a server appears: the host asks again
    assert (await evaluator.evaluate_start_actor(actor_claims())).permitted
    assert len(responder.requests) == 1


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"message": "no permitted key"}',
                                  b'{"permitted": "yes", "message": "", "requestId": ""}',
                                  b'{"permitted": true, "message": 7}', b"\xff\xfe"])
async def test_bad_reply_denies_and_is_not_cached(own_nc: NatsClient, evaluator: PolicyEvaluator, body: bytes) -> None:
    responder = await serve(own_nc, lambda req: body)
    decision = await evaluator.evaluate_invocation(*invocation_args())
    assert decision == Decision(False, "Policy response failed to decode", responder.requests[0]["requestId"])
    await evaluator.evaluate_invocation(*invocation_args())
    assert len(responder.requests) == 2


async def test_a_reply_without_message_or_request_id_is_accepted(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, lambda req: b'{"permitted": false}')
    decision = await evaluator.evaluate_invocation(*invocation_args())
    assert decision == Decision(False, "", responder.requests[0]["requestId"])
    assert PolicyDeniedInvocation(decision.message).wire == "Policy denied invocation: reason not specified"


# --- caching (§9.5) ------------------------------------------------------------------------------


async def test_identical_invocations_are_asked_once(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, answer(False, "cached deny"))
    first = await evaluator.evaluate_invocation(*invocation_args())
    second = await evaluator.evaluate_invocation(*invocation_args())
    assert second == first and len(responder.requests) == 1
    other = invocation_target(WasmCloudEntity("MOTHER"), TARGET_RECORD)
    await evaluator.evaluate_invocation(invocation_source(ORIGIN, ORIGIN_RECORD), other)
    assert len(responder.requests) == 2


async def test_start_decisions_are_cached_despite_the_moving_expires_at(
        own_nc: NatsClient, evaluator: PolicyEvaluator, clock: list[float]) -> None:
    responder = await serve(own_nc, answer(True))
    first = await evaluator.evaluate_start_actor(actor_claims())
    clock[0] += 3600
    assert await evaluator.evaluate_start_actor(actor_claims()) == first
    assert len(responder.requests) == 1
    await evaluator.evaluate_start_actor(actor_claims("MANOTHERACTOR"))
    await evaluator.evaluate_start_provider(PROVIDER, ACCOUNT, "default", "wasmcloud:keyvalue")
    await evaluator.evaluate_start_provider(PROVIDER, ACCOUNT, "other", "wasmcloud:keyvalue")
    assert [r["action"] for r in responder.requests] == [
        "start_actor", "start_actor", "start_provider", "start_provider"]


async def test_the_cache_is_bounded_and_forgets_the_oldest(own_nc: NatsClient) -> None:
    evaluator = PolicyEvaluator(own_nc, topic=TOPIC, timeout_s=0.3, host=HOST, cache_size=2)
    responder = await serve(own_nc, answer(True))
    sources = [invocation_source(WasmCloudEntity(f"MORIGIN{i}"), ORIGIN_RECORD) for i in range(3)]
    target = invocation_target(TARGET, TARGET_RECORD)
    decisions = [await evaluator.evaluate_invocation(s, target) for s in sources]
    assert evaluator.cached(decisions[0].request_id) is None
    assert evaluator.cached(decisions[2].request_id) == decisions[2]
    await evaluator.evaluate_invocation(sources[2], target)  # still cached
    await evaluator.evaluate_invocation(sources[0], target)  # evicted: asked again
    assert len(responder.requests) == 4


# --- policy changes ----------------------------------------------------------------------------


async def test_changes_topic_flips_a_cached_decision(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, answer(True, "ok"))
    sub = await evaluator.subscribe_changes(CHANGES)
    try:
        first = await evaluator.evaluate_invocation(*invocation_args())
        assert first.permitted
        change = {"request_id": first.request_id, "permitted": False, "message": "revoked"}
        reply = await own_nc.request(CHANGES, json.dumps(change).encode(), timeout=2)
        assert json.loads(reply.data) == {"success": True}
        assert await evaluator.evaluate_invocation(*invocation_args()) == Decision(False, "revoked", first.request_id)
        assert len(responder.requests) == 1
        reply = await own_nc.request(CHANGES, b'{"request_id": "x", "permitted": "no"}', timeout=2)
        assert json.loads(reply.data) == {"success": False}
    finally:
        await sub.unsubscribe()


async def test_handle_change_input_checks(own_nc: NatsClient) -> None:
    evaluator = PolicyEvaluator(own_nc, topic=TOPIC, timeout_s=0.3, host=HOST)
    unknown = b'{"request_id": "nobody", "permitted": true, "message": ""}'
    assert json.loads(evaluator.handle_change(unknown)) == {"success": True}  # QUIRK: as OTP
    for bad in (b"", b"{", b"[]", b'{"request_id": "a", "permitted": true}',
                b'{"requestId": "a", "permitted": true, "message": ""}'):
        assert json.loads(evaluator.handle_change(bad)) == {"success": False}, bad


# --- disabled mode, missing claims, argument checks --------------------------------------------


@pytest.mark.parametrize("topic", [None, ""])
async def test_disabled_permits_everything_without_asking(own_nc: NatsClient, topic: str | None) -> None:
    evaluator = PolicyEvaluator(own_nc, topic=topic, timeout_s=0.3, host=HOST)
    disabled = Decision(True, DISABLED_MESSAGE, "")
    assert DISABLED_MESSAGE == "Policy evaluation disabled, allowing action"
    assert not evaluator.enabled
    assert await evaluator.evaluate_start_actor(actor_claims()) == disabled
    assert await evaluator.evaluate_start_provider(PROVIDER, ACCOUNT, "default", "c") == disabled
    assert await evaluator.evaluate_invocation(*invocation_args()) == disabled
    assert await evaluator.evaluate_invocation(None, None) == disabled


async def test_missing_claims_record_denies_without_a_request(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, answer(True))
    source, target = invocation_args()
    assert invocation_source(ORIGIN, None) is None and invocation_target(TARGET, None) is None
    assert await evaluator.evaluate_invocation(None, target) == Decision(False, "", "")
    assert await evaluator.evaluate_invocation(source, None) == Decision(False, "", "")
    assert responder.requests == []


async def test_invalid_arguments_deny_without_a_request(own_nc: NatsClient, evaluator: PolicyEvaluator) -> None:
    responder = await serve(own_nc, answer(True))
    source, target = invocation_args()
    assert source is not None and target is not None
    partial = {k: v for k, v in source.items() if k not in ("issuer", "expired")}
    decision = await evaluator.evaluate_invocation(partial, target)
    # QUIRK: OTP names the null-valued keys too once any key is missing.
    assert decision == Decision(
        False, "Invalid source argument, missing required fields: issuer, issuedOn, expired, expiresAt", "")
    decision = await evaluator.evaluate_invocation(source, {"publicKey": ACTOR})
    assert decision == Decision(False, "Invalid target argument, missing required fields: issuer", "")
    assert responder.requests == []


# --- pure pieces ---------------------------------------------------------------------------------


def test_decision_from_wire() -> None:
    assert Decision.from_wire(b'{"permitted": true, "message": "m", "requestId": "theirs"}',
                              request_id="ours") == Decision(True, "m", "ours")
    assert Decision.from_wire(b'{"permitted": false, "message": null}', request_id="r") == Decision(False, "", "r")
    with pytest.raises(PolicyDecodeFailed):
        Decision.from_wire(b'{"permitted": true, "requestId": 5}', request_id="r")


def test_denial_texts() -> None:
    assert PolicyDeniedStartActor(ACTOR, "nope").wire == f"Starting actor {ACTOR} denied: nope"
    assert PolicyDeniedStartActor(ACTOR, "").message == "reason not specified"
    assert PolicyDeniedStartProvider(PROVIDER, "x").wire == f"Starting provider {PROVIDER} denied: x"
    assert PolicyDeniedInvocation().wire == "Policy denied invocation: reason not specified"
    assert isinstance(PolicyDeniedInvocation(), PermissionError)


def test_policy_host_from_config() -> None:
    host_key, cluster_key = KeyPair.generate(KeyKind.SERVER), KeyPair.generate(KeyKind.CLUSTER)
    config = HostConfig(host_key=host_key, cluster_key=cluster_key,
                        cluster_issuers=(cluster_key.public_key, "CEXTRA"), cluster_adhoc=False,
                        lattice_prefix="lattice-7", friendly_name="quiet-moon-1",
                        labels={"zone": "a"}, nats_url="")
    host = PolicyHost.from_config(config)
    assert host.to_wire() == {"publicKey": host_key.public_key, "issuer": cluster_key.public_key,
                              "latticeId": "lattice-7", "labels": {"zone": "a"},
                              "clusterIssuers": [cluster_key.public_key, "CEXTRA"]}


def test_invocation_maps_from_records() -> None:
    assert invocation_source(TARGET, TARGET_RECORD) == {
        "publicKey": ACTOR, "contractId": "", "linkName": "",
        "capabilities": "wasmcloud:httpserver,wasmcloud:keyvalue", "issuer": ACCOUNT,
        "issuedOn": None, "expiresAt": None, "expired": False}
    assert invocation_target(ORIGIN, ORIGIN_RECORD) == {
        "publicKey": PROVIDER, "contractId": "wasmcloud:httpserver", "linkName": "default", "issuer": ACCOUNT}
