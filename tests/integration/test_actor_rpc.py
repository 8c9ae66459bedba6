"""Actors working together (issue 4): host calls, links, call aliases, built-ins, invocation events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest
from conftest import WAPC_HOST_CALL_IMPORTS, EventWatcher, HostProcess, eventually, fixture_actor, signed_wat_actor, started_host

from hostcore.control.client import ControlClient
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.native.claims import extract_claims
from hostcore.natsconn import flush_in_order

HTTP_GET = msgpack.packb({"method": "GET", "path": "/counter", "queryString": "", "header": {}, "body": b""})
PROVIDER = "VAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE"


def key_of(name: str) -> str:
    return extract_claims(fixture_actor(name).read_bytes()).public_key


def file_ref(path: Path) -> str:
    return f"file://{path}"


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


async def start(client: ControlClient, host: HostProcess, events: EventWatcher, path: Path, count: int = 1) -> str:
    key = extract_claims(path.read_bytes()).public_key
    await client.scale_actor(host.host_id, key, file_ref(path), count)
    await events.wait_for("actor_started", lambda d: d["public_key"] == key, count=count)
    return key


async def http_call(client: ControlClient, host: HostProcess, key: str) -> tuple[int, bytes]:
    resp = await client.call_actor(host.cluster_key, key, "HttpServer.HandleRequest", HTTP_GET, timeout_s=10)
    assert resp.error is None, resp.error
    reply = msgpack.unpackb(resp.msg)
    return reply["statusCode"], reply["body"]


async def test_randogenlogger_uses_builtins_and_logs_at_its_levels(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events, env={"WASMCLOUD_LOG_LEVEL": "debug"})
    key = await start(client, host, events, fixture_actor("randogenlogger_s.wasm"))
    status, body = await http_call(client, host, key)
    assert (status, body) == (200, b"I did it")
    def logged(level: str) -> bool:  # lines arrive through Thespian's logger process: poll
        return any(level in line and f"[{key}]" in line for line in host.log().splitlines())

    for level in ("DEBUG", "INFO", "WARNING", "ERROR"):
        await eventually(lambda: logged(level), 5, f"a {level} guest log line")


async def test_pinger_calls_ponger_by_call_alias(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    ponger = await start(client, host, events, fixture_actor("ponger_s.wasm"))
    pinger = await start(client, host, events, fixture_actor("pinger_s.wasm"))
    status, body = await http_call(client, host, pinger)
    assert (status, body) == (200, b"Ping pong")


# Actor A calls B with the namespace given in the payload (binding ""), returning B's answer.
CALLER_WAT = "(module\n" + WAPC_HOST_CALL_IMPORTS + """
  (memory (export "memory") 2)
  (data (i32.const 0) "Echo.Echo")
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (call $req (i32.const 2048) (i32.const 4096))
    (if (i32.eq
          (call $call (i32.const 0) (i32.const 0) (i32.const 4096) (local.get $len)
                      (i32.const 0) (i32.const 9) (i32.const 0) (i32.const 0))
          (i32.const 1))
      (then
        (call $rsp (i32.const 8192))
        (call $resp (i32.const 8192) (call $rlen))
        (return (i32.const 1))))
    (call $herr (i32.const 8192))
    (call $err (i32.const 8192) (call $elen))
    (i32.const 0)))
"""


async def test_actors_call_each_other_by_key_and_alias(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, tmp_path: Path) -> None:
    from conftest import LOOPING_WAT

    callee, callee_key = signed_wat_actor(LOOPING_WAT, "callee", call_alias="tests/callee")
    caller, caller_key = signed_wat_actor(CALLER_WAT, "caller")
    (tmp_path / "callee.wasm").write_bytes(callee)
    (tmp_path / "caller.wasm").write_bytes(caller)
    host = await started_host(host_factory, events)
    rpc_events = EventWatcher()
    sub = await client.nc.subscribe(f"wasmbus.rpcevt.{host.lattice}", cb=rpc_events.on_msg)
    await start(client, host, events, tmp_path / "callee.wasm")
    await start(client, host, events, tmp_path / "caller.wasm")

    by_key = await client.call_actor(host.cluster_key, caller_key, "Go", callee_key.encode(), timeout_s=10)
    assert by_key.error is None and by_key.msg == b"", by_key.error  # callee echoes its (empty) payload
    await _wait_alias(client, host, caller_key, "tests/callee")

    missing = await client.call_actor(host.cluster_key, caller_key, "Go", b"nobody/here", timeout_s=10)
    assert missing.error is not None and f"Call alias not found: nobody/here on {host.lattice}" in missing.error

    done = await rpc_events.wait_for("invocation_succeeded", lambda d: d["source"]["public_key"] == caller_key
                                     and d["dest"]["public_key"] == callee_key and d["operation"] == "Echo.Echo")
    assert done[0]["data"]["dest"]["contract_id"] is None
    await rpc_events.wait_for("invocation_failed", lambda d: d["dest"]["public_key"] == caller_key)
    await sub.unsubscribe()


async def _wait_alias(client: ControlClient, host: HostProcess, caller_key: str, alias: str) -> None:
    """The alias reaches the caller's instance through the lattice cache; retry briefly."""
    errors: list[str | None] = [None]

    async def resolved() -> bool:
        resp = await client.call_actor(host.cluster_key, caller_key, "Go", alias.encode(), timeout_s=10)
        errors[0] = resp.error
        return resp.error is None
    await eventually(resolved, 5, lambda: f"alias {alias} to resolve; last error: {errors[0]}", interval=0.1)


async def test_capability_and_link_errors_for_keyvalue_calls(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    # OTP (imports.ex identify_target): with no link, the namespace is looked up as a call alias.
    counter = await start(client, host, events, fixture_actor("kvcounter.wasm"))
    status, body = await http_call(client, host, counter)
    assert status == 500
    assert f"Call alias not found: wasmcloud:keyvalue on {host.lattice}".encode() in body, body

    unpriv = await start(client, host, events, fixture_actor("kvcounter_unpriv_s.wasm"))
    assert (await client.put_link(LinkDefinition(actor_id=unpriv, provider_id=PROVIDER, link_name="default",
                                                 contract_id="wasmcloud:keyvalue"))).accepted
    await events.wait_for("linkdef_set", lambda d: d["actor_id"] == unpriv)

    bodies = [b""]

    async def claim_error() -> bool:
        bodies[0] = (await http_call(client, host, unpriv))[1]
        return b"missing capability claim" in bodies[0]
    # the link reaches the instance asynchronously
    await eventually(claim_error, 5, lambda: f"the missing-claim error; last body: {bodies[0]!r}", interval=0.1)
    assert b"missing capability claim for wasmcloud:keyvalue" in bodies[0], bodies[0]


async def test_link_definitions_put_get_delete(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    actor = key_of("kvcounter.wasm")
    link = LinkDefinition(actor_id=actor, provider_id=PROVIDER, link_name="default",
                          contract_id="wasmcloud:keyvalue", values={"URL": "redis://127.0.0.1:6379"})
    provider_msgs: list[Any] = []

    async def on_provider_msg(msg: Any) -> None:
        provider_msgs.append((msg.subject, msgpack.unpackb(msg.data)))

    sub = await client.nc.subscribe(f"wasmbus.rpc.{host.lattice}.{PROVIDER}.default.linkdefs.*", cb=on_provider_msg)
    assert (await client.put_link(link)).accepted
    [event] = await events.wait_for("linkdef_set")
    assert event["data"] == link.to_map()
    assert await client.get_links() == [link]
    assert (await client.put_link(LinkDefinition(actor_id=actor, provider_id=PROVIDER, link_name="default",
                                                 contract_id="wasmcloud:keyvalue", values={"URL": "x"}))).accepted
    assert [l.values for l in await client.get_links()] == [{"URL": "x"}]  # same triple overwrites

    assert (await client.del_link(actor, "wasmcloud:keyvalue")).accepted
    await events.wait_for("linkdef_deleted")
    assert await client.get_links() == []
    await flush_in_order(client.nc)
    assert [s.rsplit(".", 1)[-1] for s, _ in provider_msgs] == ["put", "put", "del"]
    assert provider_msgs[-1][1]["deleted"] is True
    bad = await client.nc.request(f"wasmbus.ctl.{host.lattice}.linkdefs.put", b'{"actor_id": "x"}', timeout=5)
    assert json.loads(bad.data) == {"accepted": False, "error": "Invalid link definition put request"}
    await sub.unsubscribe()


async def test_claims_are_lattice_wide_and_survive_instances(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    key = await start(client, host, events, fixture_actor("ponger_s.wasm"))
    await client.scale_actor(host.host_id, key, "", 0)
    await events.wait_for("actor_stopped")
    claims = {c["sub"]: c for c in await client.get_claims()}
    assert claims[key]["call_alias"] == "wasmcloud/ponger"
