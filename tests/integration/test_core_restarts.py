"""Let it crash: the host survives the death of any one of its own processes (kill -9 of each core
role under a steady call load), stops in OTP's order, and leaves nothing behind when its launcher
is killed. Real nats-server, real fixture actors, the real httpserver provider."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest
import requests
from conftest import EventWatcher, HostProcess, describe_pid, eventually, fixture_actor, marked_pids, started_host

from hostcore.control.client import ControlClient
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.procutil import free_port, pid_alive, wait_for
from hostcore.native.par import builtin_provider_key

ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
HTTP_KEY = builtin_provider_key("httpserver")
HTTP_GET = msgpack.packb({"method": "GET", "path": "/load", "queryString": "", "header": {}, "body": b""})
# Role → the class name Thespian gives its process (setproctitle).
ROLES = {
    "control": "ControlServer",
    "events": "LatticeEvents",
    "lattice": "LatticeCache",
    "native": "NativeWorker",
    "provider_supervisor": "ProviderSupervisor",
    # Not a core role: ActorSupervisor restarts the process that forks its instances, and adopts
    # the instances it had forked. Before actor_supervisor, whose death takes the template along.
    "instance_template": "InstanceTemplate",
    "actor_supervisor": "ActorSupervisor",
}


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


def pids_named(mark: str, name: str) -> list[int]:
    pids = []
    for pid in marked_pids(mark):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(name.encode() + b" "):
                pids.append(pid)
        except OSError:
            continue
    return pids


def inventory_shape(inv: dict[str, Any]) -> tuple[Any, ...]:
    actors = sorted((a["id"], a["image_ref"], tuple(sorted(i["instance_id"] for i in a["instances"])))
                    for a in inv["actors"])
    providers = sorted((p["id"], p["link_name"], p["instance_id"]) for p in inv["providers"])
    return tuple(actors), tuple(providers)


class CallLoad:
    """Echo calls over NATS RPC and over HTTP through the provider, back to back, counting
    failures, until stopped."""

    def __init__(self, client: ControlClient, host: HostProcess, http_port: int) -> None:
        self.client, self.host, self.url = client, host, f"http://127.0.0.1:{http_port}/load"
        self.ok: Counter[str] = Counter()
        self.failures: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._http = threading.Thread(target=self._http_loop, daemon=True)
        self._rpc: asyncio.Task[None] | None = None

    def start(self) -> CallLoad:
        self._http.start()
        self._rpc = asyncio.get_running_loop().create_task(self._rpc_loop())
        return self

    def _http_loop(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    resp = session.get(self.url, timeout=3)
                    if resp.status_code == 200:
                        self.ok["http"] += 1
                    else:
                        self.failures.append(("http", f"status {resp.status_code}: {resp.text[:200]}"))
                except requests.RequestException as err:
                    self.failures.append(("http", repr(err)))
                time.sleep(0.01)  # paces the load generator, not a wait

    async def _rpc_loop(self) -> None:
        while not self._stop.is_set():
            try:
                resp = await self.client.call_actor(self.host.cluster_key, ECHO_KEY, "HttpServer.HandleRequest",
                                                    HTTP_GET, timeout_s=2)
                if resp.error is None:
                    self.ok["rpc"] += 1
                else:
                    self.failures.append(("rpc", resp.error))
            except Exception as err:  # noqa: BLE001 -- every failure is counted and reported
                self.failures.append(("rpc", repr(err)))
            await asyncio.sleep(0.01)  # paces the load generator, not a wait

    async def wait_calls(self, n: int) -> None:
        """Until both paths have answered `n` more calls (the load really ran through a period)."""
        want = {kind: self.ok[kind] + n for kind in ("http", "rpc")}
        await eventually(lambda: all(self.ok[k] >= v for k, v in want.items()), 15,
                         lambda: f"{n} more calls on each path (have {dict(self.ok)}, want {want}; "
                                 f"failures {self.failures[-3:]})", interval=0.02)

    async def stop(self) -> None:
        self._stop.set()
        if self._rpc is not None:
            await self._rpc
        await asyncio.to_thread(self._http.join, 5)


async def echo_and_http(client: ControlClient, host: HostProcess, events: EventWatcher) -> int:
    """2 echo instances, the httpserver provider linked to echo; returns the HTTP port."""
    await client.scale_actor(host.host_id, ECHO_KEY, f"file://{fixture_actor('echo.wasm')}", 2)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=2)
    assert (await client.launch_provider(host.host_id, "builtin:httpserver")).accepted
    await events.wait_for("health_check_passed", lambda d: d["public_key"] == HTTP_KEY, timeout=30)
    port = free_port()
    link = LinkDefinition(actor_id=ECHO_KEY, provider_id=HTTP_KEY, link_name="default",
                          contract_id="wasmcloud:httpserver", values={"PORT": str(port)})
    assert (await client.put_link(link)).accepted

    def serving() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    assert await asyncio.to_thread(wait_for, serving, 15), "httpserver never served"
    return port


async def until(what: str, probe: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Until the async `probe` returns something truthy; while a role restarts, requests may fail."""
    await eventually(probe, timeout_s, what, interval=0.02, ignoring=(Exception,))


async def test_every_core_role_is_restarted_and_nothing_that_ran_is_lost(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    port = await echo_and_http(client, host, events)
    before = inventory_shape(await client.get_inventory(host.host_id))
    instances = set(pids_named(host.mark, "ActorModule"))
    providers = set(pids_named(host.mark, "ProviderModule"))
    assert len(instances) == 2 and len(providers) == 1
    load = CallLoad(client, host, port).start()
    try:
        await load.wait_calls(5)
        for role, name in ROLES.items():
            [victim] = pids_named(host.mark, name)
            started_before = len(events.of_type("actor_started"))
            os.kill(victim, signal.SIGKILL)

            async def pinged() -> bool:
                return any(h["id"] == host.host_id for h in await client.ping_hosts(wait_s=0.2))

            async def restored() -> bool:
                return inventory_shape(await client.get_inventory(host.host_id)) == before

            await until(f"ping answered after kill -9 of {role}", pinged)
            await until(f"inventory restored after kill -9 of {role}", restored)
            await eventually(lambda: len(pids_named(host.mark, name)) == 1 and victim not in
                             pids_named(host.mark, name), 10, f"{role} restarted")
            await load.wait_calls(5)
            assert set(pids_named(host.mark, "ActorModule")) == instances, f"instances changed ({role})"
            assert set(pids_named(host.mark, "ProviderModule")) == providers, f"provider changed ({role})"
            assert len(events.of_type("actor_started")) == started_before, f"actor_started again ({role})"
            assert not events.of_type("provider_stopped"), role
            assert not load.failures, f"calls failed after kill -9 of {role}: {load.failures[:5]}"
    finally:
        await load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok["http"] > 0 and load.ok["rpc"] > 0

    # The restarted roles are wired to each other: a scale goes through all of them.
    await client.scale_actor(host.host_id, ECHO_KEY, "", 3)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=3)
    await client.scale_actor(host.host_id, ECHO_KEY, "", 1)
    stopped = await events.wait_for("actor_stopped", lambda d: d["public_key"] == ECHO_KEY, count=2)
    assert len({e["data"]["instance_id"] for e in stopped}) == 2
    assert wait_for(lambda: len(pids_named(host.mark, "ActorModule")) == 1, 10)
    assert "core role died; restarting it" in host.log()
    assert host.stop() == 0
    started_ids = [e["data"]["instance_id"] for e in events.of_type("actor_started")]
    assert len(started_ids) == len(set(started_ids)) == 3, started_ids


async def test_adopted_instance_that_dies_is_still_replaced(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    await client.scale_actor(host.host_id, ECHO_KEY, f"file://{fixture_actor('echo.wasm')}", 2)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=2)
    [supervisor] = pids_named(host.mark, "ActorSupervisor")
    os.kill(supervisor, signal.SIGKILL)
    assert wait_for(lambda: pids_named(host.mark, "ActorSupervisor") not in ([], [supervisor]), 10)

    async def adopted() -> bool:
        return len((await client.get_inventory(host.host_id))["actors"][0]["instances"]) == 2

    await until("instances adopted", adopted)
    victim = pids_named(host.mark, "ActorModule")[0]
    os.kill(victim, signal.SIGKILL)
    [gone] = await events.wait_for("actor_stopped", lambda d: d["public_key"] == ECHO_KEY)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=3)
    assert wait_for(lambda: len(pids_named(host.mark, "ActorModule")) == 2, 10)
    # The orphan was re-parented to HostSupervisor (the subreaper), which reaped it.
    assert wait_for(lambda: not Path(f"/proc/{victim}").exists(), 5), "dead adopted instance not reaped"
    assert gone["data"]["instance_id"]


async def test_a_role_that_crash_loops_stops_the_host_cleanly(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events, env={"HOSTCORE_TEST_CRASH_ROLE": "control"})
    await client.scale_actor(host.host_id, ECHO_KEY, f"file://{fixture_actor('echo.wasm')}", 1)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY)
    [control] = pids_named(host.mark, "ControlServer")
    os.kill(control, signal.SIGKILL)  # every restart dies at once (the test switch)
    [stopped] = await events.wait_for("host_stopped", timeout=30)
    assert "control" in stopped["data"]["reason"]
    types = [e["type"].rsplit(".", 1)[-1] for e in events.events]
    assert types.index("actor_stopped") < types.index("host_stopped")
    assert host.proc is not None and host.proc.wait(20) == 0
    assert wait_for(lambda: not marked_pids(host.mark), 10), [p for p in marked_pids(host.mark)]


async def test_stop_publishes_every_stopped_event_before_host_stopped(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    for _ in range(5):
        events.events.clear()
        host = await started_host(host_factory, events)
        await client.scale_actor(host.host_id, ECHO_KEY, f"file://{fixture_actor('echo.wasm')}", 4)
        await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=4)
        assert (await client.launch_provider(host.host_id, "builtin:httpserver")).accepted
        await events.wait_for("provider_started", lambda d: d["public_key"] == HTTP_KEY, timeout=30)
        assert (await client.stop_host(host.host_id)).accepted
        await events.wait_for("host_stopped", timeout=30)
        assert host.proc is not None and host.proc.wait(20) == 0
        mine = [e for e in events.events if e["source"] == host.host_id]
        types = [e["type"].rsplit(".", 1)[-1] for e in mine]
        last = types.index("host_stopped")
        assert types[:last].count("actor_stopped") == 4, types
        assert types[:last].count("provider_stopped") == 1, types
        assert "actor_stopped" not in types[last:] and "provider_stopped" not in types[last:], types
        assert wait_for(lambda: not marked_pids(host.mark), 5)


async def test_killed_launcher_under_control_load_leaves_nothing(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, nc: Any,
        lattice: str) -> None:
    for _ in range(5):
        events.events.clear()  # each round waits for its own host's events
        host = await started_host(host_factory, events)
        await client.scale_actor(host.host_id, ECHO_KEY, f"file://{fixture_actor('echo.wasm')}", 2)
        await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=2)
        before = marked_pids(host.mark)
        stop = asyncio.Event()

        async def hammer() -> None:  # scale requests, inventories and pings, as fast as they go
            n = 0
            while not stop.is_set():
                n += 1
                subject = f"wasmbus.ctl.{lattice}.get.{host.host_id}.inv"
                with_reply = nc.request(subject, b"", timeout=0.5)
                await asyncio.gather(with_reply, client.scale_actor(host.host_id, ECHO_KEY, "", 2 + n % 2),
                                     return_exceptions=True)

        task = asyncio.get_running_loop().create_task(hammer())
        await asyncio.sleep(0.5)  # scenario phase: the tree is busy with requests when the launcher dies
        assert host.proc is not None
        os.kill(host.proc.pid, signal.SIGKILL)
        host.proc.wait(5)
        gone = await asyncio.to_thread(wait_for, lambda: not any(pid_alive(p) for p in before + marked_pids(host.mark)), 5)
        stop.set()
        await task
        assert gone, [describe_pid(p) for p in marked_pids(host.mark)]


async def test_runaway_guest_is_cut_off_before_its_caller_gives_up(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        looping_actor: tuple[Path, str]) -> None:
    path, key = looping_actor
    host = await started_host(host_factory, events)  # WASMCLOUD_RPC_TIMEOUT_MS=2000
    await client.scale_actor(host.host_id, key, f"file://{path}", 1)
    await events.wait_for("actor_started", lambda d: d["public_key"] == key)
    # A caller with the host's RPC timeout (2 s) gets the host's answer, not a timeout of its own.
    resp = await client.call_actor(host.cluster_key, key, "Loop", b"x", timeout_s=2.0)
    assert resp.error is not None and "exceeded its time limit" in resp.error
