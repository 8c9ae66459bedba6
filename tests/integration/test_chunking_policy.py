"""Large payloads through the object store, and policy decisions (issue 4, protocol.md §4.9, §9)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import WAPC_HOST_CALL_IMPORTS, EventWatcher, HostProcess, eventually, fixture_actor, signed_wat_actor, started_host

from hostcore.control.client import ControlClient
from hostcore.native.claims import extract_claims
from hostcore.native.invocation import WasmCloudEntity
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.natsconn import flush_in_order

# Echoes its payload; 8 MiB of memory, payload at 64 KiB.
BIG_ECHO_WAT = """
(module
  (import "wasmbus" "__guest_request" (func $req (param i32 i32)))
  (import "wasmbus" "__guest_response" (func $resp (param i32 i32)))
  (memory (export "memory") 128)
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (call $req (i32.const 0) (i32.const 65536))
    (call $resp (i32.const 65536) (local.get $len))
    (i32.const 1)))
"""

# Forwards its payload to the actor whose key is at offset 0 (56 bytes) and returns the answer.
FORWARD_WAT = "(module\n" + WAPC_HOST_CALL_IMPORTS + """
  (memory (export "memory") 128)
  (data (i32.const 0) "KEY")
  (data (i32.const 64) "Echo.Echo")
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (call $req (i32.const 1024) (i32.const 65536))
    (if (i32.eq (call $call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 56)
                            (i32.const 64) (i32.const 9) (i32.const 65536) (local.get $len))
                (i32.const 1))
      (then (call $rsp (i32.const 4194304))
            (call $resp (i32.const 4194304) (call $rlen))
            (return (i32.const 1))))
    (call $herr (i32.const 2048))
    (call $err (i32.const 2048) (call $elen))
    (i32.const 0)))
"""


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


def write_actor(tmp_path: Path, name: str, wat: str, **kw: Any) -> tuple[Path, str]:
    module, key = signed_wat_actor(wat, name, **kw)
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(module)
    return path, key


async def test_two_megabyte_requests_and_responses_round_trip(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, tmp_path: Path) -> None:
    echo_path, echo_key = write_actor(tmp_path, "bigecho", BIG_ECHO_WAT)
    fwd_key_pair = KeyPair.generate(KeyKind.MODULE)
    fwd_path, fwd_key = write_actor(tmp_path, "forward", FORWARD_WAT.replace("KEY", echo_key), module_key=fwd_key_pair)
    host = await started_host(host_factory, events)
    for path, key in ((echo_path, echo_key), (fwd_path, fwd_key)):
        await client.scale_actor(host.host_id, key, f"file://{path}", 1)
        await events.wait_for("actor_started", lambda d, k=key: d["public_key"] == k)

    payload = os.urandom(2 * 1024 * 1024)
    direct = await client.call_actor(host.cluster_key, echo_key, "Echo", payload, timeout_s=30)
    assert direct.error is None and direct.msg == payload
    # actor → actor: the host call is chunked out and its answer chunked back.
    relayed = await client.call_actor(host.cluster_key, fwd_key, "Go", payload, timeout_s=30)
    assert relayed.error is None, relayed.error
    assert relayed.msg == payload


async def policy_responder(nc: Any, topic: str, decide: Callable[[dict[str, Any]], tuple[bool, str]]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def answer(msg: Any) -> None:
        request = json.loads(msg.data)
        seen.append(request)
        permitted, message = decide(request)
        await msg.respond(json.dumps({"permitted": permitted, "message": message,
                                      "requestId": request["requestId"]}).encode())

    await nc.subscribe(topic, cb=answer)
    await flush_in_order(nc)
    return seen


async def test_policy_denies_starts_and_invocations(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, nc: Any, lattice: str) -> None:
    topic = f"policy.{lattice}"
    echo = extract_claims(fixture_actor("echo.wasm").read_bytes()).public_key
    pinger = extract_claims(fixture_actor("pinger_s.wasm").read_bytes()).public_key

    def decide(req: dict[str, Any]) -> tuple[bool, str]:
        if req["action"] == "start_actor":
            return req["target"]["publicKey"] != pinger, "pinger is not welcome"
        return False, "calls are closed today"

    seen = await policy_responder(nc, topic, decide)
    host = await started_host(host_factory, events, env={"WASMCLOUD_POLICY_TOPIC": topic})
    await client.scale_actor(host.host_id, pinger, f"file://{fixture_actor('pinger_s.wasm')}", 1)
    [failed] = await events.wait_for("actor_start_failed")
    assert failed["data"]["error"] == f"Starting actor {pinger} denied: pinger is not welcome"

    await client.scale_actor(host.host_id, echo, f"file://{fixture_actor('echo.wasm')}", 1)
    await events.wait_for("actor_started")
    resp = await client.call_actor(host.cluster_key, echo, "HttpServer.HandleRequest", b"\x80")
    # The wash-style caller (a cluster key) has no claims record: denied without asking (§9.2).
    assert resp.error == "Policy denied invocation: reason not specified"
    start = next(r for r in seen if r["action"] == "start_actor" and r["target"]["publicKey"] == echo)
    assert start["host"]["publicKey"] == host.host_id and start["host"]["latticeId"] == lattice
    assert start["target"]["issuer"] == "ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XVKYK4BEJWGVAOOQHZMCW"

    # An origin with claims in the lattice cache is asked about (the echo calling itself).
    async def asked_about() -> list[str | None]:
        resp = await client.call_actor(host.cluster_key, echo, "HttpServer.HandleRequest", b"\x80",
                                       origin=WasmCloudEntity(echo))
        return [resp.error] if resp.error != "Policy denied invocation: reason not specified" else []
    [error] = await eventually(asked_about, 5, "the echo's claims to reach the lattice cache", interval=0.1)
    assert error == "Policy denied invocation: calls are closed today"
    asked = [r for r in seen if r["action"] == "perform_invocation"]
    assert asked and asked[-1]["source"]["publicKey"] == echo and asked[-1]["source"]["capabilities"] == "wasmcloud:httpserver"


async def test_policy_topic_without_responder_denies(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, lattice: str) -> None:
    host = await started_host(host_factory, events, env={"WASMCLOUD_POLICY_TOPIC": f"nobody.{lattice}"})
    echo = extract_claims(fixture_actor("echo.wasm").read_bytes()).public_key
    await client.scale_actor(host.host_id, echo, f"file://{fixture_actor('echo.wasm')}", 1)
    [failed] = await events.wait_for("actor_start_failed")
    assert failed["data"]["error"] == (f"Starting actor {echo} denied: "
                                      "No responders to policy request (policy server not listening?)")
