"""The final OTP line's wire through real hosts on a real nats-server: the 0.59 lattice-cache
migration, the v0.63 batch events and event order, links written into the bucket by another
client (as wadm does), provider start details, and chunking under a JetStream domain."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import msgpack
import nats
import pytest
from conftest import LOOPING_WAT, EventWatcher, HostProcess, eventually, fixture_actor, signed_wat_actor, started_host
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from test_chunking_policy import BIG_ECHO_WAT, FORWARD_WAT, write_actor
from test_providers import http_get

from hostcore.control.client import ControlClient
from hostcore.wire.linkdefs import LinkDefinition, link_id
from hostcore.control.migration import refmap_key
from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.claims import extract_claims
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import free_port, wait_for
from hostcore.native.par import builtin_provider_key, create_par, native_target
from hostcore.natsconn import flush_in_order

ECHO = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
ECHO_ISSUER = "ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XVKYK4BEJWGVAOOQHZMCW"
HTTP = "wasmcloud:httpserver"
KV = "wasmcloud:keyvalue"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


def file_ref(path: Path) -> str:
    return f"file://{path}"


# --- the 0.59 lattice cache --------------------------------------------------------------------------

async def write_059_cache(nc: Any, lattice: str, records: list[tuple[str, dict[str, Any]]]) -> None:
    """The stream an OTP v0.59 host keeps (jetstream/client.ex), with records on its subjects."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=f"LATTICECACHE_{lattice}", subjects=[f"lc.{lattice}.>"],
                                     max_msgs_per_subject=1, storage=StorageType.MEMORY, discard=DiscardPolicy.OLD))
    for subject, record in records:
        await js.publish(subject, json.dumps(record).encode())


async def test_a_059_lattice_cache_is_migrated_and_removed(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, nc: Any,
        lattice: str) -> None:
    kv_actor = extract_claims(fixture_actor("kvcounter.wasm").read_bytes()).public_key
    provider = builtin_provider_key("keyvalue")
    echo_claims = {"call_alias": "", "iss": ECHO_ISSUER, "name": "Echo", "caps": HTTP, "rev": "4",
                   "tags": "", "version": "0.3.4", "sub": ECHO}

    def link(actor: str, link_name: str, **extra: Any) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "actor_id": actor, "provider_id": provider, "link_name": link_name,
                "contract_id": KV, "values": {"URL": "redis://127.0.0.1:6379"}, **extra}

    kept, removed = link(kv_actor, "default"), link(ECHO, "default")
    ref = "wasmcloud.azurecr.io/echo:0.3.4"
    await write_059_cache(nc, lattice, [
        (f"lc.{lattice}.claims.{ECHO}", echo_claims),
        (f"lc.{lattice}.linkdefs.{kept['id']}", kept),
        (f"lc.{lattice}.linkdefs.{removed['id']}", removed),
        (f"lc.{lattice}.linkdefs.{removed['id']}", {**removed, "deleted": True}),  # v0.59 removal
        (f"lc.{lattice}.refmap.{base64.urlsafe_b64encode(ref.encode()).decode().rstrip('=')}",
         {"oci_url": ref, "public_key": ECHO}),
    ])
    host = await started_host(host_factory, events)

    assert await client.get_claims() == [echo_claims]
    [got] = await client.get_links()
    new_id = link_id(kv_actor, KV, "default")
    assert got.to_map() == {"id": new_id, "actor_id": kv_actor, "provider_id": provider, "link_name": "default",
                   "contract_id": KV, "values": {"URL": "redis://127.0.0.1:6379"}}
    kv = await nc.jetstream().key_value(f"LATTICEDATA_{lattice}")
    assert json.loads((await kv.get(refmap_key(ref))).value) == {"oci_url": ref, "public_key": ECHO}
    with pytest.raises(NotFoundError):
        await nc.jetstream().stream_info(f"LATTICECACHE_{lattice}")
    bucket = (await nc.jetstream().stream_info(f"KV_LATTICEDATA_{lattice}")).config
    assert (bucket.allow_direct, bucket.max_msgs_per_subject) == (True, 1)  # as v0.63.2 creates it
    assert "migrated the legacy lattice cache stream" in host.log()

    # Stored under the deterministic id, so the control interface can remove it.
    assert (await client.del_link(kv_actor, KV)).accepted
    await events.wait_for("linkdef_deleted", lambda d: d["id"] == new_id)
    assert await client.get_links() == []


# --- v0.63 batch events and event order --------------------------------------------------------------

async def test_batches_order_and_annotation_filtered_stops(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    first_heartbeat = await events.wait_for("host_heartbeat", timeout=30)
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events.events]
    assert kinds.index("host_started") < kinds.index("host_heartbeat")
    assert SEMVER.match(first_heartbeat[0]["data"]["version"])
    [ping] = await client.ping_hosts(1.0)
    assert (ping["ctl_host"], ping["rpc_host"], ping["version"]) == ("127.0.0.1", "127.0.0.1",
                                                                     first_heartbeat[0]["data"]["version"])
    assert set(first_heartbeat[0]["data"]) == {"actors", "providers", "labels", "friendly_name", "version",
                                               "uptime_seconds", "uptime_human"}

    ref = file_ref(fixture_actor("echo.wasm"))
    managed = {"wasmcloud.dev/managed-by": "wadm", "wasmcloud.dev/appspec": "echo", "wasmcloud.dev/scaler": "s1"}
    assert (await client.launch_actor(host.host_id, ref, 2, managed)).accepted
    [batch] = await events.wait_for("actors_started")
    assert batch["source"] == host.host_id
    data = batch["data"]
    assert (data["public_key"], data["image_ref"], data["count"], data["annotations"]) == (ECHO, ref, 2, managed)
    assert data["claims"]["name"] == "Echo" and data["claims"]["issuer"] == ECHO_ISSUER
    # Each instance: actor_started, then its refmap_set; the batch event after all of them.
    order = [kind for kind in (e["type"].rsplit(".", 1)[-1] for e in events.events)
             if kind in ("actor_started", "refmap_set", "actors_started")]
    assert order == ["actor_started", "refmap_set", "actor_started", "refmap_set", "actors_started"]

    assert (await client.launch_actor(host.host_id, ref, 1)).accepted  # unmanaged
    await events.wait_for("actors_started", count=2)
    ack = await client.stop_actor(host.host_id, ECHO, 2, {"wasmcloud.dev/managed-by": "wadm"})
    assert ack.accepted
    [stopped] = await events.wait_for("actors_stopped")
    assert stopped["data"] == {"public_key": ECHO, "count": 2, "remaining": 1,
                               "annotations": {"wasmcloud.dev/managed-by": "wadm"}, "host_id": host.host_id}
    assert [e["data"]["annotations"] for e in events.of_type("actor_stopped")] == [managed, managed]
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events.events]
    assert kinds.count("actor_stopped") == 2 and kinds.index("actors_stopped") > max(
        i for i, k in enumerate(kinds) if k == "actor_stopped")
    [actor] = (await client.get_inventory(host.host_id))["actors"]
    assert [i["annotations"] for i in actor["instances"]] == [{}]

    # Annotations that match nothing stop nothing, and still answer with a batch event.
    assert (await client.stop_actor(host.host_id, ECHO, 1, {"wasmcloud.dev/appspec": "other"})).accepted
    [_, nothing] = await events.wait_for("actors_stopped", count=2)
    assert (nothing["data"]["count"], nothing["data"]["remaining"]) == (1, 1)

    missing = "file:///nonexistent/actor.wasm"
    assert (await client.launch_actor(host.host_id, missing, 3, {"a": "b"})).accepted
    [failed] = await events.wait_for("actors_start_failed")
    assert (failed["data"]["image_ref"], failed["data"]["annotations"]) == (missing, {"a": "b"})
    assert failed["data"]["error"] and "public_key" in failed["data"]


async def test_scale_publishes_batches_and_unnamed_actors_have_empty_names(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, tmp_path: Path) -> None:
    module, key = signed_wat_actor(LOOPING_WAT, "")
    path = tmp_path / "unnamed.wasm"
    path.write_bytes(module)
    host = await started_host(host_factory, events)
    assert (await client.scale_actor(host.host_id, key, file_ref(path), 2)).accepted
    [started] = await events.wait_for("actors_started")
    assert (started["data"]["count"], started["data"]["annotations"]) == (2, {})
    [actor] = (await client.get_inventory(host.host_id))["actors"]
    assert actor["name"] == ""
    assert (await client.scale_actor(host.host_id, key, file_ref(path), 0)).accepted
    [stopped] = await events.wait_for("actors_stopped")
    assert (stopped["data"]["count"], stopped["data"]["remaining"]) == (2, 0)


# --- links written into the bucket by another client (wadm) ------------------------------------------

async def test_links_written_into_the_bucket_are_announced_and_reach_the_provider(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, nc: Any,
        lattice: str) -> None:
    host = await started_host(host_factory, events)
    await client.scale_actor(host.host_id, ECHO, file_ref(fixture_actor("echo.wasm")), 1)
    await events.wait_for("actor_started")
    assert (await client.launch_provider(host.host_id, "builtin:httpserver")).accepted
    provider = builtin_provider_key("httpserver")
    [healthy] = await events.wait_for("health_check_passed", lambda d: d["public_key"] == provider, timeout=30)
    assert healthy["data"] == {"public_key": provider, "link_name": "default", "contract_id": HTTP}  # wadm needs all
    to_provider: list[tuple[str, dict[str, Any]]] = []

    async def on_provider_msg(msg: Any) -> None:
        to_provider.append((msg.subject.rsplit(".", 1)[-1], msgpack.unpackb(msg.data)))
    await nc.subscribe(f"wasmbus.rpc.{lattice}.{provider}.default.linkdefs.*", cb=on_provider_msg)

    # What wadm's control client writes (control-interface 0.28 put_link): no `id` in the value.
    kv = await nc.jetstream().key_value(f"LATTICEDATA_{lattice}")
    port = free_port()
    key = f"LINKDEF_{link_id(ECHO, HTTP, 'default')}"
    await kv.put(key, json.dumps({"actor_id": ECHO, "provider_id": provider, "link_name": "default",
                                  "contract_id": HTTP, "values": {"PORT": str(port)}}).encode())
    [linkdef_set] = await events.wait_for("linkdef_set")
    assert linkdef_set["data"] == {"id": link_id(ECHO, HTTP, "default"), "actor_id": ECHO, "provider_id": provider,
                                   "link_name": "default", "contract_id": HTTP, "values": {"PORT": str(port)}}
    resp = await http_get(f"http://127.0.0.1:{port}/hello")  # the running provider got the link
    assert resp.status_code == 200
    assert ("put", {**linkdef_set["data"], "deleted": False}) in to_provider
    assert [link.id for link in await client.get_links()] == [linkdef_set["data"]["id"]]

    await kv.delete(key)
    [deleted] = await events.wait_for("linkdef_deleted")
    assert deleted["data"]["id"] == linkdef_set["data"]["id"]
    assert await asyncio.to_thread(wait_for, lambda: any(op == "del" for op, _ in to_provider), 10)
    assert await client.get_links() == []

    # A link put through the control interface is announced once (not again for its bucket echo),
    # and a purge by another client is a deletion too.
    other = KeyPair.generate(KeyKind.MODULE).public_key
    assert (await client.put_link(LinkDefinition(actor_id=other, provider_id=provider, link_name="default",
                                                 contract_id=HTTP, values={"PORT": str(free_port())}))).accepted
    await kv.purge(f"LINKDEF_{link_id(other, HTTP, 'default')}")
    await events.wait_for("linkdef_deleted", lambda d: d["actor_id"] == other)
    assert len([e for e in events.of_type("linkdef_set") if e["data"]["actor_id"] == other]) == 1


# --- providers: environment, host data, refmap_set ---------------------------------------------------

DUMP_PROVIDER = """#!/bin/sh
read hostdata
printf '%s' "$hostdata" > {out}/hostdata.b64
env > {out}/env.txt
exec sleep 300
"""


async def test_provider_start_inherits_the_environment_and_publishes_its_refmap(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    out.mkdir()
    service = KeyPair.generate(KeyKind.SERVICE)
    par = create_par(binaries={native_target(): DUMP_PROVIDER.format(out=out).encode()}, name="dumper", vendor="t",
                     capid="test:dump", issuer=KeyPair.generate(KeyKind.ACCOUNT), subject=service, compress=False)
    par_path = tmp_path / "dumper.par"
    par_path.write_bytes(par)
    host = await started_host(host_factory, events, env={"RUST_LOG": "info,hyper=warn", "HOST_region": "eu-west"})
    ref = file_ref(par_path)
    managed = {"wasmcloud.dev/managed-by": "wadm"}
    assert (await client.launch_provider(host.host_id, ref, annotations=managed)).accepted
    [started] = await events.wait_for("provider_started")
    [refmap] = await events.wait_for("refmap_set")
    assert refmap["data"] == {"oci_url": ref, "public_key": service.public_key}
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events.events]
    assert kinds.index("provider_started") < kinds.index("refmap_set")

    assert await asyncio.to_thread(wait_for, lambda: (out / "env.txt").exists() and (out / "hostdata.b64").exists(), 10)
    env = dict(line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if "=" in line)
    assert env.get("RUST_LOG") == "info,hyper=warn" and env.get("HOST_region") == "eu-west"
    assert "HOME" in env
    hostdata = json.loads(base64.b64decode((out / "hostdata.b64").read_text()))
    assert hostdata["lattice_rpc_tls"] == 0 and hostdata["provider_key"] == service.public_key

    claims = await provider_claims(client, service.public_key)  # written to the bucket after provider_started
    assert claims["caps"] == "" and claims["contract_id"] == "test:dump"
    assert started["data"]["contract_id"] == "test:dump"

    assert (await client.stop_provider(host.host_id, service.public_key, "default", "test:dump")).accepted
    [stopped] = await events.wait_for("provider_stopped")
    assert (stopped["data"]["annotations"], stopped["data"]["reason"]) == (managed, "normal")


async def provider_claims(client: ControlClient, key: str, timeout_s: float = 10.0) -> dict[str, Any]:
    async def found() -> list[dict[str, Any]]:
        return [c for c in await client.get_claims() if c["sub"] == key]
    claims: list[dict[str, Any]] = await eventually(found, timeout_s, f"claims for {key} in get.claims", interval=0.1)
    return claims[0]


# --- chunking under a JetStream domain -----------------------------------------------------------------

@pytest.fixture
def hub_and_leaf(tmp_path: Path) -> Any:
    """A hub nats-server (JetStream domain `hub`) and a leaf node with its own domain `leaf`:
    `$JS.API` on the leaf reaches the leaf's JetStream, `$JS.hub.API` the hub's."""
    leaf_port = free_port()
    hub_conf, leaf_conf = tmp_path / "hub.conf", tmp_path / "leaf.conf"
    hub_conf.write_text("jetstream { domain: hub }\n"
                        f"leafnodes {{ listen: \"127.0.0.1:{leaf_port}\" }}\n")
    leaf_conf.write_text("jetstream { domain: leaf }\n"
                         f'leafnodes {{ remotes: [ {{ url: "nats-leaf://127.0.0.1:{leaf_port}" }} ] }}\n')
    hub = EmbeddedNatsServer(tmp_path / "hub", extra_args=("-c", str(hub_conf))).start()
    leaf = EmbeddedNatsServer(tmp_path / "leaf", extra_args=("-c", str(leaf_conf))).start()
    try:
        yield hub, leaf
    finally:
        leaf.close()
        hub.close()


async def test_actor_to_actor_chunking_uses_the_js_domain(
        host_factory: Callable[..., HostProcess], hub_and_leaf: Any, lattice: str, tmp_path: Path) -> None:
    hub, leaf = hub_and_leaf
    hub_nc = await nats.connect(hub.url)
    try:
        await _leaf_connected(hub_nc, leaf)
        watcher = EventWatcher()
        await hub_nc.subscribe(f"wasmbus.evt.{lattice}", cb=watcher.on_msg)
        await flush_in_order(hub_nc)
        echo_path, echo_key = write_actor(tmp_path, "bigecho", BIG_ECHO_WAT)
        fwd_path, fwd_key = write_actor(tmp_path, "forward", FORWARD_WAT.replace("KEY", echo_key))
        host = host_factory(nats_url=leaf.url, env={"WASMCLOUD_JS_DOMAIN": "hub"}).start()
        await watcher.wait_for("host_started", timeout=30)
        client = ControlClient(hub_nc, lattice_prefix=lattice, timeout_s=5.0)  # the hub's JetStream = domain hub
        for path, key in ((echo_path, echo_key), (fwd_path, fwd_key)):
            await client.scale_actor(host.host_id, key, file_ref(path), 1)
            await watcher.wait_for("actor_started", lambda d, k=key: d["public_key"] == k)
        payload = bytes(range(256)) * 4096  # 1 MiB: chunked out by the forwarder and back by the echo
        relayed = await client.call_actor(host.cluster_key, fwd_key, "Go", payload, timeout_s=30)
        assert relayed.error is None, relayed.error
        assert relayed.msg == payload
        # Both directions went through the domain's store: none was made in the leaf's JetStream
        # (in a leaf-node topology both stores would capture the chunks, so the call alone passes).
        leaf_nc = await nats.connect(leaf.url)
        try:
            with pytest.raises(NotFoundError):
                await leaf_nc.jetstream(domain="leaf").stream_info(f"OBJ_{lattice}")
            assert (await leaf_nc.jetstream(domain="hub").stream_info(f"OBJ_{lattice}")).config.name
        finally:
            await leaf_nc.close()
    finally:
        await hub_nc.close()


async def _leaf_connected(hub_nc: Any, leaf: EmbeddedNatsServer) -> None:
    """Wait until a message published on the leaf reaches a subscriber on the hub."""
    leaf_nc = await nats.connect(leaf.url)
    try:
        inbox = hub_nc.new_inbox()
        sub = await hub_nc.subscribe(inbox)
        await flush_in_order(hub_nc)
        async def relayed() -> bool:
            await leaf_nc.publish(inbox, b"x")
            await sub.next_msg(timeout=0.1)
            return True
        await eventually(relayed, 10, "the leaf node to connect to the hub", interval=0,
                         ignoring=(nats.errors.TimeoutError,))
    finally:
        await leaf_nc.close()
