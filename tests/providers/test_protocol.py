"""hostcore.providers.protocol: host data and link definition wire shapes (pure), and the
HostBridge serving an in-process provider on a real NATS: link handling, provider → actor
calls, and chunked payloads through the lattice object store."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
from conftest import eventually

from hostcore.errors import ActorCallFailed, HostDataInvalid, ProviderOperationFailed, RpcTimeout
from hostcore.native.invocation import Invocation, InvocationResponse, InvocationValidator, WasmCloudEntity, new_invocation
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.native.chunking import CHUNK_THRESHOLD, RESPONSE_CHUNK_THRESHOLD
from hostcore.natsconn import flush_in_order
from hostcore.providers.protocol import (
    HealthCheckResponse,
    HostData,
    LinkDefinition,
    ProviderBase,
    serve_provider,
)
from provider_support import ProviderEnv

# --- wire shapes ---------------------------------------------------------------------------------


def _line(fields: dict[str, Any]) -> bytes:
    return base64.b64encode(json.dumps(fields).encode()) + b"\n"


def test_host_data_round_trip() -> None:
    ld = LinkDefinition(actor_id="MA", provider_id="VP", link_name="default", contract_id="wasmcloud:keyvalue",
                        values={"URL": "redis://x"}, id="abc")
    hd = HostData(host_id="NH", lattice_rpc_prefix="lat", link_name="default", lattice_rpc_url="127.0.0.1:4222",
                  provider_key="VP", link_definitions=(ld,), cluster_issuers=("CC",), invocation_seed="SC",
                  config_json='{"url":"redis://y"}', default_rpc_timeout_ms=1500, env_values={"A": "b"},
                  js_domain="dom", enable_structured_logging=True, instance_id="i")
    line = hd.to_wire()
    assert line.endswith(b"\n")
    assert HostData.from_wire(line) == hd
    assert hd.rpc_topic == "wasmbus.rpc.lat.VP.default"


def test_host_data_as_otp_sends_it() -> None:
    """v0.59 field set (§11.7): url without scheme, tls flag, null config, extra keys ignored."""
    hd = HostData.from_wire(_line({
        "host_id": "NH", "lattice_rpc_prefix": "default", "link_name": "default", "lattice_rpc_user_jwt": "",
        "lattice_rpc_user_seed": "", "lattice_rpc_url": "10.0.0.1:4222", "lattice_rpc_tls": False,
        "env_values": {}, "instance_id": "i", "provider_key": "VP",
        "link_definitions": [{"actor_id": "MA", "provider_id": "VP", "link_name": "default",
                              "contract_id": "c", "values": {}, "id": "x", "deleted": False}],
        "config_json": None, "default_rpc_timeout_ms": 2000, "cluster_issuers": ["CC"], "invocation_seed": "SC",
        "js_domain": None, "enable_structured_logging": False, "future_key": 1}))
    assert hd.nats_url == "nats://10.0.0.1:4222"
    assert hd.link_definitions[0].actor_id == "MA"
    assert hd.config_json is None
    assert dataclasses.replace(hd, lattice_rpc_tls=True).nats_url == "tls://10.0.0.1:4222"
    assert dataclasses.replace(hd, lattice_rpc_url="nats://h:1").nats_url == "nats://h:1"
    # v0.63 name for the logging flag; URL-safe base64 without padding
    raw = json.dumps({"provider_key": "VP", "structured_logging": True}).encode()
    assert HostData.from_wire(base64.urlsafe_b64encode(raw).rstrip(b"=")).enable_structured_logging


@pytest.mark.parametrize(("line", "detail"), [
    (b"\n", "stdin is empty - expecting host data configuration"),
    (b"!!!\n", "not base64-encoded JSON"),
    (_line([1, 2]), "not a JSON object"),  # type: ignore[arg-type]
    (_line({"host_id": "NH"}), "`provider_key` is missing"),
    (_line({"provider_key": "VP", "default_rpc_timeout_ms": "2000"}), "`default_rpc_timeout_ms`"),
    (_line({"provider_key": "VP", "link_definitions": [{"provider_id": "VP"}]}), "no actor_id"),
    (_line({"provider_key": "VP", "cluster_issuers": "CC"}), "`cluster_issuers`"),
])
def test_host_data_errors(line: bytes, detail: str) -> None:
    with pytest.raises(HostDataInvalid) as err:
        HostData.from_wire(line)
    assert err.value.wire.startswith("parsing host data: ") and detail in err.value.wire


def test_link_definition_wire() -> None:
    ld = LinkDefinition(actor_id="MA", provider_id="VP", link_name="l", contract_id="c", values={"k": "v"})
    assert msgpack.unpackb(ld.to_msgpack()) == {"id": ld.id, "actor_id": "MA", "provider_id": "VP", "link_name": "l",
                                                "contract_id": "c", "values": {"k": "v"}, "deleted": False}
    assert LinkDefinition.from_msgpack(ld.to_msgpack(deleted=True)) == ld
    with pytest.raises(ValueError):
        LinkDefinition.from_msgpack(b"\xc1")
    with pytest.raises(ValueError):
        LinkDefinition.from_msgpack(msgpack.packb({"actor_id": "MA", "values": {"k": 1}}))


def test_health_response_wire() -> None:
    assert msgpack.unpackb(HealthCheckResponse().to_wire()) == {"healthy": True, "message": ""}


# --- an in-process provider --------------------------------------------------------------------------


class RecordingProvider(ProviderBase):
    """Echoes payloads; records link hooks; refuses links with value REFUSE."""

    contract_id = "test:recording"

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    async def put_link(self, ld: LinkDefinition) -> None:
        if "SLOW" in ld.values:
            await asyncio.sleep(0.3)  # a deliberately slow test double, not a wait
        if "REFUSE" in ld.values:
            raise ProviderOperationFailed("refused by test")
        self.calls.append(("put", ld.actor_id, ld.values))

    async def delete_link(self, ld: LinkDefinition) -> None:
        self.calls.append(("del", ld.actor_id, ld.values))

    async def handle(self, inv: Invocation) -> bytes:
        if inv.operation == "Test.Echo":
            return inv.msg
        return await super().handle(inv)


@pytest.fixture
async def running(nc: nats.aio.client.Client, nats_server: Any) -> AsyncIterator[tuple[ProviderEnv, RecordingProvider]]:
    env = ProviderEnv(nc, nats_server.url, RecordingProvider.contract_id)
    provider = RecordingProvider(env.host_data(links=(env.link(A="1"),)))
    stop = asyncio.Event()
    task = asyncio.create_task(serve_provider(provider, stop))
    await env.wait_healthy()
    yield env, provider
    stop.set()
    async with asyncio.timeout(5):
        await task


async def test_link_puts_dedupe_relink_and_refuse(running: tuple[ProviderEnv, RecordingProvider]) -> None:
    env, provider = running
    assert provider.calls == [("put", env.actor, {"A": "1"})]
    await env.put_link(env.link(A="1"))  # identical: ignored
    await env.put_link(env.link(A="2"))  # new values: re-linked
    refused = KeyPair.generate(KeyKind.MODULE).public_key
    await env.put_link(env.link(actor=refused, REFUSE="yes"))
    await env.del_link(env.link(A="2"))
    await env.wait_unlinked("Test.Echo", b"x")
    assert provider.calls == [("put", env.actor, {"A": "1"}), ("del", env.actor, {"A": "1"}),
                              ("put", env.actor, {"A": "2"}), ("del", env.actor, {"A": "2"})]
    resp = await env.invoke("Test.Echo", b"x", actor=refused)
    assert resp.error == f"unlinked actor: '{refused}'"


async def test_link_put_and_delete_keep_their_order(running: tuple[ProviderEnv, RecordingProvider]) -> None:
    env, provider = running
    other = KeyPair.generate(KeyKind.MODULE).public_key
    await env.put_link(env.link(actor=other, SLOW="1"))
    await env.del_link(env.link(actor=other))  # sent while the slow put is still running
    await env.put_link(env.link(actor=other, B="1"))
    await eventually(lambda: ("put", other, {"B": "1"}) in provider.calls, 5, "the last link put", interval=0.02)
    assert [c for c in provider.calls if c[1] == other] == [
        ("put", other, {"SLOW": "1"}), ("del", other, {"SLOW": "1"}), ("put", other, {"B": "1"})]


async def test_chunked_invocation_and_response(running: tuple[ProviderEnv, RecordingProvider]) -> None:
    env, _ = running
    big = bytes(range(256)) * (RESPONSE_CHUNK_THRESHOLD // 256 + 100)
    inv = env.invocation("Test.Echo", big)
    store = await _object_store(env)
    await store.put(inv.id, big)
    chunked = dataclasses.replace(inv, msg=b"")
    reply = await env.nc.request(env.topic, chunked.to_wire(), timeout=15)
    resp = InvocationResponse.from_wire(reply.data)
    assert resp.error is None and resp.msg == b"" and resp.content_length == len(big)
    assert (await store.get(f"{inv.id}-r")).data == big
    with pytest.raises(nats.js.errors.ObjectNotFoundError):
        await store.get(inv.id)  # the provider deleted the request object after reading it


async def _object_store(env: ProviderEnv) -> Any:
    js = env.nc.jetstream()
    try:
        return await js.object_store(env.lattice)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_object_store(env.lattice)


async def test_call_actor(running: tuple[ProviderEnv, RecordingProvider]) -> None:
    env, provider = running
    validator = InvocationValidator([env.cluster.public_key])
    store = await _object_store(env)
    seen: list[Invocation] = []

    async def actor(msg: Any) -> None:
        inv = Invocation.from_wire(msg.data)
        if inv.content_length and inv.content_length > len(inv.msg):
            inv = dataclasses.replace(inv, msg=(await store.get(inv.id)).data)
            await store.delete(inv.id)
        validator.validate(inv)
        seen.append(inv)
        if inv.operation == "Actor.Fail":
            await msg.respond(InvocationResponse.failure(inv.id, "nope", "").to_wire())
        elif inv.operation == "Actor.Big":
            await store.put(f"{inv.id}-r", inv.msg[::-1])
            await msg.respond(InvocationResponse.success(inv.id, b"", "", content_length=len(inv.msg)).to_wire())
        elif inv.operation == "Actor.Echo":
            await msg.respond(InvocationResponse.success(inv.id, inv.msg, "").to_wire())

    sub = await env.nc.subscribe(f"wasmbus.rpc.{env.lattice}.{env.actor}", cb=actor)
    await flush_in_order(env.nc)
    try:
        assert await provider.call_actor(env.actor, "Actor.Echo", b"hi") == b"hi"
        origin = seen[-1].origin
        assert (origin.public_key, origin.contract_id, origin.link_name) == (env.provider_key, "test:recording", "default")
        assert seen[-1].host_id == env.cluster.public_key
        big = b"0123456789" * (CHUNK_THRESHOLD // 10 + 1)
        assert await provider.call_actor(env.actor, "Actor.Big", big) == big[::-1]
        with pytest.raises(ActorCallFailed) as err:
            await provider.call_actor(env.actor, "Actor.Fail", b"")
        assert err.value.wire == "nope"
        with pytest.raises(RpcTimeout):
            await provider.call_actor(env.actor, "Actor.Ignore", b"", timeout_s=0.3)
        with pytest.raises(RpcTimeout):  # nobody serves this actor
            await provider.call_actor(KeyPair.generate(KeyKind.MODULE).public_key, "Actor.Echo", b"")
    finally:
        await sub.unsubscribe()


async def test_undecodable_invocation_gets_an_error_reply(running: tuple[ProviderEnv, RecordingProvider]) -> None:
    env, _ = running
    reply = await env.nc.request(env.topic, b"\x93\x01\x02\x03", timeout=5)
    resp = InvocationResponse.from_wire(reply.data)
    assert resp.error == "Failed to deserialize msgpack invocation"
    resp = await env.invoke("Test.Nothing", b"x")
    assert resp.error == "method not handled Test.Nothing"


async def test_tampered_invocation_refused(running: tuple[ProviderEnv, RecordingProvider]) -> None:
    env, _ = running
    inv = dataclasses.replace(env.invocation("Test.Echo", b"original"), msg=b"tampered")
    reply = await env.nc.request(env.topic, inv.to_wire(), timeout=5)
    resp = InvocationResponse.from_wire(reply.data)
    assert resp.error is not None and resp.error.startswith("Invocation hash does not match signed claims hash")
    forged = new_invocation(KeyPair.generate(KeyKind.CLUSTER), WasmCloudEntity(env.actor),
                            WasmCloudEntity(env.provider_key, "test:recording", "default"), "Test.Echo", b"x",
                            invocation_id=str(uuid.uuid4()))
    reply = await env.nc.request(env.topic, forged.to_wire(), timeout=5)
    assert InvocationResponse.from_wire(reply.data).error == \
        "Issuer of this invocation is not among the list of valid issuers"
