"""How long a host takes to recover from kill -9 of each of its core roles.

One host runs 2 echo instances; for each role (ControlServer, LatticeEvents, LatticeCache,
NativeWorker, ProviderSupervisor, ActorSupervisor) the script kills the role's process and
measures, from the kill:
- ping: until the host answers `ping.hosts` again;
- inventory: until `get.{host}.inv` shows the same instances as before the kill;
- rpc: how many echo calls (1 in flight, back to back) failed meanwhile.
The baseline, taken in the same run on the same host before each kill, is the round trip of one
inventory request; the ratio says how many such round trips the recovery cost.

    python bench/restarts.py [--rounds 3] [--keep-logs]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import nats

from _host import ECHO, ECHO_KEY, BenchEnv, EventWatcher, marked_pids
from hostcore.control.client import ControlClient

ROLES = ("ControlServer", "LatticeEvents", "LatticeCache", "NativeWorker", "ProviderSupervisor", "ActorSupervisor")
HTTP_GET = msgpack.packb({"method": "GET", "path": "/", "queryString": "", "header": {}, "body": b""})


def role_pid(mark: str, name: str) -> int:
    for pid in marked_pids(mark):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(name.encode() + b" "):
                return pid
        except OSError:
            continue
    raise LookupError(name)


def shape(inv: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return sorted((a["id"], sorted(i["instance_id"] for i in a["instances"])) for a in inv["actors"])


async def until(probe: Any, timeout_s: float = 15.0) -> float:
    began = time.perf_counter()
    deadline = began + timeout_s
    while time.perf_counter() < deadline:
        try:
            if await probe():
                return time.perf_counter() - began
        except Exception:  # noqa: BLE001 -- not recovered yet
            pass
        await asyncio.sleep(0.005)
    return float("nan")


async def run(rounds: int, keep_logs: bool) -> None:
    with BenchEnv("restarts", keep_logs) as env:
        host = env.host()
        nc = await nats.connect(env.nats.url)
        watcher = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=watcher.on_msg)
        client = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=2.0)
        probe = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=0.25)
        host.start()
        await watcher.wait_for("host_started", host)
        await client.scale_actor(host.host_id, ECHO_KEY, f"file://{ECHO}", 2)
        await watcher.wait_for("actor_started", host, count=2)
        before = shape(await client.get_inventory(host.host_id))
        failed = 0
        stop = asyncio.Event()

        async def load() -> None:
            nonlocal failed
            while not stop.is_set():
                try:
                    resp = await client.call_actor(host.cluster_key, ECHO_KEY, "HttpServer.HandleRequest",
                                                   HTTP_GET, timeout_s=2)
                    failed += resp.error is not None
                except Exception:  # noqa: BLE001 -- counted
                    failed += 1

        task = asyncio.get_running_loop().create_task(load())
        results: dict[str, list[tuple[float, float, float, int]]] = {r: [] for r in ROLES}
        for _ in range(rounds):
            for role in ROLES:
                t0 = time.perf_counter()
                await client.get_inventory(host.host_id)
                baseline = time.perf_counter() - t0
                failed_before = failed
                os.kill(role_pid(env.mark, role), signal.SIGKILL)

                async def pinged() -> bool:
                    return any(h["id"] == host.host_id for h in await client.ping_hosts(wait_s=0.05))

                async def restored() -> bool:  # short timeout: a request the dead role took is not waited out
                    return shape(await probe.get_inventory(host.host_id)) == before

                ping_s, inv_s = await asyncio.gather(until(pinged), until(restored))
                results[role].append((baseline, ping_s, inv_s, failed - failed_before))
                await asyncio.sleep(1.0)  # let the role settle: kills of one role stay under the intensity
        stop.set()
        await task
        await nc.close()
        print(f"kill -9 of each core role, 2 echo instances, 1 RPC in flight, {rounds} rounds (medians)")
        for role, rows in results.items():
            base = statistics.median(r[0] for r in rows)
            ping = statistics.median(r[1] for r in rows)
            inv = statistics.median(r[2] for r in rows)
            lost = sum(r[3] for r in rows)
            print(f"{role:19s} ping {ping * 1000:7.1f} ms  inventory {inv * 1000:7.1f} ms = "
                  f"{inv / base:6.1f}x one inventory round trip ({base * 1000:.1f} ms); failed calls {lost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.keep_logs))


if __name__ == "__main__":
    sys.exit(main())
