"""scale_actor on one host against a floor: 0 → N → 0 echo instances, N = 50, 100, 250, 500.

Setup, all in this run: a nats-server, one host (`python -m hostcore up`), the echo actor from the
fixtures (a warm-up scale to 1 and back to 0 first: module fetched, verified and compiled into the
host's .cwasm cache), and the floor (bench/_floor.py): a plain Python parent that forks one child
per instance, each loading the host's cached .cwasm with wasmtime (same engine Config),
instantiating it, connecting to the same NATS and queue-subscribing. The floor is what one OS
process per instance costs at least; every figure is also given as its ratio host/floor.

Per N, the floor first, then the host (never both up at once):
  0→N          request → the Nth `actor_started` (floor: the Nth child's "subscribed" message);
  first        request → the first `actor_started`;
  cpu/inst     busy CPU time of the whole machine during 0→N, per instance;
  PSS/inst     sum of the instances' PSS (/proc/<pid>/smaps_rollup) / N, idle, after 0→N;
  idle CPU     CPU the N idle instances burn over 2 s, in % of one core per instance;
  kill→repl    kill -9 of one instance → its replacement's `actor_started` (median of --kills);
  N→0          request → the last `actor_stopped` (floor: the last child reaped);
  gone         request → the last instance process gone (its pidfd readable: exited, memory
               returned; floor: as N→0). A host reports an instance stopped once it has drained
               and closed, and leaves unmapping it to idle CPU time, so this can come later;
  ping, inv    latency (p50 / max) of `ping.hosts` and `get.{host}.inv`, one of each in flight and
               0.5 s between them, while 0→N runs (floor: an echo request to a plain nats-py
               responder process); a probe that got no answer within 10 s counts as inf.
Each size is printed as soon as it completed; when the host does not reach N in time the run
stops there, says how far the host got, and keeps the logs.
Before the first N: the idle host's own PSS (every process of the host tree, no instance; the
nats-server is the benchmark's, not counted) against the floor parent's.

Run it under the CPU lock, on a quiet machine:
    flock -x /work/notes/cpu.lock python bench/scale.py [--sizes 50,100] [--quick] [--json PATH|-] [--keep-logs]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from _host import (
    ECHO,
    ECHO_KEY,
    REPO,
    BenchEnv,
    BenchFailed,
    EventWatcher,
    Host,
    code_note,
    collector_paused,
    machine_busy_s,
    median,
    percentile,
    proc_cpu_s,
    rollup,
)
from hostcore.wire import subjects
from hostcore.actors.instance_process import INSTANCE_TITLE, SPARE_TITLE, TITLES
from hostcore.control.client import ControlClient
from hostcore.procutil import set_pdeathsig

SIZES = (50, 100, 250, 500)
TARGETS = {"up_ms_per_inst": 10.0, "pss_mb": 6.0, "kill_ms": 20.0, "down_s_500": 1.0, "probe_ms": 50.0,
           "idle_host_mb": 100.0}  # the goals; printed, never asserted
SETTLE_S = 1.0  # after 0→N, before reading PSS: let the last starts finish their first allocations
IDLE_WINDOW_S = 2.0
PROBE_GAP_S = 0.5  # one probe of each kind in flight, then this pause: each ping also makes the host
# publish a heartbeat (an inventory round through the ActorSupervisor), so probing harder becomes the load


@dataclass
class Round:
    """One N for one target (host or floor). Times in seconds, memory in MB."""

    n: int
    up_s: float = float("nan")
    first_s: float = float("nan")
    cpu_s: float = float("nan")
    pss_mb: float = float("nan")
    pss_anon_mb: float = float("nan")
    idle_cpu_pct: float = float("nan")  # CPU of the N idle instances, % of one core per instance
    kill_s: list[float] = field(default_factory=list)
    down_s: float = float("nan")
    gone_s: float = float("nan")  # the last instance process gone (floor: as down_s)
    ping_ms: list[float] = field(default_factory=list)
    inv_ms: list[float] = field(default_factory=list)


# --- /proc ---------------------------------------------------------------------------------------


def pss_mb(pids: list[int], key: str = "Pss") -> float:
    return sum(rollup(p).get(key, 0) for p in pids) / 1024


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def idle_cpu_pct(pids: list[int], window_s: float = IDLE_WINDOW_S) -> float:
    """CPU the idle `pids` burn together over `window_s`, in % of one core per process."""
    before = sum(proc_cpu_s(p) for p in pids)
    time.sleep(window_s)
    return (sum(proc_cpu_s(p) for p in pids) - before) / window_s * 100 / max(len(pids), 1)


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def instance_pids(env: BenchEnv) -> list[int]:
    """The host's ActorModule processes (Thespian titles each process after its actor)."""
    return [p for p in env.host_tree() if title(p).startswith(INSTANCE_TITLE)]


def spare_pids(env: BenchEnv) -> list[int]:
    """The template's spares (an instance forked ahead of time, counted with the instances)."""
    return [p for p in env.host_tree() if title(p).startswith(SPARE_TITLE)]


def host_own_pids(env: BenchEnv, floor_pids: set[int]) -> list[int]:
    return [p for p in env.host_tree(exclude=floor_pids) if not title(p).startswith(TITLES)]


# --- probes (ping / inventory latency while a scale runs) ----------------------------------------


async def probe_loop(request: Any, out: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            await request()
            out.append((time.perf_counter() - t0) * 1000)
        except Exception:  # noqa: BLE001 -- a lost probe counts as the timeout
            out.append(float("inf"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROBE_GAP_S)


# --- the floor -----------------------------------------------------------------------------------


class Floor:
    """bench/_floor.py parent + responder, driven over the parent's stdin/stdout."""

    def __init__(self, env: BenchEnv, nc: NatsClient, cwasm: Path) -> None:
        self.env, self.nc = env, nc
        self.subject = f"floor.{env.run}.rpc"
        self.started_subject = f"floor.{env.run}.started"
        self.ping_subject = f"floor.{env.run}.ping"
        self.started: list[tuple[float, int]] = []  # (arrival perf_counter, pid)
        self.changed = asyncio.Condition()
        script = str(REPO / "bench" / "_floor.py")
        log = open(env.workdir / "floor.log", "ab")  # noqa: SIM115 -- kept for the process lifetime
        self.proc = subprocess.Popen(
            [sys.executable, script, "parent", str(cwasm), env.nats.url, self.subject, self.started_subject],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env.env, preexec_fn=set_pdeathsig)
        self.responder = env.popen([sys.executable, script, "responder", env.nats.url, self.ping_subject],
                                   "floor-responder.log")

    async def subscribe(self) -> None:
        async def on_started(msg: Msg) -> None:
            arrived = time.perf_counter()
            async with self.changed:
                self.started.append((arrived, int(msg.data)))
                self.changed.notify_all()
        await self.nc.subscribe(self.started_subject, cb=on_started)
        await self.nc.flush()

    async def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return await self.read()

    async def read(self) -> str:
        """The parent's next line."""
        assert self.proc.stdout is not None
        reply = await asyncio.to_thread(self.proc.stdout.readline)
        if not reply:
            raise BenchFailed(f"floor parent exited ({self.proc.poll()}); see {self.env.workdir / 'floor.log'}")
        return reply.decode().strip()

    async def wait_started(self, since: int, count: int, timeout_s: float = 120.0) -> list[float]:
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(lambda: len(self.started) - since >= count)
        return [t for t, _ in self.started[since:since + count]]

    def pids(self) -> list[int]:
        """The parent's live children."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [p for p in map(int, text.split()) if proc_state(p) not in ("Z", "")]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.responder.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.responder.wait(10)


async def floor_round(floor: Floor, n: int, kills: int) -> Round:
    r = Round(n=n)
    since = len(floor.started)
    stop = asyncio.Event()
    probe = asyncio.create_task(probe_loop(lambda: floor.nc.request(floor.ping_subject, b"p", timeout=10), r.ping_ms, stop))
    busy0 = machine_busy_s()
    t0 = time.perf_counter()
    await floor.command(f"scale {n}")
    arrivals = await floor.wait_started(since, n)
    r.up_s, r.first_s = arrivals[-1] - t0, arrivals[0] - t0
    r.cpu_s = machine_busy_s() - busy0
    stop.set()
    await probe
    await asyncio.sleep(SETTLE_S)
    pids = floor.pids()
    if len(pids) != n:
        raise BenchFailed(f"floor: {len(pids)} children at N={n}")
    r.pss_mb, r.pss_anon_mb = pss_mb(pids) / n, pss_mb(pids, "Pss_Anon") / n
    r.idle_cpu_pct = await asyncio.to_thread(idle_cpu_pct, pids)
    for _ in range(kills):
        victim = random.choice(floor.pids())
        mark = len(floor.started)
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        [arrived] = await floor.wait_started(mark, 1, timeout_s=30)
        r.kill_s.append(arrived - t0)
        await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    reply = await floor.command("scale 0")
    if reply == "ok":
        reply = await floor.read()  # "stopped" follows the last reap
    if reply != "stopped":
        raise BenchFailed(f"floor scale 0: {reply!r}")
    r.down_s = r.gone_s = time.perf_counter() - t0
    return r


# --- the host ------------------------------------------------------------------------------------


async def host_round(env: BenchEnv, host: Host, client: ControlClient, watcher: EventWatcher, n: int,
                     kills: int, floor_pids: set[int]) -> Round:
    r = Round(n=n)
    ref = f"file://{ECHO}"
    nc = client.nc
    stop = asyncio.Event()
    ping_subject = subjects.ping_hosts(client.prefix)
    probes = [
        asyncio.create_task(probe_loop(lambda: nc.request(ping_subject, b"", timeout=10), r.ping_ms, stop)),
        asyncio.create_task(probe_loop(lambda: client.get_inventory(host.host_id), r.inv_ms, stop)),
    ]
    since = watcher.mark()
    busy0 = machine_busy_s()
    t0 = time.perf_counter()
    ack = await client.scale_actor(host.host_id, ECHO_KEY, ref, n)
    if not ack.accepted:
        raise BenchFailed(f"scale {n} refused: {ack.error}")
    started = await watcher.wait_for("actor_started", host, count=n, since=since, timeout_s=60 + n * 0.3)
    r.up_s, r.first_s = started[-1].arrived - t0, started[0].arrived - t0
    r.cpu_s = machine_busy_s() - busy0
    stop.set()
    await asyncio.gather(*probes)
    await asyncio.sleep(SETTLE_S)
    pids = instance_pids(env)
    if len(pids) != n:
        raise BenchFailed(f"host: {len(pids)} ActorModule processes at N={n}")
    # Spares are paid for by the instances: their memory counts, their number does not.
    r.pss_mb, r.pss_anon_mb = pss_mb(pids + spare_pids(env)) / n, pss_mb(pids + spare_pids(env), "Pss_Anon") / n
    r.idle_cpu_pct = await asyncio.to_thread(idle_cpu_pct, pids)
    for _ in range(kills):
        victim = random.choice(instance_pids(env))
        mark = watcher.mark()
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        [restarted] = await watcher.wait_for("actor_started", host, since=mark, timeout_s=30)
        r.kill_s.append(restarted.arrived - t0)
        await asyncio.sleep(0.2)
    since = watcher.mark()
    pidfds = [os.pidfd_open(pid) for pid in instance_pids(env)]
    t0 = time.perf_counter()
    ack = await client.scale_actor(host.host_id, ECHO_KEY, ref, 0)
    if not ack.accepted:
        raise BenchFailed(f"scale 0 refused: {ack.error}")
    gone = asyncio.ensure_future(all_readable(pidfds))
    stopped = await watcher.wait_for("actor_stopped", host, count=n, since=since, timeout_s=60 + n * 0.1)
    r.down_s = stopped[-1].arrived - t0
    try:
        r.gone_s = await asyncio.wait_for(gone, 10) - t0
    except asyncio.TimeoutError:
        raise BenchFailed(f"host: {len(instance_pids(env))} ActorModule processes left after scale 0") from None
    finally:
        for fd in pidfds:
            os.close(fd)
    return r


async def all_readable(fds: list[int]) -> float:
    """When the last of `fds` (pidfds) became readable, on the perf_counter clock."""
    loop = asyncio.get_running_loop()
    left, done = set(fds), loop.create_future()

    def readable(fd: int) -> None:
        loop.remove_reader(fd)
        left.discard(fd)
        if not left and not done.done():
            done.set_result(time.perf_counter())

    for fd in fds:
        loop.add_reader(fd, readable, fd)
    if not fds:
        return time.perf_counter()
    try:
        return await done
    finally:
        for fd in left:
            loop.remove_reader(fd)


# --- report --------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.1f}x" if b and b == b and a == a else "    -"


def lat(values: list[float]) -> tuple[float, float]:
    s = sorted(values)
    return (percentile(s, 0.5), s[-1]) if s else (float("nan"), float("nan"))


def report_idle(host_idle: dict[str, Any], floor_idle_mb: float) -> None:
    print(code_note())
    print(f"idle host PSS {host_idle['pss_mb']:.1f} MB over {host_idle['processes']} processes "
          f"({host_idle['by_role']}); floor parent {floor_idle_mb:.1f} MB = {ratio(host_idle['pss_mb'], floor_idle_mb)}"
          f"  [goal <= {TARGETS['idle_host_mb']:g} MB]")
    print(f"{'N':>4} {'figure':<15} {'host':>12} {'floor':>12} {'ratio':>7}   goal", flush=True)


def report_round(h: Round, f: Round) -> None:
    """The rows of one N (printed as soon as it completed: a later size may not)."""
    n = h.n

    def line(name: str, hv: float, fv: float, unit: str, fmt: str = "{:9.1f}", goal: str = "") -> None:
        print(f"{n:>4} {name:<15} {fmt.format(hv)} {unit:<2} {fmt.format(fv)} {unit:<2} {ratio(hv, fv):>7}   {goal}")

    line("0->N", h.up_s * 1000, f.up_s * 1000, "ms", goal=f"<= {TARGETS['up_ms_per_inst'] * n:g} ms, <= 1.5x floor")
    line("  per instance", h.up_s * 1000 / n, f.up_s * 1000 / n, "ms", "{:9.2f}")
    line("first started", h.first_s * 1000, f.first_s * 1000, "ms")
    line("cpu/instance", h.cpu_s * 1000 / n, f.cpu_s * 1000 / n, "ms", "{:9.1f}", "whole machine during 0->N")
    line("PSS/instance", h.pss_mb, f.pss_mb, "MB", "{:9.2f}", f"<= {TARGETS['pss_mb']:g} MB")
    line("  anon/instance", h.pss_anon_mb, f.pss_anon_mb, "MB", "{:9.2f}")
    line("idle CPU/inst", h.idle_cpu_pct, f.idle_cpu_pct, "% ", "{:9.2f}", "% of one core, per idle instance")
    line("kill->repl p50", median(h.kill_s) * 1000, median(f.kill_s) * 1000, "ms",
         goal=f"<= {TARGETS['kill_ms']:g} ms ({len(h.kill_s)} kills)")
    line("N->0", h.down_s * 1000, f.down_s * 1000, "ms",
         goal=f"<= {TARGETS['down_s_500'] * 1000:g} ms at 500" if n == 500 else "")
    line("  gone", h.gone_s * 1000, f.gone_s * 1000, "ms", goal="the last instance process ended")
    hp, fp, hi = lat(h.ping_ms), lat(f.ping_ms), lat(h.inv_ms)
    line("ping p50", hp[0], fp[0], "ms", goal=f"n={len(h.ping_ms)} (floor n={len(f.ping_ms)})")
    line("ping max", hp[1], fp[1], "ms", goal=f"<= {TARGETS['probe_ms']:g} ms")
    line("inventory p50", hi[0], fp[0], "ms", goal=f"n={len(h.inv_ms)}")
    line("inventory max", hi[1], fp[1], "ms", goal=f"<= {TARGETS['probe_ms']:g} ms", )
    sys.stdout.flush()


# --- main ----------------------------------------------------------------------------------------


async def run(sizes: list[int], kills: int, keep_logs: bool, json_path: str | None) -> None:
    with BenchEnv("scale", keep_logs) as env:
        host = env.host()
        nc = await nats.connect(env.nats.url)
        watcher = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=watcher.on_msg, pending_msgs_limit=1 << 20)
        client = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=10.0)
        host.start()
        await watcher.wait_for("host_started", host)
        # warm-up: fetch, verify, compile into the host's cache
        await client.scale_actor(host.host_id, ECHO_KEY, f"file://{ECHO}", 1)
        await watcher.wait_for("actor_started", host)
        since = watcher.mark()
        await client.scale_actor(host.host_id, ECHO_KEY, f"file://{ECHO}", 0)
        await watcher.wait_for("actor_stopped", host, since=since)
        cwasms = sorted((host.cache_dir / "cwasm").glob("*.cwasm"))
        if len(cwasms) != 1:
            raise BenchFailed(f"expected one cached .cwasm, found {cwasms}")
        floor = Floor(env, nc, cwasms[0])
        try:
            await floor.subscribe()
            await floor.command("pids")  # the parent is up and has imported wasmtime + nats
            await asyncio.sleep(SETTLE_S)
            floor_pids = {floor.proc.pid, floor.responder.pid}
            own = host_own_pids(env, floor_pids)
            by_role: dict[str, float] = {}
            for p in own:
                role = title(p).split(" ")[0].rsplit("/", 1)[-1]
                by_role[role] = by_role.get(role, 0.0) + rollup(p).get("Pss", 0) / 1024
            host_idle = {"pss_mb": pss_mb(own), "processes": len(own),
                         "by_role": ", ".join(f"{k} {v:.0f}" for k, v in sorted(by_role.items(), key=lambda kv: -kv[1]))}
            floor_idle = pss_mb([floor.proc.pid])
            report_idle(host_idle, floor_idle)
            rows: list[tuple[Round, Round]] = []
            for n in sizes:
                with collector_paused():
                    f = await floor_round(floor, n, kills)
                mark, began = watcher.mark(), time.perf_counter()
                try:
                    with collector_paused():
                        h = await host_round(env, host, client, watcher, n, kills, floor_pids)
                except BenchFailed as err:  # report the sizes that completed; keep the logs
                    env.failed = True
                    print(f"{n:>4} host round FAILED after {time.perf_counter() - began:.0f} s: "
                          f"{len(watcher.of_type('actor_started', mark))} actor_started events received, "
                          f"{len(instance_pids(env))} ActorModule processes alive; floor 0->N {f.up_s * 1000:.0f} ms, "
                          f"PSS {f.pss_mb:.2f} MB/instance. {str(err).splitlines()[0][:120]}", flush=True)
                    break
                rows.append((h, f))
                report_round(h, f)
        finally:
            floor.close()
            await nc.close()
        if json_path:
            doc = {"host_idle": host_idle, "floor_idle_mb": floor_idle,
                   "rounds": [{"host": asdict(h), "floor": asdict(f)} for h, f in rows]}
            text = json.dumps(doc, indent=1, default=str)
            if json_path == "-":
                print(text)
            else:
                Path(json_path).write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated N values")
    parser.add_argument("--quick", action="store_true", help="N = 50 only")
    parser.add_argument("--kills", type=int, default=2, help="kill -9 measurements per N (restart intensity: 5 / 10 s)")
    parser.add_argument("--json", dest="json_path", help="also write the raw figures (PATH or -)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    sizes = [50] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    asyncio.run(run(sizes, args.kills, args.keep_logs, args.json_path))


if __name__ == "__main__":
    sys.exit(main())
