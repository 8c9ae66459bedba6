"""`ctl` and `call` against a running host, through the real command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any, Callable

from conftest import EventWatcher, HostProcess, fixture_actor, started_host

from hostcore.control.payloads import json_to_msgpack, msgpack_to_json

ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"


async def hostcore(host: HostProcess, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hostcore", *args, "--nats-url", host.nats_url, "-x", host.lattice]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=30,
                                   env={**host.env, **(env or {})})


async def test_ctl_and_call_drive_a_host(host_factory: Callable[..., HostProcess], events: EventWatcher) -> None:
    host = await started_host(host_factory, events)
    out = await hostcore(host, "ctl", "get", "hosts", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [h["id"] for h in json.loads(out.stdout)["hosts"]] == [host.host_id]

    ref = f"file://{fixture_actor('echo.wasm')}"
    out = await hostcore(host, "ctl", "scale", "actor", host.host_id, ECHO_KEY, ref, "-c", "2")
    assert out.returncode == 0 and f"Actor {ECHO_KEY} runs 2 instance(s)" in out.stdout, out.stderr
    await events.wait_for("actor_started", count=2)

    out = await hostcore(host, "ctl", "get", "inventory", host.host_id)
    assert out.returncode == 0 and ECHO_KEY in out.stdout and "Echo" in out.stdout

    request = '{"method":"GET","path":"/cli","queryString":"x=1","header":{},"body":"yo"}'
    out = await hostcore(host, "call", ECHO_KEY, "HttpServer.HandleRequest", request)
    assert out.returncode == 0, out.stderr
    reply: dict[str, Any] = json.loads(out.stdout)
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"])["path"] == "/cli"

    out = await hostcore(host, "call", ECHO_KEY, "HttpServer.HandleRequest", request,
                         env={"WASMCLOUD_CLUSTER_SEED": "SCAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HYO7Q"})
    assert out.returncode == 1
    assert "Issuer of this invocation is not among the list of valid issuers" in out.stderr

    out = await hostcore(host, "ctl", "stop", "host", host.host_id)
    assert out.returncode == 0, out.stderr
    await events.wait_for("host_stopped")


def test_ctl_without_nats_is_a_clear_error() -> None:
    out = subprocess.run([sys.executable, "-m", "hostcore", "ctl", "get", "hosts", "--nats-url",
                          "nats://127.0.0.1:1", "--timeout-ms", "300"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "cannot reach NATS" in out.stderr


def test_json_payloads_convert_like_wash_call() -> None:
    packed = json_to_msgpack('{"a": [1, "x"], "b": null}')
    assert msgpack_to_json(packed) == {"a": [1, "x"], "b": None}
    assert msgpack_to_json(b"\xc4\x02hi") == "hi"


async def test_links_auction_start_and_update_from_the_command_line(
        host_factory: Callable[..., HostProcess], events: EventWatcher, tmp_path: Any) -> None:
    from conftest import CONSTANT_WAT, LOOPING_WAT, signed_wat_actor

    from hostcore.native.nkeys import KeyKind, KeyPair

    host = await started_host(host_factory, events, env={"HOST_ZONE": "blue"})
    out = await hostcore(host, "ctl", "link", "put", ECHO_KEY, "VPROVIDER", "wasmcloud:keyvalue", "URL=redis://x")
    assert out.returncode == 0, out.stderr
    out = await hostcore(host, "ctl", "get", "links", "-o", "json")
    [link] = json.loads(out.stdout)["links"]
    assert (link["actor_id"], link["provider_id"], link["values"]) == (ECHO_KEY, "VPROVIDER", {"URL": "redis://x"})
    out = await hostcore(host, "ctl", "link", "del", ECHO_KEY, "wasmcloud:keyvalue")
    assert out.returncode == 0 and json.loads((await hostcore(host, "ctl", "get", "links", "-o", "json")).stdout) == {"links": []}

    module_key = KeyPair.generate(KeyKind.MODULE)
    paths = []
    for rev, wat in ((1, LOOPING_WAT), (2, CONSTANT_WAT)):
        module, key = signed_wat_actor(wat, "cli-updatable", module_key=module_key, rev=rev)
        paths.append(tmp_path / f"r{rev}.wasm")
        paths[-1].write_bytes(module)
    out = await hostcore(host, "ctl", "start", "actor", f"file://{paths[0]}", "--constraint", "zone=red")
    assert out.returncode == 1 and "satisfied the auction" in out.stderr
    out = await hostcore(host, "ctl", "start", "actor", f"file://{paths[0]}", "--constraint", "zone=blue")
    assert out.returncode == 0 and host.host_id in out.stdout and key in out.stdout, out.stderr
    await events.wait_for("actor_started")
    out = await hostcore(host, "ctl", "update", "actor", host.host_id, key, f"file://{paths[1]}")
    assert out.returncode == 0 and "(1 instances)" in out.stdout, out.stderr
    await events.wait_for("actor_updated")
    out = await hostcore(host, "ctl", "update", "actor", host.host_id, key, f"file://{paths[0]}")
    assert out.returncode == 1 and "not greater than the running revision" in out.stderr
