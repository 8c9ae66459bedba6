"""scale_actor, judged from outside the host only: the counts at every step of 0 → 200 → 0,
annotations choosing which instances a stop halts, restarts and their intensity limit, and scale
requests that overtake each other.

Everything is observed on the wire or in the OS: control requests and their acks, the CloudEvents
on `wasmbus.evt.{lattice}`, inventory, heartbeats, RPC calls to the instances, and the processes
(an instance is a process titled `ActorModule …`, as Thespian titles its actors). No test looks
inside the host, so they hold however the host creates its instances. Real nats-server, a real
host process, the echo fixture actor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest
from conftest import EventWatcher, HostProcess, eventually, fixture_actor, marked_pids, started_host
from test_core_restarts import pids_named

from hostcore.actors.template import SPARE_FROM
from hostcore.config.host import HostConfig
from hostcore.control.client import ControlClient, ControlTimeout

ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
HTTP_GET = msgpack.packb({"method": "GET", "path": "/scale", "queryString": "", "header": {}, "body": b""})


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    # Generous: inventory goes through the supervisor, which is busy while a big scale runs.
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=10.0)


def echo_ref() -> str:
    return f"file://{fixture_actor('echo.wasm')}"


def budget(instances: int) -> float:
    """A deadline for starting or stopping `instances` on a loaded 2-core machine: a safety net
    against hangs, never a speed requirement."""
    return 60.0 + 1.5 * instances


def is_echo(data: dict[str, Any]) -> bool:
    return data.get("public_key") == ECHO_KEY


# --- what the wire and the OS say -------------------------------------------------------------------

def instance_pids(host: HostProcess) -> list[int]:
    return pids_named(host.mark, "ActorModule")


def spare_pids(host: HostProcess) -> list[int]:
    return pids_named(host.mark, "ActorSpare")


def zombies_of(host: HostProcess) -> set[int]:
    """Exited but unreaped children of the host's processes (each still holds a process slot).
    Take a baseline after the host started: its launcher keeps one of its own for its lifetime."""
    parents = {str(p) for p in marked_pids(host.mark)}
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] in parents:
            found.add(int(entry.name))
    return found


def started_ids(events: EventWatcher) -> list[str]:
    return [e["data"]["instance_id"] for e in events.of_type("actor_started") if is_echo(e["data"])]


def stopped_ids(events: EventWatcher) -> list[str]:
    return [e["data"]["instance_id"] for e in events.of_type("actor_stopped") if is_echo(e["data"])]


def live_ids(events: EventWatcher) -> set[str]:
    """Instances the lattice was told about and not yet told are gone."""
    return set(started_ids(events)) - set(stopped_ids(events))


def batches(events: EventWatcher, kind: str) -> list[dict[str, Any]]:
    return [e for e in events.of_type(kind) if is_echo(e["data"])]


def start_failures(events: EventWatcher) -> list[dict[str, Any]]:
    return events.of_type("actor_start_failed") + events.of_type("actors_start_failed")


def inventory_instances(inv: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Inventory's echo instances: instance id → annotations."""
    return {i["instance_id"]: i["annotations"] for a in inv["actors"] if a["id"] == ECHO_KEY
            for i in a["instances"]}


async def settled(client: ControlClient, host: HostProcess, events: EventWatcher, n: int,
                  timeout: float = 60.0) -> dict[str, dict[str, str]]:
    """Until inventory, the events and the OS processes all say `n` instances, inventory naming
    exactly the instances that have an actor_started and no actor_stopped. Returns inventory's
    instances (id → annotations)."""
    seen: dict[str, Any] = {}

    async def agree() -> list[dict[str, dict[str, str]]] | None:
        inv = inventory_instances(await client.get_inventory(host.host_id))
        live, pids = live_ids(events), instance_pids(host)
        seen.update(inventory=len(inv), events=len(live), processes=len(pids), same_ids=set(inv) == live)
        return [inv] if len(inv) == n and set(inv) == live and len(pids) == n else None

    [inv] = await eventually(agree, timeout, lambda: f"{n} instances in inventory, events and processes ({seen})",
                             interval=0.25, ignoring=(ControlTimeout,))
    return inv


async def quiescent(client: ControlClient, host: HostProcess, events: EventWatcher, n: int,
                    timeout: float) -> dict[str, dict[str, str]]:
    """`settled` at `n`, and the host itself counts `n` live instances: a stop that matches
    nothing answers with `actors_stopped.remaining`, the instances of the key the host still has
    (those starting included), so a host still on its way to another count shows it there."""
    await settled(client, host, events, n, timeout)
    seen: dict[str, Any] = {}

    async def agree() -> list[dict[str, dict[str, str]]] | None:
        probe = {"hostcore.test/probe": uuid.uuid4().hex}
        assert (await client.stop_actor(host.host_id, ECHO_KEY, 1, probe)).accepted
        [answer] = await events.wait_for("actors_stopped", lambda d: d["annotations"] == probe, timeout=60)
        inv = inventory_instances(await client.get_inventory(host.host_id))
        seen.update(remaining=answer["data"]["remaining"], inventory=len(inv), processes=len(instance_pids(host)),
                    events=len(live_ids(events)))
        ok = (answer["data"]["remaining"] == n and len(inv) == n and set(inv) == live_ids(events)
              and len(instance_pids(host)) == n)
        return [inv] if ok else None

    [inv] = await eventually(agree, timeout, lambda: f"the host at rest with {n} instances ({seen})",
                             interval=0.5, ignoring=(ControlTimeout,))
    return inv


async def heartbeat_says(client: ControlClient, host: HostProcess, events: EventWatcher, n: int) -> None:
    """A heartbeat (one follows a ping) counts `n` echo instances."""
    async def agrees() -> bool:
        await client.ping_hosts(wait_s=0.2)
        beats = [e for e in events.of_type("host_heartbeat") if e["source"] == host.host_id]
        return bool(beats) and beats[-1]["data"]["actors"].get(ECHO_KEY, 0) == n

    await eventually(agrees, 60, lambda: f"a heartbeat counting {n} echo instances "
                     f"(last: {[e['data']['actors'] for e in events.of_type('host_heartbeat')][-1:]})", interval=0.3)


async def echo_serves(client: ControlClient, host: HostProcess, calls: int = 10) -> None:
    """`calls` RPC calls to echo, each answered by some instance (NATS spreads them)."""
    for _ in range(calls):
        resp = await client.call_actor(host.cluster_key, ECHO_KEY, "HttpServer.HandleRequest", HTTP_GET,
                                       timeout_s=10)
        assert resp.error is None, resp.error
        assert msgpack.unpackb(resp.msg)["statusCode"] == 200


def position(events: EventWatcher, event: dict[str, Any]) -> int:
    return next(i for i, e in enumerate(events.events) if e is event)


# --- (a) 0 → 200 → 0 ---------------------------------------------------------------------------------

async def scale_step(client: ControlClient, host: HostProcess, events: EventWatcher, current: int, n: int) -> None:
    """Scale echo from `current` to `n` and check every account of the count agrees afterwards."""
    n_started, n_stopped = len(started_ids(events)), len(stopped_ids(events))
    n_up, n_down = len(batches(events, "actors_started")), len(batches(events, "actors_stopped"))
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), n)).accepted
    if n > current:
        await events.wait_for("actor_started", is_echo, count=n_started + n - current, timeout=budget(n - current))
        ups = await events.wait_for("actors_started", is_echo, count=n_up + 1, timeout=60)
        batch = ups[-1]
        assert {k: batch["data"][k] for k in ("count", "image_ref", "annotations", "host_id")} == {
            "count": n - current, "image_ref": echo_ref(), "annotations": {}, "host_id": host.host_id}
        mine = [e for e in events.of_type("actor_started") if is_echo(e["data"])][n_started:]
    else:
        await events.wait_for("actor_stopped", is_echo, count=n_stopped + current - n, timeout=budget(current - n))
        downs = await events.wait_for("actors_stopped", is_echo, count=n_down + 1, timeout=60)
        batch = downs[-1]
        assert {k: batch["data"][k] for k in ("count", "remaining", "annotations", "host_id")} == {
            "count": current - n, "remaining": n, "annotations": {}, "host_id": host.host_id}
        mine = [e for e in events.of_type("actor_stopped") if is_echo(e["data"])][n_stopped:]
    # The batch event follows the per-instance events of its request (docs/compatibility.md).
    assert position(events, batch) > max(position(events, e) for e in mine)

    inv = await settled(client, host, events, n, timeout=budget(abs(n - current)))
    assert all(annotations == {} for annotations in inv.values())  # scale starts without annotations
    assert len(batches(events, "actors_started")) == n_up + (n > current), "one actors_started per request"
    assert len(batches(events, "actors_stopped")) == n_down + (n < current), "one actors_stopped per request"
    await heartbeat_says(client, host, events, n)
    if n:
        await echo_serves(client, host)


async def test_scale_0_to_200_to_0_counts_agree_at_every_step(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    zombies = zombies_of(host)
    current = 0
    for n in (50, 200, 120, 0):
        await scale_step(client, host, events, current, n)
        current = n

    started, stopped = started_ids(events), stopped_ids(events)
    assert len(started) == len(set(started)) == 200, "every start got a fresh instance id"
    assert Counter(stopped) == Counter(started), "every started instance stopped exactly once"
    assert not start_failures(events), start_failures(events)[:3]
    assert (await client.get_inventory(host.host_id))["actors"] == []
    await eventually(lambda: not instance_pids(host), 30, "no instance process left")
    await eventually(lambda: zombies_of(host) <= zombies, 30, "no unreaped instance process left")
    with pytest.raises(ControlTimeout):  # and nobody answers the actor's subject any more
        await client.call_actor(host.cluster_key, ECHO_KEY, "HttpServer.HandleRequest", HTTP_GET, timeout_s=1)


# --- (b) annotations choose what a stop halts --------------------------------------------------------

async def stop_matching(client: ControlClient, host: HostProcess, events: EventWatcher, count: int,
                        annotations: dict[str, str]) -> tuple[set[str], dict[str, Any]]:
    """`sa` with `annotations`; returns the ids it stopped (their actor_stopped come before the
    request's actors_stopped) and the actors_stopped data."""
    n_stopped, n_down = len(stopped_ids(events)), len(batches(events, "actors_stopped"))
    assert (await client.stop_actor(host.host_id, ECHO_KEY, count, annotations)).accepted
    batch = (await events.wait_for("actors_stopped", is_echo, count=n_down + 1, timeout=60))[-1]
    assert batch["data"]["annotations"] == annotations
    halted = [e for e in events.of_type("actor_stopped") if is_echo(e["data"])][n_stopped:]
    assert all(position(events, e) < position(events, batch) for e in halted)
    return {e["data"]["instance_id"] for e in halted}, batch["data"]


async def test_annotations_select_the_instances_a_stop_halts(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    team_a, team_b = {"team": "a"}, {"team": "b", "tier": "gold"}
    assert (await client.launch_actor(host.host_id, echo_ref(), 3, team_a)).accepted
    await events.wait_for("actor_started", is_echo, count=3, timeout=budget(3))
    assert (await client.launch_actor(host.host_id, echo_ref(), 3, team_b)).accepted
    await events.wait_for("actor_started", is_echo, count=6, timeout=budget(3))
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), 8)).accepted  # 2 without annotations
    await events.wait_for("actor_started", is_echo, count=8, timeout=budget(2))
    inv = await settled(client, host, events, 8)
    ids = {name: {i for i, ann in inv.items() if ann == want}
           for name, want in (("a", team_a), ("b", team_b), ("plain", {}))}
    assert [len(ids[name]) for name in ("a", "b", "plain")] == [3, 3, 2], inv
    announced = {e["data"]["instance_id"]: e["data"]["annotations"] for e in events.of_type("actor_started")}
    assert announced == inv  # actor_started carried each instance's annotations

    # Two of the three team b instances; the rest keeps running and serving.
    halted, batch = await stop_matching(client, host, events, 2, {"team": "b"})
    assert len(halted) == 2 and halted <= ids["b"], (halted, ids)
    assert (batch["count"], batch["remaining"]) == (2, 6)
    inv = await settled(client, host, events, 6)
    assert set(inv) == (ids["a"] | ids["b"] | ids["plain"]) - halted
    await echo_serves(client, host)

    # count 0: every match, only the matches.
    halted_a, batch = await stop_matching(client, host, events, 0, team_a)
    assert halted_a == ids["a"]
    assert batch["remaining"] == 3
    inv = await settled(client, host, events, 3)
    assert set(inv) == (ids["b"] - halted) | ids["plain"]
    await echo_serves(client, host)

    # Every requested annotation must match: a wrong value of one of them stops nothing.
    halted_none, batch = await stop_matching(client, host, events, 5, {"team": "b", "tier": "silver"})
    assert halted_none == set() and (batch["count"], batch["remaining"]) == (5, 3)
    # A subset of an instance's annotations is enough.
    halted_gold, batch = await stop_matching(client, host, events, 1, {"tier": "gold"})
    assert halted_gold == ids["b"] - halted and batch["remaining"] == 2
    inv = await settled(client, host, events, 2)
    assert inv == {i: {} for i in ids["plain"]}
    await echo_serves(client, host)

    stopped = [e for e in events.of_type("actor_stopped") if is_echo(e["data"])]
    assert {e["data"]["instance_id"]: e["data"]["annotations"] for e in stopped} == {
        **{i: team_a for i in ids["a"]}, **{i: team_b for i in ids["b"]}}  # actor_stopped carries them too
    assert not start_failures(events), start_failures(events)[:3]
    await heartbeat_says(client, host, events, 2)


# --- (c) restarts -------------------------------------------------------------------------------------

async def test_a_killed_instance_is_replaced(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    labels = {"app": "echo"}
    assert (await client.launch_actor(host.host_id, echo_ref(), 4, labels)).accepted
    await events.wait_for("actor_started", is_echo, count=4, timeout=budget(4))
    inv = await settled(client, host, events, 4)
    for kill in range(1, 3):
        before, pids = set(inv), instance_pids(host)
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        [gone] = (await events.wait_for("actor_stopped", is_echo, count=kill, timeout=60))[-1:]
        assert gone["data"]["instance_id"] in before and gone["data"]["annotations"] == labels
        [new] = (await events.wait_for("actor_started", is_echo, count=4 + kill, timeout=60))[-1:]
        assert new["data"]["instance_id"] not in before | set(stopped_ids(events))
        assert new["data"]["annotations"] == labels  # the replacement runs with the same request
        inv = await settled(client, host, events, 4)
        assert set(inv) == before - {gone["data"]["instance_id"]} | {new["data"]["instance_id"]}
        assert victim not in instance_pids(host)
        await echo_serves(client, host)
    assert not start_failures(events), start_failures(events)[:3]
    await heartbeat_says(client, host, events, 4)


async def test_an_actor_with_many_instances_is_replaced_by_its_spare(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    """An actor with SPARE_FROM instances here has one spare process (titled `ActorSpare`): a
    killed instance is replaced by it, a new spare follows, and fewer instances need none."""
    host = await started_host(host_factory, events)
    n = SPARE_FROM
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), n)).accepted
    await events.wait_for("actor_started", is_echo, count=n, timeout=budget(n))
    before = set(await settled(client, host, events, n))
    [spare] = await eventually(lambda: spare_pids(host), 30, f"a spare once echo runs {n} instances")
    victim = instance_pids(host)[0]
    os.kill(victim, signal.SIGKILL)
    [new] = (await events.wait_for("actor_started", is_echo, count=n + 1, timeout=60))[-1:]
    assert new["data"]["instance_id"] not in before
    inv = await settled(client, host, events, n)
    assert set(inv) == before - set(stopped_ids(events)) | {new["data"]["instance_id"]}
    assert spare in instance_pids(host) and spare not in spare_pids(host), "the spare became the replacement"
    await eventually(lambda: [p for p in spare_pids(host) if p != spare], 30, "a new spare")
    await echo_serves(client, host)
    assert len(spare_pids(host)) == 1

    await scale_step(client, host, events, n, n - 1)
    await eventually(lambda: not spare_pids(host), 30, f"no spare below {n} instances")
    await scale_step(client, host, events, n - 1, 0)
    await eventually(lambda: not instance_pids(host) and not spare_pids(host), 30, "no process left")
    assert not start_failures(events), start_failures(events)[:3]


async def test_a_spare_that_dies_with_its_template_is_reaped(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    """The spare dies with the process that forked it; nobody else knows its pid, yet it must not
    stay behind as a zombie of the host, and the instances keep running."""
    host = await started_host(host_factory, events)
    zombies = zombies_of(host)
    n = SPARE_FROM
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), n)).accepted
    await events.wait_for("actor_started", is_echo, count=n, timeout=budget(n))
    before = set(await settled(client, host, events, n))
    [spare] = await eventually(lambda: spare_pids(host), 30, f"a spare once echo runs {n} instances")
    [template] = pids_named(host.mark, "InstanceTemplate")
    os.kill(template, signal.SIGKILL)
    await eventually(lambda: not Path(f"/proc/{spare}").exists(), 30, "the spare dead and reaped")
    await eventually(lambda: zombies_of(host) <= zombies, 30, "no unreaped process left")
    assert set(await settled(client, host, events, n)) == before, "the instances kept running"
    await echo_serves(client, host)


def restart_limits() -> tuple[int, float]:
    """The host's restart intensity and period (defaults; no setting changes them): at most that
    many restarts of one actor within the period, then the next death is not restarted."""
    defaults = {f.name: f.default for f in dataclasses.fields(HostConfig)}
    return int(defaults["restart_intensity"]), float(defaults["restart_period_s"])


async def test_instances_killed_together_are_all_replaced(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    intensity, _ = restart_limits()
    n, k = intensity + 2, intensity  # as many deaths at once as the intensity allows
    host = await started_host(host_factory, events)
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), n)).accepted
    await events.wait_for("actor_started", is_echo, count=n, timeout=budget(n))
    before = set(await settled(client, host, events, n))
    victims = instance_pids(host)[:k]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    seen: dict[str, Any] = {}

    async def all_seen() -> bool:
        seen.update(actor_stopped=len(stopped_ids(events)), processes=len(instance_pids(host)),
                    inventory=len(inventory_instances(await client.get_inventory(host.host_id))))
        return seen["actor_stopped"] >= k

    await eventually(all_seen, 30, lambda: f"{k} deaths at once, each seen as actor_stopped ({seen})",
                     interval=0.25, ignoring=(ControlTimeout,))
    assert set(stopped_ids(events)) <= before
    await events.wait_for("actor_started", is_echo, count=n + k, timeout=budget(k))
    inv = await settled(client, host, events, n, timeout=budget(k))
    assert len(set(inv) - before) == k and not set(victims) & set(instance_pids(host))
    assert not start_failures(events), start_failures(events)[:3]
    await echo_serves(client, host)


async def test_restart_intensity_gives_up_with_actor_start_failed(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    intensity, period = restart_limits()
    n = intensity + 3
    host = await started_host(host_factory, events)
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), n)).accepted
    await events.wait_for("actor_started", is_echo, count=n, timeout=budget(n))
    await settled(client, host, events, n)

    # One death at a time (each seen on the wire before the next), until the host gives up.
    loop = asyncio.get_running_loop()
    kill_times: list[float] = []
    for kills, pid in enumerate(instance_pids(host), start=1):
        os.kill(pid, signal.SIGKILL)
        kill_times.append(loop.time())
        await events.wait_for("actor_stopped", is_echo, count=kills, timeout=60)
        await eventually(lambda: len(started_ids(events)) >= n + kills or events.of_type("actor_start_failed"),
                         60, f"a replacement or a refusal after death {kills}")
        if events.of_type("actor_start_failed"):
            break
    assert events.of_type("actor_start_failed"), f"still restarting after {kills} deaths"
    [failed] = events.of_type("actor_start_failed")
    assert failed["data"]["actor_ref"] == ECHO_KEY and "giving up" in failed["data"]["error"], failed["data"]
    assert kills >= intensity + 1, f"gave up after {kills - 1} restarts; {intensity} are allowed"
    if kill_times[-1] - kill_times[0] < period / 2:  # all deaths well within one period
        assert kills == intensity + 1, f"{kills - 1} restarts within {period} s; at most {intensity} allowed"
    assert len(started_ids(events)) == n + kills - 1, "the death after giving up was not replaced"

    await settled(client, host, events, n - 1, timeout=budget(kills))
    assert len(events.of_type("actor_start_failed")) == 1
    await heartbeat_says(client, host, events, n - 1)
    await echo_serves(client, host)
    # Giving up on restarts is not giving up on the actor: a request still starts one.
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), n)).accepted
    await events.wait_for("actor_started", is_echo, count=n + kills, timeout=budget(1))
    await settled(client, host, events, n)


# --- (d) overlapping scales ---------------------------------------------------------------------------

async def test_overlapping_scales_end_at_the_last_requested_count(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    host = await started_host(host_factory, events)
    zombies = zombies_of(host)
    # Back to back, without waiting: the first one from 0 has the module fetched and compiled,
    # and the others arrive while that runs (with and without the ref, as wash and wadm send them).
    for count, ref in ((10, echo_ref()), (40, ""), (5, echo_ref()), (30, "")):
        assert (await client.scale_actor(host.host_id, ECHO_KEY, ref, count)).accepted
    await quiescent(client, host, events, 30, timeout=budget(80))
    await echo_serves(client, host)

    # A scale down issued in the middle of a big scale up.
    n_started = len(started_ids(events))
    assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), 130)).accepted
    await events.wait_for("actor_started", is_echo, count=n_started + 10, timeout=budget(10))
    assert (await client.scale_actor(host.host_id, ECHO_KEY, "", 20)).accepted
    await quiescent(client, host, events, 20, timeout=budget(130))
    await heartbeat_says(client, host, events, 20)
    await echo_serves(client, host)

    started, stopped = started_ids(events), stopped_ids(events)
    assert len(started) == len(set(started)), "every start got a fresh instance id"
    assert len(stopped) == len(set(stopped)), "no instance stopped twice"
    await eventually(lambda: zombies_of(host) <= zombies, 30, "no unreaped instance process left")


async def test_a_scale_down_overtaking_a_scale_up_reports_no_phantoms_or_failures(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient) -> None:
    """Instances halted before they were announced: the lattice must not hear of instances it was
    never told had started, nor of a start failure when nothing failed (wadm reacts to both)."""
    host = await started_host(host_factory, events)
    # While the module is prepared, and again once it is cached.
    for up, down in ((10, 0), (20, 5)):
        assert (await client.scale_actor(host.host_id, ECHO_KEY, echo_ref(), up)).accepted
        assert (await client.scale_actor(host.host_id, ECHO_KEY, "", down)).accepted
        await quiescent(client, host, events, down, timeout=budget(up))
    started, stopped = started_ids(events), stopped_ids(events)
    phantoms = set(stopped) - set(started)
    failures = [(e["type"].rsplit(".", 1)[-1], e["data"]["error"]) for e in start_failures(events)]
    # Both at once, so a failure shows the whole picture.
    assert {"actor_stopped for instances never announced": len(phantoms), "start failures": failures} == {
        "actor_stopped for instances never announced": 0, "start failures": []}
