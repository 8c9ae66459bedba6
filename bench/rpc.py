"""rpc echo over NATS: hostcore (2 actor instances) vs two baselines, all started in this run.

Targets, each answering on its own `wasmbus.rpc.{lattice}.{ECHO_KEY}` queue group:

  (a) bare nats    2 nats-py processes replying the request bytes (the transport ceiling)
  (b) simple       2 nats-py processes doing what a correct responder must and nothing more:
                   `Invocation.from_wire`, `InvocationValidator.validate` (JWT + hash), the echo
                   guest through wasmtime-py's ordinary API (Store/Linker/Func.__call__/Memory),
                   `InvocationResponse(...).to_wire()`
  (c) hostcore     `python -m hostcore up` with the echo actor scaled to 2 instances

The workers of (a) and (b) share one session of their own, as hostcore's instances share the
Thespian admin's session: under autogroup scheduling a session is one scheduling entity.

One asyncio nats-py client in this process drives every target with the same pre-signed
invocations (signing is not measured), at 1 and 32 requests in flight: a warm-up, then a fixed
duration (or `--requests N`); latency is per request, throughput counts completions inside the
measured window. Targets are measured one after the other, (a) (b) (c) per level, `--rounds`
times (medians are reported). Each measurement also reports CPU per request of the target's
processes (for (c): the whole host tree, split into the actor instances and the rest of the host),
of the load generator and of nats-server, and the
"other load": busy time of everything else on the machine, which makes a measurement suspect.

The first reply of each target is checked (and both (b) and (c) must reject a forged
invocation), as is the last reply of every in-flight lane; the script exits non-zero when a
target answers wrongly or not at all. Speeds are reported, never asserted.

    python bench/rpc.py [--seconds S] [--warmup S] [--requests N] [--levels 1,32] [--rounds R]
                        [--client lean|request] [--json PATH|-] [--keep-logs]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import nats
import wasmtime
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hostcore.control.client import ControlClient  # noqa: E402
from hostcore.nats_server import EmbeddedNatsServer  # noqa: E402
from hostcore.native.invocation import (  # noqa: E402
    Invocation,
    InvocationResponse,
    InvocationValidator,
    WasmCloudEntity,
    new_invocation,
)
from hostcore.native.nkeys import KeyKind, KeyPair  # noqa: E402
from hostcore.procutil import set_pdeathsig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MARK_VAR,
    BenchFailed,
    CpuMeter,
    Requester,
    Result,
    kill_leftovers,
    marked_pids,
    run_load,
)
from _common import median as _median  # noqa: E402
from _host import stop_host_process  # noqa: E402

FIXTURES = Path(os.environ.get("HOSTCORE_FIXTURES", REPO.parent / "shared" / "fixtures" / "actors"))
ECHO = FIXTURES / "echo.wasm"
ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
OP = "HttpServer.HandleRequest"
PAYLOAD = msgpack.packb({"method": "GET", "path": "/", "queryString": "", "header": {}, "body": b"hello"})
POOL = 256
REQUEST_TIMEOUT_S = 5.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
BUSY_PCT = 20  # "other load" above this (% of one core) makes a measurement suspect

TARGETS = ("a", "b", "c")
LABELS = {"a": "bare nats (a)", "b": "simple responder (b)", "c": "hostcore (c)"}


# --- baseline worker processes (`--worker bare|simple`) ---------------------------------------


class WapcEcho:
    """The smallest waPC host for one guest, on wasmtime-py's ordinary public API only."""

    def __init__(self, path: Path) -> None:
        engine = wasmtime.Engine()
        module = wasmtime.Module.from_file(engine, str(path))
        self.store = store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        i32 = wasmtime.ValType.i32()
        two = wasmtime.FuncType([i32, i32], [])
        self._op = b""
        self._payload = b""
        self._response = b""
        self._error = b""

        def guest_request(op_ptr: int, ptr: int) -> None:
            self.memory.write(store, self._op, op_ptr)
            self.memory.write(store, self._payload, ptr)

        def guest_response(ptr: int, n: int) -> None:
            self._response = bytes(self.memory.read(store, ptr, ptr + n))

        def guest_error(ptr: int, n: int) -> None:
            self._error = bytes(self.memory.read(store, ptr, ptr + n))

        linker.define_func("wasmbus", "__guest_request", two, guest_request)
        linker.define_func("wasmbus", "__guest_response", two, guest_response)
        linker.define_func("wasmbus", "__guest_error", two, guest_error)
        exports = linker.instantiate(store, module).exports(store)
        memory, guest_call = exports["memory"], exports["__guest_call"]
        assert isinstance(memory, wasmtime.Memory) and isinstance(guest_call, wasmtime.Func)
        self.memory, self.guest_call = memory, guest_call
        for init in ("start", "wapc_init", "_start"):  # waPC: each init export, if present, once
            if isinstance(func := exports.get(init), wasmtime.Func):
                func(store)

    def call(self, operation: str, payload: bytes) -> bytes:
        self._op, self._payload, self._response, self._error = operation.encode(), payload, b"", b""
        if self.guest_call(self.store, len(self._op), len(payload)) == 1:
            return self._response
        raise RuntimeError(self._error.decode(errors="replace") or "guest call failed")


async def _serve(kind: str, nats_url: str, subject: str, ready_subject: str, issuers: list[str]) -> None:
    nc = await nats.connect(nats_url, name=f"bench-{kind}-{os.getpid()}")
    cb: Callable[[Msg], Any]
    if kind == "bare":
        async def cb(msg: Msg) -> None:
            await nc.publish(msg.reply, msg.data)
    else:
        wapc = WapcEcho(ECHO)
        validator = InvocationValidator(issuers)
        instance_id = str(uuid.uuid4())

        def handle(data: bytes) -> bytes:
            invocation_id = ""
            try:
                inv = Invocation.from_wire(data)
                invocation_id = inv.id
                validator.validate(inv)
                out = wapc.call(inv.operation, inv.msg)
            except Exception as err:  # noqa: BLE001 -- a responder always answers
                return InvocationResponse.failure(invocation_id, str(err) or type(err).__name__,
                                                  instance_id).to_wire()
            return InvocationResponse(msg=out, invocation_id=invocation_id, content_length=len(out),
                                      instance_id=instance_id).to_wire()

        async def cb(msg: Msg) -> None:
            reply = handle(msg.data)
            if msg.reply:
                await nc.publish(msg.reply, reply)

    await nc.subscribe(subject, queue=subject, cb=cb, pending_msgs_limit=65536)
    await nc.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await nc.publish(ready_subject, str(os.getpid()).encode())
    await nc.flush()
    await stop.wait()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), 2.0)


def worker_main(args: argparse.Namespace) -> int:
    asyncio.run(_serve(args.worker, args.nats_url, args.subject, args.ready_subject,
                       [i for i in args.issuers.split(",") if i]))
    return 0


def group_main(args: argparse.Namespace) -> int:
    """Leader of one target's workers, in a session of its own (see `start_responders`): starts
    `--count` workers, and on SIGTERM stops them (SIGTERM, wait, SIGKILL) before exiting."""
    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    cmd = [sys.executable, __file__, "--worker", args.group, "--nats-url", args.nats_url, "--subject", args.subject,
           "--ready-subject", args.ready_subject, "--issuers", args.issuers]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=set_pdeathsig) for _ in range(args.count)]
        for p in procs:
            p.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                print(f"warning: worker {p.pid} ignored SIGTERM; killing it", file=sys.stderr)
                p.kill()
                p.wait(5)
    return 0


# --- processes owned by the benchmark -----------------------------------------------------------


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclasses.dataclass
class Responders:
    """One baseline's workers under their group leader; `stop()` ends them all (SIGTERM to the
    leader, which stops its workers; SIGKILL to the session if it does not exit in time)."""

    kind: str
    subject: str
    log_path: Path
    leader: subprocess.Popen[bytes]
    worker_pids: list[int] = dataclasses.field(default_factory=list)

    def stop(self) -> None:
        if self.leader.poll() is not None:
            return
        self.leader.terminate()
        try:
            self.leader.wait(15)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.kind} workers ignored SIGTERM; killing their session", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.leader.pid, signal.SIGKILL)
            self.leader.wait(5)


async def start_responders(nc: NatsClient, kind: str, count: int, nats_url: str, lattice: str,
                           issuers: list[str], workdir: Path, env: dict[str, str]) -> Responders:
    """Start `count` baseline workers and wait until each has subscribed. The caller owns them.

    The workers share one new session, under a leader process, as the host's instances share the
    session of the daemonised Thespian admin. With the kernel's autogroup scheduling (on here) a
    session is one scheduling entity: were the workers in the load generator's session, then under
    CPU contention they would share its slice while hostcore got a slice of its own, and the
    comparison would measure the scheduler instead of the responders.
    """
    subject = f"wasmbus.rpc.{lattice}.{ECHO_KEY}"
    ready_subject = f"bench.ready.{lattice}"
    sub = await nc.subscribe(ready_subject)
    log_path = workdir / f"worker-{kind}.log"
    with open(log_path, "ab") as out:
        leader = subprocess.Popen(
            [sys.executable, __file__, "--group", kind, "--count", str(count), "--nats-url", nats_url,
             "--subject", subject, "--ready-subject", ready_subject, "--issuers", ",".join(issuers)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, preexec_fn=set_pdeathsig)
    responders = Responders(kind, subject, log_path, leader)
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            for _ in range(count):
                msg = await sub.next_msg(timeout=START_TIMEOUT_S)
                responders.worker_pids.append(int(msg.data))
    except (TimeoutError, nats.errors.TimeoutError):
        responders.stop()
        raise BenchFailed(f"{kind} workers not ready in {START_TIMEOUT_S:g} s:\n{_tail(log_path)}") from None
    finally:
        await sub.unsubscribe()
    return responders


class Host:
    """`python -m hostcore up` as a child process in its own session; `stop()` SIGTERMs it."""

    def __init__(self, workdir: Path, nats_url: str, lattice: str, cluster_key: KeyPair, env: dict[str, str]) -> None:
        self.host_key = KeyPair.generate(KeyKind.SERVER)
        self.lattice = lattice
        self.log_path = workdir / "host.log"
        self.env = {**env, "WASMCLOUD_HOST_SEED": self.host_key.seed, "WASMCLOUD_CLUSTER_SEED": cluster_key.seed,
                    "WASMCLOUD_LATTICE_PREFIX": lattice, "WASMCLOUD_ALLOW_FILE_LOAD": "true",
                    "HOSTCORE_DATA_DIR": str(workdir / "data"), "PYTHONUNBUFFERED": "1"}
        self.cmd = [sys.executable, "-m", "hostcore", "up", "--nats-url", nats_url]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host_id(self) -> str:
        return self.host_key.public_key

    def start(self) -> None:
        # Never a pipe: the daemonised Thespian admin would keep it open.
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.workdir, start_new_session=True)

    def stop(self) -> None:
        stop_host_process(self.proc)


class EventWatcher:
    """CloudEvents of one lattice, as they arrive."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()

    async def on_msg(self, msg: Msg) -> None:
        async with self.changed:
            self.events.append(json.loads(msg.data))
            self.changed.notify_all()

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == f"com.wasmcloud.lattice.{event_type}"]

    async def wait_for(self, event_type: str, count: int, timeout_s: float, host: Host) -> None:
        def done() -> bool:
            if self.of_type("actor_start_failed"):
                return True
            if host.proc is not None and host.proc.poll() is not None:
                return True
            return len(self.of_type(event_type)) >= count
        try:
            async with asyncio.timeout(timeout_s), self.changed:
                while not done():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):  # also notice a dead host
                            await self.changed.wait()
        except TimeoutError:
            pass
        if failed := self.of_type("actor_start_failed"):
            raise BenchFailed(f"actor_start_failed: {failed[0]['data']}\n{_tail(host.log_path)}")
        if len(self.of_type(event_type)) < count:
            seen = [e["type"].rsplit(".", 1)[-1] for e in self.events]
            raise BenchFailed(f"waited {timeout_s:g} s for {count}x {event_type}; saw {seen}; host "
                              f"exit code {host.proc.poll() if host.proc else None}\n{_tail(host.log_path)}")


# --- load generation ----------------------------------------------------------------------------


def check_bare(request: bytes, reply: bytes) -> str | None:
    return None if reply == request else "reply differs from the request"


def check_invocation_reply(request: bytes, reply: bytes) -> str | None:
    """None when `reply` is a successful InvocationResponse to `request` with statusCode 200."""
    try:
        resp = InvocationResponse.from_wire(reply)
    except Exception as err:  # noqa: BLE001
        return f"not an InvocationResponse ({err!r}): {reply[:80]!r}"
    if resp.error is not None:
        return f"error {resp.error!r}"
    if resp.invocation_id != Invocation.from_wire(request).id:
        return f"invocation_id {resp.invocation_id!r} is not the request's"
    try:
        body = msgpack.unpackb(resp.msg, raw=False)
    except Exception as err:  # noqa: BLE001
        return f"msg is not msgpack ({err!r})"
    if not isinstance(body, dict) or body.get("statusCode") != 200:
        return f"msg is not an HTTP 200 response: {str(body)[:200]}"
    return None


async def verify(nc: NatsClient, target: str, subject: str, pool: list[bytes], forged: bytes) -> None:
    """The first reply must be right; (b) and (c) must also reject a forged invocation."""
    check = check_bare if target == "a" else check_invocation_reply
    try:
        msg = await nc.request(subject, pool[0], timeout=REQUEST_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001
        raise BenchFailed(f"{LABELS[target]}: no reply to the first request: {err!r}") from err
    if (problem := check(pool[0], msg.data)) is not None:
        raise BenchFailed(f"{LABELS[target]}: wrong first reply: {problem}")
    if target != "a":
        msg = await nc.request(subject, forged, timeout=REQUEST_TIMEOUT_S)
        if InvocationResponse.from_wire(msg.data).error is None:
            raise BenchFailed(f"{LABELS[target]}: accepted a forged invocation (hash mismatch)")


# --- orchestration ------------------------------------------------------------------------------


def make_pool(cluster_key: KeyPair) -> tuple[list[bytes], bytes]:
    """POOL distinct signed invocations, and one whose msg no longer matches its signed hash."""
    origin, target = WasmCloudEntity(public_key=cluster_key.public_key), WasmCloudEntity(public_key=ECHO_KEY)
    invs = [new_invocation(cluster_key, origin, target, OP, PAYLOAD) for _ in range(POOL)]
    forged = dataclasses.replace(invs[0], msg=PAYLOAD.replace(b"hello", b"hellp"))
    return [inv.to_wire() for inv in invs], forged.to_wire()


async def scale_host(nc: NatsClient, host: Host, instances: int) -> str:
    """Start `host`, wait for host_started, scale the echo actor to `instances` and wait for as
    many actor_started events. Returns a line of timings. The caller owns (and stops) the host."""
    events = EventWatcher()
    evt_sub = await nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=events.on_msg)
    try:
        await nc.flush()
        t = time.perf_counter()
        host.start()
        await events.wait_for("host_started", 1, START_TIMEOUT_S, host)
        t_host = time.perf_counter() - t
        ctl = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=10.0)
        ack = await ctl.scale_actor(host.host_id, ECHO_KEY, f"file://{ECHO}", instances)
        if not ack.accepted:
            raise BenchFailed(f"scale refused: {ack.error}")
        await events.wait_for("actor_started", instances, START_TIMEOUT_S, host)
        return f"host_started after {t_host:.1f} s, {instances} instances after {time.perf_counter() - t:.1f} s"
    finally:
        await evt_sub.unsubscribe()


async def bench(args: argparse.Namespace, workdir: Path, server: EmbeddedNatsServer, mark: str) -> list[Result]:
    """Start the three targets, verify them, measure every (round, level, target); stop them all."""
    nats_url = server.url
    cluster_key = KeyPair.generate(KeyKind.CLUSTER)
    pool, forged = make_pool(cluster_key)
    run = uuid.uuid4().hex[:10]
    env = {**os.environ, MARK_VAR: mark}
    async def on_error(err: Exception) -> None:  # one line, not nats-py's traceback per reconnect
        print(f"load generator's NATS connection: {err!r}", file=sys.stderr)

    nc = await nats.connect(nats_url, name="bench-rpc-load", error_cb=on_error, max_reconnect_attempts=3)
    responders: list[Responders] = []
    host: Host | None = None
    try:
        (workdir / "host").mkdir()
        host = Host(workdir / "host", nats_url, f"bench{run}", cluster_key, env)
        timings = await scale_host(nc, host, args.instances)  # (c) first: it takes longest to come up
        subjects = {"c": f"wasmbus.rpc.{host.lattice}.{ECHO_KEY}"}
        for target, kind in (("a", "bare"), ("b", "simple")):
            r = await start_responders(nc, kind, args.instances, nats_url, f"bench{run}{target}",
                                       [cluster_key.public_key], workdir, env)
            responders.append(r)
            subjects[target] = r.subject
        print(f"setup: {timings}; baselines ready; run {run}", flush=True)
        for target in TARGETS:
            await verify(nc, target, subjects[target], pool, forged)
        print("verified: every target answers correctly; (b) and (c) reject a forged invocation", flush=True)
        worker_pids = {r.kind: r.worker_pids for r in responders}

        def meter(target: str) -> CpuMeter:
            """CPU groups of one measurement; for (c) every process of the host's tree, as now."""
            if target == "c":
                ours = {r.leader.pid for r in responders}.union(*worker_pids.values())
                pids = [p for p in marked_pids(mark) if p not in ours]
                instances = [p for p in pids if _cmdline(p).startswith("ActorModule")]
                return CpuMeter({"instances": instances, "host_rest": [p for p in pids if p not in instances],
                                 "loadgen": [os.getpid()], "nats": [server.pid or 0]})
            else:
                pids = worker_pids["bare" if target == "a" else "simple"]
            return CpuMeter({"target": pids, "loadgen": [os.getpid()], "nats": [server.pid or 0]})

        async def nats_request(subject: str, data: bytes) -> bytes:
            return bytes((await nc.request(subject, data, timeout=REQUEST_TIMEOUT_S)).data)

        results: list[Result] = []
        async with Requester(nc, REQUEST_TIMEOUT_S) as requester:
            send = requester.request if args.client == "lean" else nats_request
            for round_ in range(args.rounds):
                for level in args.levels:
                    for target in TARGETS:
                        check = check_bare if target == "a" else check_invocation_reply
                        res = await run_load(send, target, subjects[target], pool, level, args.warmup,
                                             args.seconds, args.requests, check, label=LABELS[target],
                                             timeout_s=REQUEST_TIMEOUT_S, meter=meter(target))
                        res.round = round_
                        if "instances_us_per_req" in res.cpu:  # (c): the host tree, split by role
                            res.cpu["target_us_per_req"] = res.cpu["instances_us_per_req"] + res.cpu["host_rest_us_per_req"]
                        results.append(res)
                        print(f"  {_row(res.target, level, res.rps, res.p50_ms, res.p99_ms, res.n, res.cpu)}"
                              f"  errors={res.errors}", flush=True)
                        if res.errors:
                            raise BenchFailed(f"{LABELS[target]}: {res.errors} requests failed at {level} in flight")
        return results
    finally:
        for r in responders:
            await asyncio.to_thread(r.stop)
        if host is not None:
            await asyncio.to_thread(host.stop)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5.0)


def _row(target: str, level: int, rps: float, p50: float, p99: float, n: int, cpu: dict[str, float]) -> str:
    text = (f"{LABELS[target]:22} {level:3} in flight: {rps:7.0f} rps  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
            f"N={n:<6}")
    if cpu:
        text += (f"  cpu/req: target {cpu['target_us_per_req']:4.0f} µs, load gen {cpu['loadgen_us_per_req']:3.0f}, "
                 f"nats-server {cpu['nats_us_per_req']:3.0f}; other load {cpu['other_pct']:3.0f}%")
        if "instances_us_per_req" in cpu:
            text += f" (target = instances {cpu['instances_us_per_req']:.0f} + rest of host {cpu['host_rest_us_per_req']:.0f})"
    return text


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ratio(results: list[Result], key: str, level: int, num: str, den: str) -> float:
    """Median over rounds of num/den for `key` at `level`, pairing the measurements of one round
    (taken seconds apart, so a burst of other load skews both or neither)."""
    def pick(target: str) -> dict[int, float]:
        return {r.round: float(getattr(r, key) if hasattr(r, key) else r.cpu[key])
                for r in results if r.target == target and r.concurrency == level}
    n, d = pick(num), pick(den)
    return _median([n[i] / d[i] for i in n if i in d and d[i]])


def summarize(args: argparse.Namespace, results: list[Result]) -> dict[str, Any]:
    """Per (target, level): medians over rounds of rps / p50 / p99 / CPU; ratios are medians of
    per-round ratios. Prints the report lines and the issue's targets."""
    agg: dict[tuple[str, int], dict[str, float]] = {}
    for target in TARGETS:
        for level in args.levels:
            rs = [r for r in results if r.target == target and r.concurrency == level]
            agg[(target, level)] = {k: _median([getattr(r, k) for r in rs])
                                    for k in ("rps", "p50_ms", "p99_ms", "mean_ms")}
            agg[(target, level)]["n"] = sum(r.n for r in rs)
            for key in rs[0].cpu:
                agg[(target, level)][f"cpu.{key}"] = _median([r.cpu.get(key, 0.0) for r in rs])
    how = f"client={args.client}, " + (f"{args.requests} requests" if args.requests else f"{args.seconds:g} s") + f" after {args.warmup:g} s warm-up"
    rounds = f", medians of {args.rounds} rounds (ratios: medians of per-round ratios)" if args.rounds > 1 else ""
    print()
    print(f"rpc echo ({OP}, {len(PAYLOAD)} B payload), {args.instances} instances each, {how}{rounds}")
    for level in args.levels:
        a, b, c = (agg[(t, level)] for t in TARGETS)
        for t in TARGETS if args.rounds > 1 else ():  # one round: the rows are printed above
            x = agg[(t, level)]
            cpu = {k[4:]: v for k, v in x.items() if k.startswith("cpu.")}
            print(f"  {_row(t, level, x['rps'], x['p50_ms'], x['p99_ms'], int(x['n']), cpu)}")
        def rel(key: str, num: str = "c", den: str = "b", lv: int = level) -> float:
            return _ratio(results, key, lv, num, den)
        print(f"rpc echo, {args.instances} instances, {level} in flight: hostcore {c['rps'] / 1000:.1f}k rps = "
              f"{rel('rps'):.2f}x simple responder (b), {rel('rps', den='a'):.2f}x bare nats (a); "
              f"p50 {c['p50_ms']:.2f} ms ({rel('p50_ms'):.2f}x b), "
              f"p99 {c['p99_ms']:.2f} ms ({rel('p99_ms'):.2f}x b); "
              f"(b) = {rel('rps', 'b', 'a'):.2f}x (a)")
        if "cpu.target_us_per_req" in c:
            print(f"  cpu per request in the responders: hostcore {c['cpu.target_us_per_req']:.0f} µs = "
                  f"{rel('target_us_per_req'):.2f}x (b) "
                  f"({b['cpu.target_us_per_req']:.0f} µs), (a) {a['cpu.target_us_per_req']:.0f} µs")
    def other_load(level: int) -> float:
        """The worst other load during the (b) and (c) measurements at `level`."""
        return max((r.cpu.get("other_pct", 0.0) for r in results if r.concurrency == level and r.target in "bc"),
                   default=0.0)

    goals: list[dict[str, Any]] = []
    for level in args.levels:
        want = 1.2 if level == 1 else 1.5
        ratio = _ratio(results, "rps", level, "c", "b")
        goals.append({"goal": f"throughput >= {want}x (b) at {level} in flight", "value": ratio, "pass": ratio >= want,
                      "other_load_pct": other_load(level)})
        if level > 1:
            ratio = _ratio(results, "rps", level, "c", "a")
            goals.append({"goal": f"throughput >= 0.5x (a) at {level} in flight", "value": ratio,
                          "pass": ratio >= 0.5, "other_load_pct": other_load(level)})
    if 1 in args.levels:
        ratio = _ratio(results, "p50_ms", 1, "c", "b")
        goals.append({"goal": "p50 <= 0.9x (b) at 1 in flight", "value": ratio, "pass": ratio <= 0.9,
                      "other_load_pct": other_load(1)})
    print("targets:")
    for g in goals:
        noisy = f"  (noisy: other load up to {g['other_load_pct']:.0f}%)" if g["other_load_pct"] > BUSY_PCT else ""
        print(f"  {'PASS' if g['pass'] else 'MISS'}  {g['goal']}: {g['value']:.2f}x{noisy}")
    busy = [r for r in results if r.cpu.get("other_pct", 0.0) > BUSY_PCT]
    if busy:
        worst = max(r.cpu["other_pct"] for r in busy)
        print(f"warning: other processes used more than {BUSY_PCT}% of a core during {len(busy)} of {len(results)} "
              f"measurements (up to {worst:.0f}%); these figures are noisy: rerun on a quieter machine"
              f"{'' if args.rounds >= 3 else ', or use --rounds 3'}")
    return {
        "operation": OP, "client": args.client, "instances": args.instances, "seconds": args.seconds, "warmup_s": args.warmup,
        "requests": args.requests, "rounds": args.rounds, "levels": args.levels,
        "runs": [dataclasses.asdict(r) for r in results],
        "summary": {f"{t}@{lv}": v for (t, lv), v in agg.items()},
        "ratios": {f"{lv}": {"c/b rps": _ratio(results, "rps", lv, "c", "b"),
                             "c/a rps": _ratio(results, "rps", lv, "c", "a"),
                             "b/a rps": _ratio(results, "rps", lv, "b", "a"),
                             "c/b p50": _ratio(results, "p50_ms", lv, "c", "b"),
                             "c/b p99": _ratio(results, "p99_ms", lv, "c", "b"),
                             "c/b cpu per request": _ratio(results, "target_us_per_req", lv, "c", "b")}
                   for lv in args.levels},
        "targets": goals,
    }


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration per target and level")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up before each measurement (s)")
    p.add_argument("--requests", type=int, default=None, help="measure N requests instead of --seconds")
    p.add_argument("--levels", default="1,32", help="requests in flight, comma-separated")
    p.add_argument("--instances", type=int, default=2, help="responder processes / actor instances per target")
    p.add_argument("--rounds", type=int, default=1, help="repeat the sweep; report medians")
    p.add_argument("--client", choices=("lean", "request"), default="lean",
                   help="load generator: one inbox subscription + futures (lean) or nats-py's nc.request")
    p.add_argument("--json", metavar="PATH", help="write raw numbers as JSON to PATH ('-' = stdout)")
    p.add_argument("--keep-logs", action="store_true", help="keep the work dir (host and worker logs)")
    # internal: a baseline worker process
    p.add_argument("--worker", choices=("bare", "simple"), help=argparse.SUPPRESS)
    p.add_argument("--group", choices=("bare", "simple"), help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--nats-url", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--ready-subject", help=argparse.SUPPRESS)
    p.add_argument("--issuers", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.levels = [int(x) for x in str(args.levels).split(",") if x]
    return args


def main() -> int:
    args = _parse()
    if args.worker:
        return worker_main(args)
    if args.group:
        return group_main(args)
    if not ECHO.is_file():
        print(f"fixture actor {ECHO} missing (set HOSTCORE_FIXTURES)", file=sys.stderr)
        return 2
    mark = uuid.uuid4().hex
    workdir = Path(tempfile.mkdtemp(prefix="hostcore-bench-rpc-"))
    server = EmbeddedNatsServer(workdir / "nats")
    code = 0
    results: list[Result] = []
    try:
        server.start()
        results = asyncio.run(bench(args, workdir, server, mark))
    except BenchFailed as err:
        print(f"FAILED: {err}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        code = 130
    finally:
        server.close()
        if left := kill_leftovers(mark):
            print(f"warning: {len(left)} processes outlived the benchmark and were killed: {left}", file=sys.stderr)
        if args.keep_logs or code:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    if code == 0:
        report = summarize(args, results)
        if args.json:
            text = json.dumps(report, indent=2)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
