"""A lattice of several hosts on one NATS, on a NATS cluster, and across NATS restarts (issue 6)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import msgpack
import nats
import pytest
from conftest import EventWatcher, HostProcess, eventually, fixture_actor
from test_host_spine import instance_pids

from hostcore.control.client import ControlClient, ControlTimeout
from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import free_port
from hostcore.natsconn import flush_in_order

ECHO = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
# after NATS comes back: this many successful calls in a row count as recovered
STEADY_CALLS = 100
HTTP_GET = msgpack.packb({"method": "GET", "path": "/", "queryString": "", "header": {}, "body": b""})


@pytest.fixture
def cluster_key() -> KeyPair:
    return KeyPair.generate(KeyKind.CLUSTER)


async def start_hosts(host_factory: Callable[..., HostProcess], events: EventWatcher, cluster: KeyPair,
                      labels: list[dict[str, str]], nats_urls: list[str] | None = None) -> list[HostProcess]:
    """Hosts sharing one cluster key (so each trusts the others' invocations)."""
    hosts = []
    for i, host_labels in enumerate(labels):
        env = {"WASMCLOUD_CLUSTER_SEED": cluster.seed, **{f"HOST_{k.upper()}": v for k, v in host_labels.items()}}
        host = host_factory(env=env, nats_url=nats_urls[i] if nats_urls else None)
        hosts.append(host.start())
    ids = {h.host_id for h in hosts}
    try:
        await events.wait_for("host_started", lambda d: True, count=len(hosts), timeout=40)
    except pytest.fail.Exception as failed:
        logs = "\n".join(f"--- host {h.host_id}:\n{h.log()[-4000:]}" for h in hosts)
        pytest.fail(f"{failed}\n{logs}")
    assert {e["source"] for e in events.of_type("host_started")} == ids
    return hosts


async def test_three_hosts_ping_auction_spread_and_survive_a_stop(
        host_factory: Callable[..., HostProcess], events: EventWatcher, nc: Any, lattice: str,
        cluster_key: KeyPair) -> None:
    client = ControlClient(nc, lattice_prefix=lattice, timeout_s=5)
    hosts = await start_hosts(host_factory, events, cluster_key,
                              [{"zone": "east", "tier": "gold"}, {"zone": "west", "tier": "gold"}, {"zone": "east"}])
    pings = await client.ping_hosts(1.0)
    assert {p["id"] for p in pings} == {h.host_id for h in hosts}

    bids = await client.auction_actor("file://x", {"tier": "gold"})
    assert {b["host_id"] for b in bids} == {hosts[0].host_id, hosts[1].host_id}
    assert await client.auction_actor("file://x", {"zone": "north"}) == []

    ref = f"file://{fixture_actor('echo.wasm')}"
    for host in hosts[:2]:
        assert (await client.scale_actor(host.host_id, ECHO, ref, 1)).accepted
    await events.wait_for("actor_started", count=2)
    served_by: set[str] = set()
    for _ in range(40):
        resp = await client.call_actor(cluster_key, ECHO, "HttpServer.HandleRequest", HTTP_GET)
        assert resp.error is None, resp.error
        served_by.add(resp.instance_id)
    assert len(served_by) == 2, "calls were not spread over both hosts"

    hosts[0].stop()
    await events.wait_for("host_stopped", lambda d: True)
    for _ in range(10):
        resp = await client.call_actor(cluster_key, ECHO, "HttpServer.HandleRequest", HTTP_GET)
        assert resp.error is None
    assert {p["id"] for p in await client.ping_hosts(1.0)} == {hosts[1].host_id, hosts[2].host_id}
    # get.claims is answered by one host of the queue group, from the lattice-wide cache.
    assert [c["sub"] for c in await client.get_claims()] == [ECHO]


@pytest.fixture
def nats_pair(tmp_path: Path) -> Iterator[tuple[EmbeddedNatsServer, EmbeddedNatsServer]]:
    """Two nats-servers clustered over loopback routes, each with JetStream on."""
    ports = [free_port(), free_port()]
    servers = []
    for i, port in enumerate(ports):
        other = ports[1 - i]
        args = ("--cluster_name", "hc", "--cluster", f"nats://127.0.0.1:{port}",
                "--routes", f"nats://127.0.0.1:{other}", "--server_name", f"n{i}")
        servers.append(EmbeddedNatsServer(tmp_path / f"nats{i}", extra_args=args))
    for s in servers:
        s.start()
    try:
        yield servers[0], servers[1]
    finally:
        for s in servers:
            s.close()


async def test_hosts_on_two_clustered_nats_servers(
        host_factory: Callable[..., HostProcess], nats_pair: tuple[EmbeddedNatsServer, EmbeddedNatsServer],
        lattice: str, cluster_key: KeyPair) -> None:
    a, b = nats_pair
    nc_a, nc_b = await nats.connect(a.url), await nats.connect(b.url)
    try:
        watcher = EventWatcher()
        await nc_b.subscribe(f"wasmbus.evt.{lattice}", cb=watcher.on_msg)
        await flush_in_order(nc_b)
        await _routes_up(nc_a, nc_b)
        hosts = await start_hosts(host_factory, watcher, cluster_key, [{"side": "a"}, {"side": "b"}], [a.url, b.url])
        client_a = ControlClient(nc_a, lattice_prefix=lattice, timeout_s=5)
        assert {p["id"] for p in await client_a.ping_hosts(1.0)} == {h.host_id for h in hosts}
        # An actor on the host behind server b, called through server a; its events seen on b.
        await client_a.scale_actor(hosts[1].host_id, ECHO, f"file://{fixture_actor('echo.wasm')}", 1)
        await watcher.wait_for("actor_started", timeout=30)
        resp = await client_a.call_actor(cluster_key, ECHO, "HttpServer.HandleRequest", HTTP_GET)
        assert resp.error is None and msgpack.unpackb(resp.msg)["statusCode"] == 200
    finally:
        await nc_a.close()
        await nc_b.close()


async def _routes_up(nc_a: Any, nc_b: Any) -> None:
    """Wait until a message published on one server reaches a subscriber on the other."""
    got = asyncio.Event()

    async def seen(msg: Any) -> None:
        got.set()

    await nc_b.subscribe("routes.check", cb=seen)
    await flush_in_order(nc_b)
    async def routed() -> bool:
        await nc_a.publish("routes.check", b"")
        try:
            await asyncio.wait_for(got.wait(), 0.1)
            return True
        except TimeoutError:
            return False
    await eventually(routed, 10, "the two nats-servers to route a message", interval=0)


async def test_nats_restart_under_load_keeps_instances(
        host_factory: Callable[..., HostProcess], tmp_path: Path, lattice: str, cluster_key: KeyPair) -> None:
    port = free_port()
    server = EmbeddedNatsServer(tmp_path / "nats", port=port).start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        watcher = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{lattice}", cb=watcher.on_msg)
        [host] = await start_hosts(host_factory, watcher, cluster_key, [{}], [server.url])
        client = ControlClient(nc, lattice_prefix=lattice, timeout_s=1)
        await client.scale_actor(host.host_id, ECHO, f"file://{fixture_actor('echo.wasm')}", 2)
        await watcher.wait_for("actor_started", count=2)
        before = sorted(instance_pids(host.mark))
        assert len(before) == 2

        outcomes: list[tuple[float, bool]] = []
        stop = asyncio.Event()

        async def load() -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                try:
                    resp = await client.call_actor(cluster_key, ECHO, "HttpServer.HandleRequest", HTTP_GET, timeout_s=0.5)
                    outcomes.append((loop.time(), resp.error is None))
                except (ControlTimeout, nats.errors.Error, OSError):
                    outcomes.append((loop.time(), False))
                    await asyncio.sleep(0.05)  # back-off of the load generator while NATS is away

        loader = asyncio.create_task(load())
        # Timed scenario phases, not waits: 1 s of load on a live NATS, then 1.5 s with NATS down.
        await asyncio.sleep(1.0)
        server.close()
        await asyncio.sleep(1.5)
        server = EmbeddedNatsServer(tmp_path / "nats", port=port).start()
        back = asyncio.get_running_loop().time()

        def steady_after_recovery() -> bool:
            """Calls resumed, and the last STEADY_CALLS of them all succeeded."""
            after = [ok for t, ok in outcomes if t > back]
            return True in after and len(after) - after.index(True) >= STEADY_CALLS and all(after[-STEADY_CALLS:])
        try:
            await eventually(steady_after_recovery, 30, f"calls to resume and {STEADY_CALLS} in a row to succeed")
        finally:
            stop.set()
            await loader

        assert any(not ok for t, ok in outcomes if t < back), "calls kept succeeding with NATS down?"
        recovered = next(t for t, ok in outcomes if ok and t > back)
        # calls already in flight when the connection came back may still fail; none after that
        assert all(ok for t, ok in outcomes if t > recovered + 0.5), "calls failed again after recovering"
        assert sorted(instance_pids(host.mark)) == before, "instances were lost or replaced"
    finally:
        await nc.close()
        server.close()


async def test_host_waits_for_nats(host_factory: Callable[..., HostProcess], tmp_path: Path, lattice: str,
                                   cluster_key: KeyPair) -> None:
    port = free_port()
    host = host_factory(nats_url=f"nats://127.0.0.1:{port}", env={"WASMCLOUD_CLUSTER_SEED": cluster_key.seed}).start()
    await eventually(lambda: "waiting for NATS" in host.log(), 20, lambda: f"the 'waiting for NATS' line:\n{host.log()}")
    assert host.proc is not None and host.proc.poll() is None, host.log()
    with EmbeddedNatsServer(tmp_path / "late", port=port) as server:
        nc = await nats.connect(server.url)
        try:
            client = ControlClient(nc, lattice_prefix=lattice)
            async def answers() -> bool:
                return any(p["id"] == host.host_id for p in await client.ping_hosts(0.5))
            await eventually(answers, 30, lambda: f"the host to come up:\n{host.log()[-2000:]}")
        finally:
            await nc.close()
        host.stop()
