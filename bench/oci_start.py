"""Actor start from a local OCI registry: `scale` sent → `actor_started` received (issue 3).

Setup, all in this run: Debian's docker-registry on loopback (tests/oci_registry.py), echo.wasm
(1.8 MB) pushed to it with `hostcore reg push --insecure`, a nats-server, and one host
(`python -m hostcore up`) with the registry on WASMCLOUD_OCI_ALLOWED_INSECURE.

Each measured start: the echo instance is stopped first (scale 0, wait for `actor_stopped`), then
the time from sending `scale` (ControlClient.scale_actor, count 1) to the arrival of the host's
`actor_started` CloudEvent at our NATS callback is taken.

  cold     the host's OCI blob cache ({HOSTCORE_DATA_DIR}/cache/oci) and .cwasm cache (cache/cwasm)
           are deleted before each start: manifest + blob download, sha256, claims, compile.
  cached   the same digest was pulled and compiled before (nothing deleted): the manifest is
           still fetched (a tag may move), the blob and the .cwasm come from disk.

Baselines, in this process and in this run (same wasmtime Engine Config as the host):
  cold     `requests.get` of the same blob from the same registry + `wasmtime.Module(engine, bytes)`
  cached   `wasmtime.Module.deserialize_file(engine, cwasm)`

Order: --warmup untimed cold starts, then per run a baseline and a hostcore start, cold runs first
(N each), then cached. Reported: p50 / min / max, the ratio hostcore/baseline of the p50s, the
issue's targets (cold ≤ 400 ms, cached ≤ 60 ms; PASS/MISS, never asserted), and a breakdown
from the host log (`actor prepared … ms=`: fetch + verify + compile in the NativeWorker; the
supervisor's `actor started` line) and from running the same steps in this process.

    python bench/oci_start.py [-n N] [--warmup W] [--steps S] [--json PATH|-] [--keep-logs]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.append(str(REPO / "tests"))  # oci_registry.DockerRegistry; appended: tests/ must shadow nothing

import nats  # noqa: E402
import requests  # noqa: E402
import wasmtime  # noqa: E402
from _host import (  # noqa: E402
    ECHO,
    ECHO_KEY,
    BenchEnv,
    BenchFailed,
    CpuClock,
    EventWatcher,
    Host,
    code_note,
    median,
    parse_log,
)
from oci_registry import REGISTRY_BIN, DockerRegistry  # noqa: E402

from hostcore.cli import main as hostcore_cli  # noqa: E402
from hostcore.control.client import ControlClient  # noqa: E402
from hostcore.native.oci import OCI_MANIFEST  # noqa: E402
from hostcore.native.wasm import engine_config  # noqa: E402

TARGET_MS = {"cold": 400.0, "cached": 60.0}  # issue 3
REPO_PATH = "bench/echo"
TAG = "0.1.0"
BUSY_PCT = 20  # "other load" above this (% of one core) makes a measurement suspect


@dataclasses.dataclass
class Start:
    """One measured hostcore start; phases (ms) from the host log where found."""

    mode: str
    total_ms: float
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    downloaded: int | None = None  # blobs the pull downloaded (manifest included), from "oci pull"
    host_cpu_ms: float = 0.0  # CPU time of all the host's processes during the start
    other_pct: float = 0.0  # busy time of everything else on the machine, % of one core


# --- baseline ------------------------------------------------------------------------------------


class Baseline:
    """The same work done plainly in this process."""

    def __init__(self, blob_url: str, workdir: Path) -> None:
        self.blob_url = blob_url
        self.engine = wasmtime.Engine(engine_config())
        data = requests.get(blob_url, timeout=30).content
        self.cwasm = workdir / "echo.cwasm"
        self.cwasm.write_bytes(wasmtime.Module(self.engine, data).serialize())
        self.size = len(data)

    def cold(self) -> tuple[float, float]:
        """(download ms, compile ms)."""
        t0 = time.perf_counter()
        data = requests.get(self.blob_url, timeout=30).content
        t1 = time.perf_counter()
        wasmtime.Module(self.engine, data)
        t2 = time.perf_counter()
        return (t1 - t0) * 1000, (t2 - t1) * 1000

    def cached(self) -> float:
        t0 = time.perf_counter()
        wasmtime.Module.deserialize_file(self.engine, str(self.cwasm))
        return (time.perf_counter() - t0) * 1000


# --- hostcore ------------------------------------------------------------------------------------


def clear_caches(host: Host) -> None:
    for name in ("oci", "cwasm"):
        shutil.rmtree(host.cache_dir / name, ignore_errors=True)


def breakdown(host: Host, log_offset: int, sent_wall: float, arrived_wall: float) -> tuple[dict[str, float], int | None]:
    """Phases of one start from the host log lines written since `log_offset` (ms resolution)."""
    lines = parse_log(host.log_since(log_offset))

    def first(logger_suffix: str, text: str) -> Any:
        return next((ln for ln in lines if ln.logger.endswith(logger_suffix) and ln.text.startswith(text)), None)

    prepared = first("native.worker", "actor prepared")
    started = first("actors.supervisor", "actor started")
    pulled = first("native.oci", "oci pull")
    phases: dict[str, float] = {}
    if prepared is not None and (ms := prepared.value("ms")) is not None:
        prepare_ms = float(ms)
        phases["to_worker"] = (prepared.wall - prepare_ms / 1000 - sent_wall) * 1000
        phases["prepare"] = prepare_ms
        if started is not None:
            phases["instance"] = (started.wall - prepared.wall) * 1000
            phases["event"] = (arrived_wall - started.wall) * 1000
    downloaded = int(d) if pulled is not None and (d := pulled.value("downloaded")) is not None else None
    return phases, downloaded


async def measure_host(ctl: ControlClient, events: EventWatcher, host: Host, ref: str, mode: str,
                       clock: CpuClock) -> Start:
    if len(events.of_type("actor_started")) > len(events.of_type("actor_stopped")):  # still running: stop it
        since = events.mark()
        ack = await ctl.scale_actor(host.host_id, ECHO_KEY, ref, 0)
        if not ack.accepted:
            raise BenchFailed(f"scale 0 refused: {ack.error}")
        await events.wait_for("actor_stopped", host, since=since)
    if mode == "cold":
        clear_caches(host)
    await asyncio.sleep(0.3)  # let the stopped instance's process go away
    since, offset = events.mark(), host.log_size()
    clock.start()
    sent, sent_wall = time.perf_counter(), time.time()
    ack = await ctl.scale_actor(host.host_id, ECHO_KEY, ref, 1)
    if not ack.accepted:
        raise BenchFailed(f"scale refused: {ack.error}")
    [started] = await events.wait_for("actor_started", host, since=since, timeout_s=60,
                                      pred=lambda d: d.get("public_key") == ECHO_KEY and d.get("image_ref") == ref)
    cpu = clock.stop()
    await asyncio.sleep(0.1)  # the log lines reach the file through Thespian's logger process
    phases, downloaded = breakdown(host, offset, sent_wall, started.arrived_wall)
    return Start(mode=mode, total_ms=(started.arrived - sent) * 1000, phases=phases, downloaded=downloaded,
                 host_cpu_ms=cpu["host"] * 1000, other_pct=cpu["other_pct"])


# --- the same steps in this process (where the prepare time goes) --------------------------------


def in_process_steps(ref: str, registry_address: str, workdir: Path, cold: bool) -> dict[str, float]:
    """NativeWorker._prepare's steps and ActorModule's module setup, timed one by one (ms)."""
    from hostcore.native.claims import extract_claims
    from hostcore.native.oci import OciClient, OciSettings
    from hostcore.native.wasm import ActorRuntime, compile_to_cache, load_module, new_engine

    cache = workdir / "inproc-cache"
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    settings = OciSettings(cache_dir=cache, allowed_insecure=(registry_address,))
    engine = new_engine()
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        out[name] = (time.perf_counter() - t0) * 1000
        return value

    with OciClient(settings) as client:
        module = timed("oci pull", lambda: client.pull(ref).content)
    timed("sha256 (cache key)", lambda: hashlib.sha256(module).hexdigest())
    timed("extract_claims", lambda: extract_claims(module))
    cwasm = timed("compile_to_cache", lambda: compile_to_cache(engine, module, cache / "cwasm"))
    engine2 = timed("new_engine (instance)", new_engine)
    mod = timed("load_module (instance)", lambda: load_module(engine2, cwasm))
    timed("ActorRuntime (instance)", lambda: ActorRuntime(engine2, mod, host_call=lambda *a: b"", console_log=print,
                                                          call_timeout_s=3.0, max_memory_bytes=64 << 20))
    return out


# --- report --------------------------------------------------------------------------------------


def stats(xs: list[float]) -> str:
    return f"p50 {median(xs):7.1f} ms  min {min(xs):7.1f}  max {max(xs):7.1f}"


def report(args: argparse.Namespace, size: int, starts: list[Start], base: dict[str, list[float]],
           base_split: list[tuple[float, float]], steps: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    print()
    print(f"oci start: echo.wasm ({size / 1e6:.2f} MB) from a local docker-registry, scale → actor_started, "
          f"1 instance, 1 start in flight; N={args.n} per mode after {args.warmup} untimed cold start(s); "
          f"{os.cpu_count()} CPUs")
    summary: dict[str, Any] = {}
    for mode in ("cold", "cached"):
        host_ms = [s.total_ms for s in starts if s.mode == mode]
        r = median(host_ms) / median(base[mode])
        what = ("requests.get blob + wasmtime.Module compile" if mode == "cold" else "Module.deserialize_file")
        cpu = median(s.host_cpu_ms for s in starts if s.mode == mode)
        print(f"  {mode:6} hostcore  {stats(host_ms)}   (host CPU p50 {cpu:.0f} ms)")
        print(f"  {mode:6} baseline  {stats(base[mode])}   ({what})")
        if mode == "cold":
            print(f"                   baseline split: download p50 {median(d for d, _ in base_split):.1f} ms, "
                  f"compile p50 {median(c for _, c in base_split):.1f} ms")
        verdict = "PASS" if median(host_ms) <= TARGET_MS[mode] else "MISS"
        print(f"oci start {mode}, echo 1.8 MB: hostcore p50 {median(host_ms):.0f} ms = {r:.1f}x baseline "
              f"({median(base[mode]):.1f} ms); target ≤ {TARGET_MS[mode]:.0f} ms: {verdict}")
        phases: dict[str, list[float]] = {}
        for s in starts:
            if s.mode == mode:
                for k, v in s.phases.items():
                    phases.setdefault(k, []).append(v)
        if phases:
            names = {"to_worker": "scale → NativeWorker starts preparing",
                     "prepare": "NativeWorker fetch + verify + compile ('actor prepared ms=')",
                     "instance": "prepared → supervisor logs 'actor started' (ActorModule process, engine, "
                                 "deserialize, instantiate, NATS connect)",
                     "event": "'actor started' logged → CloudEvent received"}
            downloaded = sorted({s.downloaded for s in starts if s.mode == mode and s.downloaded is not None})
            print(f"    host log breakdown (p50 of {len(phases.get('prepare', []))}, ms; log clock has 1 ms "
                  f"resolution; objects fetched from the registry per pull, manifest included: {downloaded}):")
            for key, label in names.items():
                if key in phases:
                    print(f"      {median(phases[key]):7.1f}  {label}")
        if steps.get(mode):
            print(f"    the same steps in this process (p50 of {len(steps[mode])}, ms):")
            for key in steps[mode][0]:
                print(f"      {median(s[key] for s in steps[mode]):7.1f}  {key}")
        summary[mode] = {"hostcore_ms": host_ms, "baseline_ms": base[mode], "ratio_p50": r,
                         "target_ms": TARGET_MS[mode], "pass": verdict == "PASS",
                         "phases_p50": {k: median(v) for k, v in phases.items()},
                         "in_process_steps_p50": {k: median(s[k] for s in steps.get(mode, [])) for k in
                                                  (steps[mode][0] if steps.get(mode) else {})}}
    busy = [s for s in starts if s.other_pct > BUSY_PCT]
    if busy:
        print(f"warning: other processes used more than {BUSY_PCT}% of a core during {len(busy)} of {len(starts)} "
              f"starts (up to {max(s.other_pct for s in busy):.0f}%): these figures are noisy")
    return {"n": args.n, "warmup": args.warmup, "module_bytes": size, "modes": summary,
            "starts": [dataclasses.asdict(s) for s in starts]}


# --- orchestration -------------------------------------------------------------------------------


async def bench(env: BenchEnv, registry: DockerRegistry, args: argparse.Namespace) -> dict[str, Any]:
    ref = f"{registry.address}/{REPO_PATH}:{TAG}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):  # its progress bar
        code = await asyncio.to_thread(hostcore_cli, ["reg", "push", ref, str(ECHO), "--insecure"])
    if code != 0:
        raise BenchFailed(f"reg push {ref} failed ({code}): {out.getvalue()[-2000:]}")
    manifest = requests.get(f"{registry.url}/v2/{REPO_PATH}/manifests/{TAG}", headers={"Accept": OCI_MANIFEST},
                            timeout=10).json()
    digest = manifest["layers"][0]["digest"]
    blob_url = f"{registry.url}/v2/{REPO_PATH}/blobs/{digest}"
    baseline = await asyncio.to_thread(Baseline, blob_url, env.workdir)
    if "sha256:" + hashlib.sha256(ECHO.read_bytes()).hexdigest() != digest:
        raise BenchFailed(f"the registry's layer {digest} is not echo.wasm")

    host = env.host(extra_env={"WASMCLOUD_OCI_ALLOWED_INSECURE": registry.address})
    nc = await nats.connect(env.nats.url, name="bench-oci-start")
    try:
        events = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=events.on_msg)
        await nc.flush()
        host.start()
        await events.wait_for("host_started", host, timeout_s=60)
        ctl = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=30.0)
        print(f"setup: registry {registry.address}, pushed {ref} (layer {digest[:19]}…, {baseline.size} B); "
              f"host up; {code_note()}", flush=True)
        clock = CpuClock(lambda: {"host": env.host_tree(), "registry": [registry.pid or 0], "nats": [env.nats.pid or 0],
                                  "bench": [os.getpid()]})
        for _ in range(args.warmup):
            await measure_host(ctl, events, host, ref, "cold", clock)
        starts: list[Start] = []
        base: dict[str, list[float]] = {"cold": [], "cached": []}
        base_split: list[tuple[float, float]] = []
        for mode in ("cold", "cached"):
            for i in range(args.n):
                if mode == "cold":
                    d, c = await asyncio.to_thread(baseline.cold)
                    base_split.append((d, c))
                    base["cold"].append(d + c)
                else:
                    base["cached"].append(await asyncio.to_thread(baseline.cached))
                s = await measure_host(ctl, events, host, ref, mode, clock)
                starts.append(s)
                ph = " ".join(f"{k}={v:.0f}" for k, v in s.phases.items())
                print(f"  {mode:6} #{i + 1}: hostcore {s.total_ms:7.1f} ms ({ph}; host cpu {s.host_cpu_ms:.0f} ms, "
                      f"other load {s.other_pct:.0f}%)   baseline {base[mode][-1]:6.1f} ms", flush=True)
        # stop the instance so the host has nothing running while we time the steps in-process
        since = events.mark()
        await ctl.scale_actor(host.host_id, ECHO_KEY, ref, 0)
        await events.wait_for("actor_stopped", host, since=since)
        steps: dict[str, list[dict[str, float]]] = {"cold": [], "cached": []}
        if args.steps:
            for mode in ("cold", "cached"):
                for _ in range(args.steps):
                    steps[mode].append(await asyncio.to_thread(in_process_steps, ref, registry.address, env.workdir,
                                                               mode == "cold"))
        return report(args, baseline.size, starts, base, base_split, steps)
    finally:
        await nc.close()


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=5, help="measured starts per mode (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed cold starts first (default 1)")
    p.add_argument("--steps", type=int, default=3, help="in-process step timings per mode (default 3; 0 = skip)")
    p.add_argument("--json", metavar="PATH", help="write raw numbers as JSON to PATH ('-' = stdout)")
    p.add_argument("--keep-logs", action="store_true", help="keep the work dir (host and registry logs)")
    return p.parse_args()


def main() -> int:
    args = _parse()
    if not REGISTRY_BIN.exists():
        print(f"{REGISTRY_BIN} missing (apt-get install docker-registry)", file=sys.stderr)
        return 2
    if not ECHO.is_file():
        print(f"fixture actor {ECHO} missing (set HOSTCORE_FIXTURES)", file=sys.stderr)
        return 2
    with BenchEnv("oci", args.keep_logs) as env:
        try:
            with DockerRegistry(env.workdir / "registry") as registry:
                result = asyncio.run(bench(env, registry, args))
        except BenchFailed as err:
            env.failed = True
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
