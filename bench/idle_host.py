"""The idle host's memory: PSS per process of one `python -m hostcore up` tree, fresh and after a
warm-up (echo scaled to 1 and back to 0, so the NativeWorker has compiled once).

Every process of the host tree is counted (launcher, Thespian admin and logger, HostSupervisor and
its roles); the nats-server is the benchmark's, not counted (as in bench/scale.py). Each process is
named by its title (Thespian names a process after its actor). Figures come from
/proc/<pid>/smaps_rollup: Pss and Private_Dirty, in MB.

Run it under the CPU lock:
    flock -x /work/notes/cpu.lock python bench/idle_host.py [--settle 2] [--json PATH|-] [--keep-logs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import nats

from _host import ECHO, ECHO_KEY, BenchEnv, EventWatcher, code_note, rollup
from hostcore.control.client import ControlClient

GOAL_MB = 100.0  # the idle host's goal; printed, never asserted


def title(pid: int) -> str:
    try:
        first = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"
    name = first.split(" ")[0].rsplit("/", 1)[-1]
    return "launcher" if name.startswith("python") else name


def snapshot(env: BenchEnv) -> dict[str, dict[str, float]]:
    """Per process title: PSS and private dirty in MB (summed when a title repeats)."""
    out: dict[str, dict[str, float]] = {}
    for pid in env.host_tree():
        if title(pid).startswith("ActorModule"):
            continue
        r = rollup(pid)
        row = out.setdefault(title(pid), {"pss": 0.0, "dirty": 0.0, "n": 0})
        row["pss"] += r.get("Pss", 0) / 1024
        row["dirty"] += r.get("Private_Dirty", 0) / 1024
        row["n"] += 1
    return out


def report(name: str, snap: dict[str, dict[str, float]]) -> None:
    total = sum(r["pss"] for r in snap.values())
    count = sum(int(r["n"]) for r in snap.values())
    print(f"{name}: {total:.1f} MB PSS over {count} processes  [goal <= {GOAL_MB:g} MB]")
    for role, r in sorted(snap.items(), key=lambda kv: -kv[1]["pss"]):
        print(f"  {role:<24} PSS {r['pss']:6.1f}  private dirty {r['dirty']:6.1f}")
    sys.stdout.flush()


async def run(settle_s: float, keep_logs: bool, json_path: str | None) -> None:
    print(code_note())
    with BenchEnv("idle", keep_logs) as env:
        host = env.host()
        nc = await nats.connect(env.nats.url)
        watcher = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=watcher.on_msg, pending_msgs_limit=1 << 16)
        client = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=30.0)
        host.start()
        await watcher.wait_for("host_started", host)
        await asyncio.sleep(settle_s)
        fresh = snapshot(env)
        report("fresh host", fresh)
        await client.scale_actor(host.host_id, ECHO_KEY, f"file://{ECHO}", 1)
        await watcher.wait_for("actor_started", host)
        since = watcher.mark()
        await client.scale_actor(host.host_id, ECHO_KEY, f"file://{ECHO}", 0)
        await watcher.wait_for("actor_stopped", host, since=since)
        await asyncio.sleep(settle_s)
        warm = snapshot(env)
        report("after echo 0 -> 1 -> 0", warm)
        await nc.close()
        if json_path:
            doc = json.dumps({"fresh": fresh, "warm": warm}, indent=2)
            if json_path == "-":
                print(doc)
            else:
                Path(json_path).write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before each reading")
    parser.add_argument("--json", dest="json_path", help="also write the figures as JSON (- for stdout)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.settle, args.keep_logs, args.json_path))


if __name__ == "__main__":
    main()
