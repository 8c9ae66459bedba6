"""The host spine end to end: a real nats-server, real host processes, the real fixture actors."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest
from conftest import EventWatcher, HostProcess, fixture_actor, marked_pids, started_host

from hostcore.control.client import ControlClient, ControlTimeout
from hostcore.errors import ControlRequestRefused
from hostcore.wire.control import Ack
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import pid_alive, wait_for

ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
HTTP_GET = msgpack.packb({"method": "GET", "path": "/foo", "queryString": "a=1", "header": {}, "body": b"hi"})


def instance_pids(mark: str) -> list[int]:
    """Marked processes that are actor instances (Thespian names them after the actor class)."""
    pids = []
    for pid in marked_pids(mark):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ActorModule"):
                pids.append(pid)
        except OSError:
            continue
    return pids


def file_ref(path: Path) -> str:
    return f"file://{path}"


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


async def echo_call(client: ControlClient, host: HostProcess) -> dict[str, Any]:
    resp = await client.call_actor(host.cluster_key, ECHO_KEY, "HttpServer.HandleRequest", HTTP_GET, timeout_s=5)
    assert resp.error is None, resp.error
    return dict(msgpack.unpackb(resp.msg))


async def test_scale_call_restart_scale_down_and_stop(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    ack = await client.scale_actor(host.host_id, ECHO_KEY, file_ref(fixture_actor("echo.wasm")), 3)
    assert ack == Ack(accepted=True, error="")
    started = await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=3)
    assert len({e["data"]["instance_id"] for e in started}) == 3
    assert started[0]["data"]["claims"]["name"] == "Echo" and started[0]["data"]["api_version"] == 1
    assert len(instance_pids(host.mark)) == 3

    body = await echo_call(client, host)
    assert body["statusCode"] == 200
    assert b'"path":"/foo"' in body["body"] and b'"query_string":"a=1"' in body["body"]

    victim = instance_pids(host.mark)[0]
    os.kill(victim, signal.SIGKILL)
    await events.wait_for("actor_stopped", lambda d: d["public_key"] == ECHO_KEY)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=4)
    pids = instance_pids(host.mark)
    assert len(pids) == 3 and victim not in pids
    for _ in range(20):  # every instance answers: NATS spreads the calls over the queue group
        assert (await echo_call(client, host))["statusCode"] == 200

    ack = await client.scale_actor(host.host_id, ECHO_KEY, "", 0)
    assert ack.accepted
    await events.wait_for("actor_stopped", lambda d: d["public_key"] == ECHO_KEY, count=4)
    assert wait_for(lambda: not instance_pids(host.mark), 5), "instances still running after scale to 0"
    inventory = await client.get_inventory(host.host_id)
    assert inventory["actors"] == []

    assert (await client.stop_host(host.host_id)).accepted
    await events.wait_for("host_stopped")
    assert host.proc is not None and host.proc.wait(20) == 0
    assert wait_for(lambda: not marked_pids(host.mark), 5), "processes outlived the stopped host"


async def test_inventory_ping_and_claims_shapes(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events, env={"HOST_ZONE": "eu-1"})
    await client.launch_actor(host.host_id, file_ref(fixture_actor("echo.wasm")), 2, {"team": "a"})
    await events.wait_for("actor_started", count=2)
    inv = await client.get_inventory(host.host_id)
    assert set(inv) == {"host_id", "issuer", "labels", "friendly_name", "actors", "providers"}
    assert inv["host_id"] == host.host_id and inv["issuer"] == host.cluster_key.public_key
    assert inv["labels"]["zone"] == "eu-1" and inv["labels"]["hostcore.os"] == "linux"
    [actor] = inv["actors"]
    assert actor["id"] == ECHO_KEY and actor["name"] == "Echo"
    assert actor["image_ref"] == file_ref(fixture_actor("echo.wasm"))
    assert [i["annotations"] for i in actor["instances"]] == [{"team": "a"}] * 2
    assert all(i["revision"] == 4 and isinstance(i["instance_id"], str) for i in actor["instances"])

    [ping] = [p for p in await client.ping_hosts(1.0) if p["id"] == host.host_id]
    types = {"id": str, "issuer": str, "labels": dict, "friendly_name": str, "uptime_seconds": int,
             "uptime_human": str, "version": str, "cluster_issuers": str, "ctl_host": str,
             "prov_rpc_host": str, "rpc_host": str, "lattice_prefix": str}
    for key, kind in types.items():
        assert isinstance(ping[key], kind), key
    assert "js_domain" in ping and ping["lattice_prefix"] == host.lattice
    assert host.cluster_key.public_key in ping["cluster_issuers"].split(",")
    heartbeat = await events.wait_for("host_heartbeat", lambda d: d["actors"].get(ECHO_KEY) == 2)
    assert heartbeat[0]["source"] == host.host_id

    [claims] = await client.get_claims()
    assert claims == {"call_alias": "", "iss": "ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XVKYK4BEJWGVAOOQHZMCW",
                      "name": "Echo", "caps": "wasmcloud:httpserver", "rev": "4", "tags": "",
                      "version": "0.3.4", "sub": ECHO_KEY}

    ack = await client.stop_actor(host.host_id, ECHO_KEY, 1, {"team": "a"})
    assert ack.accepted
    inv = await client.get_inventory(host.host_id)
    assert len(inv["actors"][0]["instances"]) == 1  # `sa` answers once the instance is gone


async def test_forged_invocations_get_errors_and_instance_keeps_serving(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, nc: Any) -> None:
    host = await started_host(host_factory, events)
    await client.scale_actor(host.host_id, ECHO_KEY, file_ref(fixture_actor("echo.wasm")), 1)
    await events.wait_for("actor_started")
    stranger = KeyPair.generate(KeyKind.CLUSTER)
    resp = await client.call_actor(stranger, ECHO_KEY, "HttpServer.HandleRequest", HTTP_GET)
    assert resp.error == "Issuer of this invocation is not among the list of valid issuers"
    reply = await nc.request(f"wasmbus.rpc.{host.lattice}.{ECHO_KEY}", b"\xc1garbage", timeout=5)
    from hostcore.native.invocation import InvocationResponse
    garbage = InvocationResponse.from_wire(reply.data)
    assert garbage.error in ("Failed to deserialize msgpack invocation", "Failed to deserialize invocation")
    assert (await echo_call(client, host))["statusCode"] == 200


async def test_looping_guest_is_cut_at_the_rpc_timeout(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        looping_actor: tuple[Path, str]) -> None:
    path, key = looping_actor
    host = await started_host(host_factory, events, env={"WASMCLOUD_RPC_TIMEOUT_MS": "1000"})
    await client.scale_actor(host.host_id, key, file_ref(path), 1)
    await events.wait_for("actor_started")
    loop = asyncio.get_running_loop()
    began = loop.time()
    resp = await client.call_actor(host.cluster_key, key, "Loop", b"", timeout_s=10)
    assert resp.error and loop.time() - began < 5
    ok = await client.call_actor(host.cluster_key, key, "Echo", b"still here", timeout_s=5)
    assert ok.error is None and ok.msg == b"still here"
    assert len(instance_pids(host.mark)) == 1


async def test_malformed_control_requests_get_failure_acks(
        host_factory: Callable[..., HostProcess], events: EventWatcher, nc: Any) -> None:
    host = await started_host(host_factory, events)
    p = f"wasmbus.ctl.{host.lattice}.cmd.{host.host_id}"
    cases = {
        f"{p}.scale": (b"{not json", "Invalid scale actor JSON request"),
        f"{p}.la": (b'{"count": 1}', "Invalid launch actor JSON request"),
        f"{p}.sa": (b"[]", "Invalid request to stop actor"),
    }
    for subject, (payload, error) in cases.items():
        reply = await nc.request(subject, payload, timeout=5)
        assert Ack.from_wire(reply.data) == Ack(accepted=False, error=error), subject
    reply = await nc.request(f"{p}.frobnicate", b"{}", timeout=5)
    assert not Ack.from_wire(reply.data).accepted
    # The host survived all of that.
    assert any(h["id"] == host.host_id for h in await ControlClient(nc, lattice_prefix=host.lattice).ping_hosts(0.5))
    # As in OTP, only the subject names the host: the body's host_id is ignored.
    reply = await nc.request(f"{p}.stop", b'{"host_id": "NSOMEBODYELSE"}', timeout=5)
    assert Ack.from_wire(reply.data) == Ack(accepted=True, error="")
    await events.wait_for("host_stopped", lambda d: True)


async def test_refused_starts_publish_actor_start_failed(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, tmp_path: Path) -> None:
    host = await started_host(host_factory, events)
    await client.scale_actor(host.host_id, ECHO_KEY, "", 2)
    [failed] = await events.wait_for("actor_start_failed")
    assert failed["data"]["error"] == "Scaling actor up without an OCI reference is not currently supported"

    not_wasm = tmp_path / "notes.wasm"
    not_wasm.write_text("hello")
    await client.launch_actor(host.host_id, file_ref(not_wasm))
    await events.wait_for("actor_start_failed", lambda d: d["actor_ref"] == file_ref(not_wasm))

    await client.launch_actor(host.host_id, "bindle://example/echo/0.1.0")
    await events.wait_for("actor_start_failed", lambda d: d["actor_ref"].startswith("bindle://"))

    await client.scale_actor(host.host_id, ECHO_KEY, file_ref(fixture_actor("echo.wasm")), 1)
    await events.wait_for("actor_started")
    copy = tmp_path / "echo-copy.wasm"
    shutil.copy(fixture_actor("echo.wasm"), copy)
    await client.launch_actor(host.host_id, file_ref(copy))
    [refused] = await events.wait_for("actor_start_failed", lambda d: d["actor_ref"] == file_ref(copy))
    assert refused["data"]["error"] == (
        f"Cannot start new instance of {ECHO_KEY} from OCI '{file_ref(copy)}', it is already running with "
        "different OCI reference. To upgrade an actor, use live update.")
    assert len(instance_pids(host.mark)) == 1


async def test_file_refs_refused_unless_allowed(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events, env={"WASMCLOUD_ALLOW_FILE_LOAD": "false"})
    await client.launch_actor(host.host_id, file_ref(fixture_actor("echo.wasm")))
    [failed] = await events.wait_for("actor_start_failed")
    assert failed["data"]["error"] == "actor file loading is disabled"


async def test_killed_launcher_leaves_no_orphans(
        host_factory: Callable[..., HostProcess], events: EventWatcher, lattice: str) -> None:
    """kill -9 of `python -m hostcore` (embedded NATS): the admin, the tree, the instances and the
    nats-server all go away on their own."""
    host = host_factory(nats_url="").start()
    assert host.proc is not None

    def tree_up() -> bool:
        return len(marked_pids(host.mark)) >= 6 and "host running" in host.log()

    assert wait_for(tree_up, 30), host.log()
    before = marked_pids(host.mark)
    assert any(Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"/") and b"nats-server" in
               Path(f"/proc/{p}/cmdline").read_bytes() for p in before)
    os.kill(host.proc.pid, signal.SIGKILL)
    host.proc.wait(5)
    assert wait_for(lambda: not any(pid_alive(p) for p in before), 10), \
        f"left behind: {[p for p in before if pid_alive(p)]}"


async def test_live_update_swaps_every_instance_and_refuses_older_revisions(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, tmp_path: Path) -> None:
    from conftest import CONSTANT_WAT, LOOPING_WAT, signed_wat_actor

    module_key = KeyPair.generate(KeyKind.MODULE)
    paths = {}
    for rev, wat in ((1, LOOPING_WAT), (2, CONSTANT_WAT)):
        module, key = signed_wat_actor(wat, "updatable", module_key=module_key, rev=rev)
        paths[rev] = tmp_path / f"rev{rev}.wasm"
        paths[rev].write_bytes(module)
    host = await started_host(host_factory, events)
    await client.scale_actor(host.host_id, key, file_ref(paths[1]), 2)
    await events.wait_for("actor_started", count=2)
    assert (await client.call_actor(host.cluster_key, key, "Echo", b"one")).msg == b"one"
    pids = instance_pids(host.mark)

    ack = await client.update_actor(host.host_id, key, file_ref(paths[2]))
    assert ack == Ack(accepted=True, error="")
    updated = await events.wait_for("actor_updated", count=2)
    assert {e["data"]["revision"] for e in updated} == {2}
    for _ in range(6):
        assert (await client.call_actor(host.cluster_key, key, "Echo", b"one")).msg == b"v2"
    assert sorted(instance_pids(host.mark)) == sorted(pids)  # swapped in place, same processes
    inv = await client.get_inventory(host.host_id)
    assert inv["actors"][0]["image_ref"] == file_ref(paths[2])
    assert {i["revision"] for i in inv["actors"][0]["instances"]} == {2}

    with pytest.raises(ControlRequestRefused) as refused:
        await client.update_actor(host.host_id, key, file_ref(paths[1]))
    assert refused.value.error == ("Unable to perform live update: new revision 1 is not greater "
                                   "than the running revision 2")
    with pytest.raises(ControlRequestRefused) as refused:
        await client.update_actor(host.host_id, ECHO_KEY, file_ref(fixture_actor("echo.wasm")))
    assert "not running on this host" in refused.value.error


async def test_stopped_then_restarted_actor_is_invocable(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    """The per-key RPC subscription ends with the last instance and comes back with the next."""
    host = await started_host(host_factory, events)
    ref = file_ref(fixture_actor("echo.wasm"))
    await client.scale_actor(host.host_id, ECHO_KEY, ref, 1)
    await events.wait_for("actor_started")
    await client.scale_actor(host.host_id, ECHO_KEY, "", 0)
    await events.wait_for("actor_stopped")
    assert wait_for(lambda: not instance_pids(host.mark), 5)
    with pytest.raises(ControlTimeout):  # nobody subscribed any more: no responders
        await client.call_actor(host.cluster_key, ECHO_KEY, "HttpServer.HandleRequest", HTTP_GET, timeout_s=1)
    await client.scale_actor(host.host_id, ECHO_KEY, ref, 1)
    await events.wait_for("actor_started", count=2)
    assert (await echo_call(client, host))["statusCode"] == 200
