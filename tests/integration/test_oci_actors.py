"""Actors from a real OCI registry (Debian's docker-registry), through a real host (issue 3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest
from conftest import FIXTURES, EventWatcher, HostProcess, fixture_actor, started_host
from oci_registry import DockerRegistry
from test_host_spine import instance_pids

from hostcore.cli import main as hostcore_cli
from hostcore.control.client import ControlClient
from hostcore.native.claims import extract_claims
from hostcore.native.oci import WASM_LAYER_PLAIN

HTTP_GET = msgpack.packb({"method": "GET", "path": "/oci", "queryString": "", "header": {}, "body": b""})


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "private", htpasswd=("alice", "s3cret")) as reg:
        yield reg


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


async def reg_push(ref: str, path: Path, *extra: str) -> None:
    code = await asyncio.to_thread(hostcore_cli, ["reg", "push", ref, str(path), "--insecure", *extra])
    assert code == 0, f"reg push {ref} failed"


def key_of(path: Path) -> str:
    return extract_claims(path.read_bytes()).public_key


async def oci_host(host_factory: Callable[..., HostProcess], events: EventWatcher, *registries: DockerRegistry,
                   **env: str) -> HostProcess:
    insecure = ",".join(r.address for r in registries)
    return await started_host(host_factory, events, env={"WASMCLOUD_OCI_ALLOWED_INSECURE": insecure, **env})


async def test_every_fixture_actor_starts_from_its_oci_ref(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        registry: DockerRegistry) -> None:
    refs: dict[str, str] = {}
    for path in sorted(FIXTURES.glob("*.wasm")):
        refs[path.name] = f"{registry.address}/actors/{path.stem.replace('_', '-')}:0.1.0"
        await reg_push(refs[path.name], path)
    host = await oci_host(host_factory, events, registry)

    started: set[str] = set()
    for name, ref in refs.items():
        if name == "echo_wapc_call_alias_s.wasm":
            continue  # same key as echo_wapc_s.wasm: the second ref is refused (below)
        key = key_of(fixture_actor(name))
        assert (await client.scale_actor(host.host_id, key, ref, 1)).accepted
        await events.wait_for("actor_started", lambda d, k=key: d["public_key"] == k, timeout=30)
        started.add(key)

    inventory = await client.get_inventory(host.host_id)
    assert {a["id"]: a["image_ref"] for a in inventory["actors"]} == {
        key_of(fixture_actor(n)): r for n, r in refs.items() if n != "echo_wapc_call_alias_s.wasm"}
    for name, operation in (("echo.wasm", "HttpServer.HandleRequest"), ("echo_unpriv_s.wasm", "HttpServer.HandleRequest"),
                            ("randogenlogger_s.wasm", "HttpServer.HandleRequest"), ("pinger_s.wasm", "HttpServer.HandleRequest"),
                            ("echo_wapc_s.wasm", "HandleRequest")):
        resp = await client.call_actor(host.cluster_key, key_of(fixture_actor(name)), operation, HTTP_GET, timeout_s=10)
        assert resp.error is None, (name, resp.error)
        assert msgpack.unpackb(resp.msg)["statusCode"] == 200, name

    alias_ref = refs["echo_wapc_call_alias_s.wasm"]
    await client.launch_actor(host.host_id, alias_ref)
    [refused] = await events.wait_for("actor_start_failed", lambda d: d["actor_ref"] == alias_ref)
    key = key_of(fixture_actor("echo_wapc_s.wasm"))
    assert refused["data"]["error"] == (
        f"Cannot start new instance of {key} from OCI '{alias_ref}', it is already running with different "
        "OCI reference. To upgrade an actor, use live update.")
    refmaps = [e["data"] for e in events.of_type("refmap_set")]
    assert {"oci_url": refs["echo.wasm"], "public_key": key_of(fixture_actor("echo.wasm"))} in refmaps


async def test_application_wasm_layer_starts(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        registry: DockerRegistry) -> None:
    ref = f"{registry.address}/plain/echo:0.3.4"
    await reg_push(ref, fixture_actor("echo.wasm"), "--media-type", WASM_LAYER_PLAIN)
    host = await oci_host(host_factory, events, registry)
    await client.launch_actor(host.host_id, ref, 2)
    started = await events.wait_for("actor_started", count=2)
    assert {e["data"]["image_ref"] for e in started} == {ref}


async def test_private_registry_needs_credentials_from_registries_put(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        private_registry: DockerRegistry, nc: Any) -> None:
    ref = f"{private_registry.address}/private/echo:0.3.4"
    await reg_push(ref, fixture_actor("echo.wasm"), "-u", "alice", "-p", "s3cret")
    host = await oci_host(host_factory, events, private_registry)
    await client.launch_actor(host.host_id, ref)
    [failed] = await events.wait_for("actor_start_failed")
    assert "authentication required" in failed["data"]["error"].lower(), failed["data"]["error"]

    creds = {private_registry.address: {"registryType": "oci", "username": "alice", "password": "s3cret"}}
    reply = await nc.request(f"wasmbus.ctl.{host.lattice}.registries.put", json.dumps(creds).encode(), timeout=5)
    assert json.loads(reply.data) == {"accepted": True, "error": ""}
    await client.launch_actor(host.host_id, ref)
    await events.wait_for("actor_started")

    bad = await nc.request(f"wasmbus.ctl.{host.lattice}.registries.put", b"{nope", timeout=5)
    assert json.loads(bad.data) == {"accepted": False, "error": "Failed to update registry credential map"}


async def test_wrong_credentials_are_refused(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        private_registry: DockerRegistry) -> None:
    ref = f"{private_registry.address}/private/echo:0.3.4"
    await reg_push(ref, fixture_actor("echo.wasm"), "-u", "alice", "-p", "s3cret")
    host = await oci_host(host_factory, events, private_registry, OCI_REGISTRY=private_registry.address,
                          OCI_REGISTRY_USER="alice", OCI_REGISTRY_PASSWORD="wrong")
    await client.launch_actor(host.host_id, ref)
    [failed] = await events.wait_for("actor_start_failed")
    assert "rejected" in failed["data"]["error"].lower() or "denied" in failed["data"]["error"].lower(), failed


async def test_bad_references_fail_cleanly(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        registry: DockerRegistry, tmp_path: Path) -> None:
    await reg_push(f"{registry.address}/actors/echo:0.3.4", fixture_actor("echo.wasm"))
    await reg_push(f"{registry.address}/actors/echo:latest", fixture_actor("echo.wasm"))
    unsigned = tmp_path / "unsigned.wasm"
    unsigned.write_bytes(b"\0asm\x01\0\0\0")
    await reg_push(f"{registry.address}/actors/unsigned:1.0", unsigned)
    with DockerRegistry(tmp_path / "strict") as strict:  # plain HTTP, but not on the insecure list
        await reg_push(f"{strict.address}/actors/echo:0.3.4", fixture_actor("echo.wasm"))
        host = await oci_host(host_factory, events, registry)
        down = f"127.0.0.1:{_closed_port()}/actors/echo:0.3.4"
        cases = {
            f"{registry.address}/nosuch/repo:1.0": "repository unknown",
            f"{registry.address}/actors/echo:9.9.9": "manifest unknown",
            down: "unreachable",
            f"{registry.address}/actors/echo:latest": "Fetching images tagged 'latest' is currently prohibited",
            f"{registry.address}/actors/echo": "Fetching images tagged 'latest' is currently prohibited",
            f"{strict.address}/actors/echo:0.3.4": "WASMCLOUD_OCI_ALLOWED_INSECURE",
            f"{registry.address}/actors/unsigned:1.0": "No claims found in source module",
        }
        for ref, needle in cases.items():
            await client.launch_actor(host.host_id, ref)
            [failed] = await events.wait_for("actor_start_failed", lambda d, r=ref: d["actor_ref"] == r, timeout=40)
            assert needle.lower() in failed["data"]["error"].lower(), (ref, failed["data"]["error"])
    assert instance_pids(host.mark) == []
    assert (await client.get_inventory(host.host_id))["actors"] == []
    assert events.of_type("actor_started") == []


async def test_a_moved_tag_is_noticed_and_a_known_digest_is_not_downloaded_again(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        registry: DockerRegistry) -> None:
    ref = f"{registry.address}/actors/moving:1.0"
    await reg_push(ref, fixture_actor("ponger_s.wasm"))
    host = await oci_host(host_factory, events, registry)
    await client.launch_actor(host.host_id, ref)
    [first] = await events.wait_for("actor_started")
    await client.stop_actor(host.host_id, first["data"]["public_key"], 0)
    await reg_push(ref, fixture_actor("echo.wasm"))
    await client.launch_actor(host.host_id, ref)
    [_, second] = await events.wait_for("actor_started", count=2)
    assert second["data"]["public_key"] == key_of(fixture_actor("echo.wasm"))


def _closed_port() -> int:
    from hostcore.procutil import free_port
    return free_port()

