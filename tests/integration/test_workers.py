"""Workers joining a host's Thespian convention (issue 6): placement, crash detection, moves.

Each worker is `python -m hostcore worker --join 127.0.0.1:<host admin port>` with its own
HOSTCORE_TEST_MARK, so its instances (forked by the worker's admin) are told apart from the host's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import (
    CONSTANT_WAT,
    LOOPING_WAT,
    REPO,
    EventWatcher,
    HostProcess,
    describe_pid,
    eventually,
    fixture_actor,
    kill_marked,
    marked_pids,
    signed_wat_actor,
    started_host,
    stop_child,
)
from test_host_spine import instance_pids

from hostcore.control.client import ControlClient
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import free_port, wait_for

ECHO = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
HTTP_GET = msgpack.packb({"method": "GET", "path": "/w", "queryString": "", "header": {}, "body": b""})
# Fast convention timers for tests: a silent member is dropped after 1 s × 2 misses; the leader
# checks once per period, so a crash is noticed within period × (miss_max + 1) = 3 s.
PERIOD_S, MISS_MAX = 1, 2
DETECTION_S = PERIOD_S * (MISS_MAX + 1)
CONVENTION_ENV = {"HOSTCORE_CONVENTION_REREGISTRATION_S": str(PERIOD_S), "HOSTCORE_CONVENTION_MISS_MAX": str(MISS_MAX)}


class WorkerProcess:
    """`python -m hostcore worker` as a child process; `stop()` is SIGTERM, wait, then kill."""

    def __init__(self, workdir: Path, join_port: int, name: str) -> None:
        self.name, self.mark = name, uuid.uuid4().hex
        self.admin_port = free_port()
        self.log_path = workdir / f"worker-{name}.log"
        # PYTHONPATH: run this checkout's hostcore even if the editable install points elsewhere.
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "HOSTCORE_TEST_MARK": self.mark, "HOSTCORE_DATA_DIR": str(workdir / name),
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath, **CONVENTION_ENV}
        self.cmd = [sys.executable, "-m", "hostcore", "worker", "--join", f"127.0.0.1:{join_port}",
                    "--admin-port", str(self.admin_port), "--name", name, "--label", f"name={name}"]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as out:  # never a pipe (architecture.md Tests)
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.workdir, start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def admin_pid(self) -> int:
        title = f"MultiProcAdmin ActorAddr-(T|:{self.admin_port})".encode()
        for pid in marked_pids(self.mark):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                    return pid
            except OSError:
                continue
        raise AssertionError(f"worker {self.name} has no admin process; log:\n{self.log()[-2000:]}")

    def instances(self) -> list[int]:
        return instance_pids(self.mark)

    def kill(self) -> None:
        """kill -9 every process of this worker: launcher, admin, logger, watch, instances."""
        kill_all(self.mark)

    def stop(self, timeout: float = 20.0) -> int | None:
        return stop_child(self.proc, f"worker {self.name}", self.log, timeout)


@pytest.fixture
def worker_factory(host_factory: Callable[..., HostProcess], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Make workers; teardown (before the hosts') stops them and fails on leftover processes."""
    workers: list[WorkerProcess] = []

    def make(host: HostProcess, name: str) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, int(host.env["HOSTCORE_ADMIN_PORT"]), name)
        workers.append(worker)
        return worker.start()

    yield make
    for worker in workers:
        worker.stop()
    left = [p for w in workers for p in marked_pids(w.mark)]
    if left and not wait_for(lambda: not any(marked_pids(w.mark) for w in workers), 5.0):
        described = [describe_pid(p) for w in workers for p in marked_pids(w.mark)]
        for worker in workers:
            kill_marked(worker.mark)
        pytest.fail(f"worker processes outlived their worker: {described}\n"
                    + "\n".join(w.log()[-2000:] for w in workers))


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


def placement_env(placement: str) -> dict[str, str]:
    return {"HOSTCORE_ADMIN_PORT": str(free_port()), "HOSTCORE_PLACEMENT": placement, **CONVENTION_ENV}


async def placement_host(host_factory: Callable[..., HostProcess], events: EventWatcher, placement: str) -> HostProcess:
    return await started_host(host_factory, events, env=placement_env(placement))


async def joined(host: HostProcess, *workers: WorkerProcess, timeout: float = 20.0) -> None:
    """Wait until the host's ActorSupervisor logged each worker's arrival (no lattice event exists)."""
    def seen() -> bool:
        lines = [ln for ln in host.log().splitlines() if "worker joined" in ln]
        return all(any(f"worker_id={w.name} " in ln for ln in lines) for w in workers)
    await eventually(seen, timeout, lambda: f"workers {[w.name for w in workers]} to join; host log:\n"
                     f"{host.log()[-3000:]}\n" + "\n".join(w.log()[-1500:] for w in workers))


async def echo_ok(client: ControlClient, host: HostProcess, calls: int = 10) -> None:
    for _ in range(calls):
        resp = await client.call_actor(host.cluster_key, ECHO, "HttpServer.HandleRequest", HTTP_GET, timeout_s=5)
        assert resp.error is None, resp.error
        assert msgpack.unpackb(resp.msg)["statusCode"] == 200


def kill_all(mark: str) -> None:
    """kill -9 until nothing with `mark` is left (an admin still alive for a moment may restart
    its logger after the logger was killed)."""
    assert wait_for(lambda: not kill_marked(mark), 5), f"processes with mark {mark} survived kill -9"


def children_of(pid: int, pids: list[int]) -> bool:
    return all(Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()[1] == str(pid) for p in pids)


async def test_instances_run_on_workers_and_move_when_workers_are_killed(
        host_factory: Callable[..., HostProcess], worker_factory: Callable[..., WorkerProcess],
        events: EventWatcher, client: ControlClient) -> None:
    host = await placement_host(host_factory, events, "workers")
    a, b = worker_factory(host, "wa"), worker_factory(host, "wb")
    await joined(host, a, b)

    ack = await client.scale_actor(host.host_id, ECHO, f"file://{fixture_actor('echo.wasm')}", 2)
    assert ack.accepted, ack.error
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO, count=2)
    # One instance on each worker (least loaded first), forked by that worker's admin; none here.
    assert len(a.instances()) == 1 and len(b.instances()) == 1 and not instance_pids(host.mark)
    assert children_of(a.admin_pid(), a.instances()) and children_of(b.admin_pid(), b.instances())
    await echo_ok(client, host)

    loop = asyncio.get_running_loop()
    began = loop.time()
    a.kill()
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO, count=3, timeout=DETECTION_S + 10)
    to_other_worker = loop.time() - began
    assert len(b.instances()) == 2 and not instance_pids(host.mark)  # moved to the surviving worker
    await echo_ok(client, host)

    began = loop.time()
    b.kill()
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO, count=5, timeout=DETECTION_S + 10)
    to_host = loop.time() - began
    assert wait_for(lambda: len(instance_pids(host.mark)) == 2, 5), "instances did not land on the host"
    await echo_ok(client, host)
    stopped = events.of_type("actor_stopped")
    assert len(stopped) == 3  # every lost instance was reported stopped, then replaced
    print(f"\nworker kill -9 -> replacement actor_started: {to_other_worker:.2f} s (to the other worker), "
          f"{to_host:.2f} s (both instances, to the host); detection bound {DETECTION_S} s")
    assert to_other_worker < DETECTION_S + 2 and to_host < DETECTION_S + 2


async def test_a_stopping_worker_hands_its_instances_back_at_once(
        host_factory: Callable[..., HostProcess], worker_factory: Callable[..., WorkerProcess],
        events: EventWatcher, client: ControlClient) -> None:
    host = await placement_host(host_factory, events, "spread")
    worker = worker_factory(host, "ws")
    await joined(host, worker)
    await client.scale_actor(host.host_id, ECHO, f"file://{fixture_actor('echo.wasm')}", 2)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO, count=2)
    assert len(worker.instances()) == 1 and len(instance_pids(host.mark)) == 1  # spread: one each

    loop = asyncio.get_running_loop()
    began = loop.time()
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO, count=3, timeout=10)
    moved = loop.time() - began
    assert worker.proc.wait(20) == 0
    assert wait_for(lambda: not marked_pids(worker.mark), 5), "worker processes outlived it"
    assert len(instance_pids(host.mark)) == 2
    await echo_ok(client, host)
    print(f"\nworker SIGTERM -> replacement actor_started: {moved:.2f} s")
    assert moved < PERIOD_S * MISS_MAX, "the move waited for convention detection instead of the eviction notice"
    assert "restart intensity exceeded" not in host.log()


async def test_a_worker_drops_its_instances_when_the_host_dies(
        host_factory: Callable[..., HostProcess], worker_factory: Callable[..., WorkerProcess],
        events: EventWatcher, client: ControlClient) -> None:
    host = await placement_host(host_factory, events, "workers")
    worker = worker_factory(host, "wd")
    await joined(host, worker)
    await client.scale_actor(host.host_id, ECHO, f"file://{fixture_actor('echo.wasm')}", 1)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO)
    [instance] = worker.instances()

    kill_all(host.mark)  # kill -9 the whole host: launcher, admin, supervisors
    assert wait_for(lambda: not worker.instances(), DETECTION_S + 5), \
        f"instance {instance} outlived its host; worker log:\n{worker.log()[-2000:]}"
    assert wait_for(lambda: "host lost; waiting for it to come back" in worker.log(), 5), worker.log()[-2000:]
    assert worker.proc is not None and worker.proc.poll() is None  # the worker itself stays, to rejoin


async def test_host_stop_halts_instances_on_workers_and_live_update_reaches_them(
        host_factory: Callable[..., HostProcess], worker_factory: Callable[..., WorkerProcess],
        events: EventWatcher, client: ControlClient, tmp_path: Path) -> None:
    module_key = KeyPair.generate(KeyKind.MODULE)
    paths = {}
    for rev, wat in ((1, LOOPING_WAT), (2, CONSTANT_WAT)):
        module, key = signed_wat_actor(wat, "updatable", module_key=module_key, rev=rev)
        paths[rev] = tmp_path / f"rev{rev}.wasm"
        paths[rev].write_bytes(module)
    host = await placement_host(host_factory, events, "workers")
    worker = worker_factory(host, "wu")
    await joined(host, worker)
    await client.scale_actor(host.host_id, key, f"file://{paths[1]}", 2)
    await events.wait_for("actor_started", count=2)
    pids = sorted(worker.instances())
    assert len(pids) == 2 and not instance_pids(host.mark)
    assert (await client.call_actor(host.cluster_key, key, "Echo", b"one")).msg == b"one"

    # The new module travels to the worker with the swap (ModuleImage), the processes stay.
    assert (await client.update_actor(host.host_id, key, f"file://{paths[2]}")).accepted
    await events.wait_for("actor_updated", count=2)
    for _ in range(4):
        assert (await client.call_actor(host.cluster_key, key, "Echo", b"one")).msg == b"v2"
    assert sorted(worker.instances()) == pids

    assert (await client.stop_host(host.host_id)).accepted
    await events.wait_for("host_stopped")
    # Both stops are reported. (Seen once in ~6 runs: the second actor_stopped arrived after
    # host_stopped; the ordering is not guaranteed yet for instances on workers.)
    await events.wait_for("actor_stopped", count=2, timeout=5)
    assert host.proc is not None and host.proc.wait(20) == 0
    assert not worker.instances(), "instances on the worker outlived their host's stop"
    assert wait_for(lambda: "host lost; waiting for it to come back" in worker.log(), DETECTION_S + 5)
    assert worker.proc is not None and worker.proc.poll() is None


async def test_a_worker_started_before_its_host_joins_when_the_host_comes_up(
        host_factory: Callable[..., HostProcess], worker_factory: Callable[..., WorkerProcess],
        events: EventWatcher, client: ControlClient) -> None:
    host = host_factory(env=placement_env("workers"))
    worker = worker_factory(host, "early")
    assert wait_for(lambda: "worker running" in worker.log(), 15), worker.log()
    host.start()
    await events.wait_for("host_started", timeout=30)
    await joined(host, worker, timeout=DETECTION_S + 10)
    await client.scale_actor(host.host_id, ECHO, f"file://{fixture_actor('echo.wasm')}", 1)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO)
    assert len(worker.instances()) == 1 and not instance_pids(host.mark)
    await echo_ok(client, host, calls=3)


def test_worker_cli_rejects_a_bad_join_address(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "hostcore", "worker", "--join", "nowhere"], capture_output=True,
                         text=True, timeout=30, cwd=tmp_path)
    assert out.returncode == 2
    assert "--join: expected HOST:PORT" in out.stderr
