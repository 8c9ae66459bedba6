"""HTTP through hostcore's httpserver provider to the echo actor vs uvicorn answering directly.

Targets, both started in this run, both on 127.0.0.1:

  direct     a subprocess serving a minimal ASGI app with uvicorn as it is usually run: the
             HTTP parser its default ("auto") picks, httptools, which hostcore depends on
             (`--direct-http h11` for the pure Python one, a slower baseline), the default
             asyncio loop, no lifespan, no access log, no server header, returning the
             exact body and headers hostcore returns for `GET /` (the echo actor's 55-byte JSON).
             (The provider itself runs uvicorn with httptools on uvloop.) uvicorn binds the port
             itself (`--direct-bind uvicorn`, default), or the socket is bound as the provider
             once bound its own (`--direct-bind provider`: `socket.socket(AF_INET, SOCK_STREAM)`,
             proto 0, which makes asyncio skip TCP_NODELAY on accepted connections; see the
             report's note).
  hostcore   `python -m hostcore up` with echo.wasm scaled to --instances (2), `builtin:httpserver`
             started and linked to echo with PORT; each request goes HTTP → provider → NATS →
             an ActorModule process → the guest, and back.

Load generator: `wrk` (Debian package `wrk`), a separate process, keep-alive connections, `GET /`.
For each level of concurrent connections (--levels, default 1,32) and each round, each target
gets a wrk warm-up run (--warmup s, discarded) and then a measured run (--seconds s, `--latency`):
the targets alternate, so a burst of other load hits both or neither. wrk reports rps and the
latency distribution (p50/p99); ratios are hostcore/direct, medians over rounds. CPU per request is
measured from /proc for each target's processes (hostcore split into provider, actor instances
and the rest of the host), wrk and nats-server; "other load" is the rest of the machine.

The first reply of each target is checked (status 200, same body); wrk's non-2xx and socket
errors are reported and make the script exit 1. Speeds are reported, never asserted.

    python bench/http_echo.py [--seconds S] [--warmup S] [--levels 1,32] [--rounds R] [--instances N]
                         [--wrk-threads T] [--direct-bind uvicorn|provider] [--direct-http h11|httptools]
                         [--json PATH|-]
                         [--keep-logs] [--verbose]
"""

from __future__ import annotations

import sys

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

if __name__ != "http":  # run as a script (or as the direct server): the shared helpers
    sys.path.insert(0, str(REPO / "bench"))
    from _host import (
        ECHO,
        ECHO_KEY,
        BenchEnv,
        BenchFailed,
        CpuClock,
        EventWatcher,
        Host,
        cmdline,
        code_note,
        median,
    )

TARGETS = ("direct", "hostcore")
LABELS = {"direct": "uvicorn direct", "hostcore": "hostcore"}
HTTP_CONTRACT = "wasmcloud:httpserver"
BUSY_PCT = 20  # "other load" above this (% of one core) makes a measurement suspect
READY_TIMEOUT_S = 30.0


# --- the direct baseline (`--serve-direct PORT --body-file F`) ------------------------------------


def serve_direct(port: int, body: bytes, headers: list[tuple[bytes, bytes]], bind: str, http: str) -> int:
    """uvicorn with the `http` parser (httptools by default), asyncio loop, no lifespan / access log /
    server header, signal capture off, answering every request with `body`. `bind`: "uvicorn"
    lets uvicorn bind the port, as the library is normally run; "provider" binds the socket as
    the provider once did
    (`socket.socket(AF_INET, SOCK_STREAM)`, then `serve(sockets=[sock])`)."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:  # read the request body, as the provider does
            event = await receive()
            if event["type"] == "http.disconnect" or not event.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=http, lifespan="off", log_config=None,
                            access_log=False, server_header=False, timeout_graceful_shutdown=1, backlog=2048)
    server = Server(config)
    sockets = None
    if bind == "provider":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(2048)
        sock.setblocking(False)
        sockets = [sock]

    async def run() -> None:
        import signal
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        await server.serve(sockets=sockets)

    asyncio.run(run())
    return 0


# --- wrk -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    target: str
    connections: int
    round: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int  # non-2xx/3xx responses + socket errors
    error_text: str
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m[1]) * _UNITS[m[2]]


def parse_wrk(out: str) -> dict[str, Any]:
    """rps, requests, seconds, p50/p99/mean (ms), errors from `wrk --latency` output."""
    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.M)
        if m is None:
            raise BenchFailed(f"wrk output lacks {pattern!r}:\n{out}")
        return m
    done = find(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0) + (int(non2xx[1]) if non2xx else 0)
    text = "; ".join(m[0] for m in (socket_errors, non2xx) if m)
    return {"requests": int(done[1]), "seconds": _ms(done[2] + done[3]) / 1000,
            "rps": float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
            "p50_ms": _ms(find(r"^\s+50%\s+(\S+)")[1]), "p99_ms": _ms(find(r"^\s+99%\s+(\S+)")[1]),
            "mean_ms": _ms(find(r"^\s+Latency\s+(\S+)")[1]), "errors": errors, "error_text": text}


def wrk_cmd(url: str, connections: int, seconds: int, threads: int) -> list[str]:
    return ["wrk", f"-t{max(1, min(threads, connections))}", f"-c{connections}", f"-d{seconds}s", "--latency",
            "--timeout", "5s", url]


def run_wrk(cmd: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run wrk to completion; (stdout, its CPU seconds from the children's rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise BenchFailed(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr or proc.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, cpu


# --- setup ---------------------------------------------------------------------------------------


def http_get(url: str, timeout_s: float = READY_TIMEOUT_S) -> tuple[int, bytes, list[tuple[str, str]]]:
    """GET with retries while the listener comes up; (status, body, headers)."""
    import requests
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = requests.get(url, timeout=5)
            return r.status_code, r.content, list(r.headers.items())
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise BenchFailed(f"nothing listening at {url} after {timeout_s:g} s") from None
            time.sleep(0.05)


async def start_hostcore(env: BenchEnv, host: Host, instances: int) -> tuple[str, float]:
    """Host + echo x instances + httpserver provider + link; returns (url, setup seconds)."""
    import nats

    from hostcore.control.client import ControlClient
    from hostcore.wire.linkdefs import LinkDefinition
    from hostcore.procutil import free_port
    from hostcore.native.par import builtin_provider_key

    nc = await nats.connect(env.nats.url, name="bench-http-setup")
    try:
        events = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=events.on_msg)
        await nc.flush()
        t0 = time.perf_counter()
        host.start()
        await events.wait_for("host_started", host, timeout_s=60)
        ctl = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=10.0)
        ack = await ctl.scale_actor(host.host_id, ECHO_KEY, f"file://{ECHO}", instances)
        if not ack.accepted:
            raise BenchFailed(f"scale refused: {ack.error}")
        await events.wait_for("actor_started", host, count=instances, timeout_s=60)
        provider = builtin_provider_key("httpserver")
        ack = await ctl.launch_provider(host.host_id, "builtin:httpserver")
        if not ack.accepted:
            raise BenchFailed(f"launch_provider refused: {ack.error}")
        await events.wait_for("health_check_passed", host, timeout_s=60, pred=lambda d: d.get("public_key") == provider)
        port = free_port()
        ack = await ctl.put_link(LinkDefinition(actor_id=ECHO_KEY, provider_id=provider, link_name="default",
                                                contract_id=HTTP_CONTRACT, values={"PORT": str(port)}))
        if not ack.accepted:
            raise BenchFailed(f"put_link refused: {ack.error}")
        url = f"http://127.0.0.1:{port}/"
        await asyncio.to_thread(http_get, url)
        return url, time.perf_counter() - t0
    finally:
        await nc.close()


def start_direct(env: BenchEnv, body: bytes, headers: list[tuple[str, str]],
                 bind: str, http: str) -> tuple[subprocess.Popen[bytes], str]:
    from hostcore.procutil import free_port
    port = free_port()
    spec = env.workdir / "direct-response.json"
    spec.write_text(json.dumps({"body": body.decode("latin-1"), "headers": headers}))
    proc = env.popen([sys.executable, __file__, "--serve-direct", str(port), "--response-file", str(spec),
                      "--direct-bind", bind, "--direct-http", http], "direct.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        http_get(url)
    except BenchFailed:
        proc.terminate()
        raise
    return proc, url


def check_reply(target: str, url: str, body: bytes) -> None:
    status, got, _ = http_get(url)
    if status != 200 or got != body:
        raise BenchFailed(f"{LABELS[target]}: GET {url} answered {status} {got[:200]!r}, expected 200 {body!r}")


# --- measurement ---------------------------------------------------------------------------------


def cpu_groups(env: BenchEnv, direct_pid: int) -> dict[str, list[int]]:
    """hostcore's processes split by role (from their Thespian process titles / cmdlines)."""
    groups: dict[str, list[int]] = {"direct": [direct_pid], "provider": [], "actors": [], "host_rest": [],
                                    "nats": [env.nats.pid or 0]}
    for pid in env.host_tree(exclude=[direct_pid]):
        cmd = cmdline(pid)
        if "hostcore.providers.httpserver" in cmd:
            groups["provider"].append(pid)
        elif cmd.startswith("ActorModule"):
            groups["actors"].append(pid)
        else:
            groups["host_rest"].append(pid)
    return groups


def measure(env: BenchEnv, target: str, url: str, connections: int, args: argparse.Namespace, round_: int,
            direct_pid: int) -> Result:
    if args.warmup > 0:
        run_wrk(wrk_cmd(url, connections, args.warmup, args.wrk_threads), env.env)
    clock = CpuClock(lambda: cpu_groups(env, direct_pid))
    clock.start()
    out, wrk_cpu = run_wrk(wrk_cmd(url, connections, args.seconds, args.wrk_threads), env.env)
    cpu = clock.stop({"wrk": wrk_cpu})
    parsed = parse_wrk(out)
    per_req = {k: v / max(parsed["requests"], 1) * 1e6 for k, v in cpu.items() if k not in ("other_pct", "wall_s")}
    per_req_out = {f"{k}_us_per_req": v for k, v in per_req.items()}
    per_req_out["other_pct"] = cpu["other_pct"]
    if args.verbose:
        print(out, flush=True)
    return Result(target=target, connections=connections, round=round_, cpu=per_req_out, **parsed)


def row(r: Result) -> str:
    text = (f"{LABELS[r.target]:15} {r.connections:3} conns: {r.rps:8.0f} rps  p50 {r.p50_ms:7.2f} ms  "
            f"p99 {r.p99_ms:7.2f} ms  N={r.requests:<7}")
    c = r.cpu
    if r.target == "direct":
        text += f" cpu/req: server {c['direct_us_per_req']:5.0f} µs"
    else:
        server = c["provider_us_per_req"] + c["actors_us_per_req"] + c["host_rest_us_per_req"]
        text += (f" cpu/req: server {server:5.0f} µs (provider {c['provider_us_per_req']:.0f}, actors "
                 f"{c['actors_us_per_req']:.0f}, rest of host {c['host_rest_us_per_req']:.0f}), "
                 f"nats-server {c['nats_us_per_req']:.0f}")
    text += f", wrk {c['wrk_us_per_req']:.0f}; other load {c['other_pct']:.0f}%"
    if r.errors:
        text += f"  ERRORS {r.errors} ({r.error_text})"
    return text


def _rps(x: float) -> str:
    return f"{x / 1000:.1f}k rps" if x >= 1000 else f"{x:.0f} rps"


def ratio(results: list[Result], key: str, level: int) -> float:
    """Median over rounds of hostcore/direct for `key`, pairing the two runs of each round."""
    def pick(target: str) -> dict[int, float]:
        return {r.round: float(getattr(r, key)) for r in results if r.target == target and r.connections == level}
    num, den = pick("hostcore"), pick("direct")
    return median(num[i] / den[i] for i in num if i in den and den[i])


def summarize(args: argparse.Namespace, results: list[Result], setup: str) -> dict[str, Any]:
    print()
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"http GET / → echo ({args.instances} instances) via builtin:httpserver vs uvicorn direct; wrk "
          f"-t{args.wrk_threads} keep-alive, {args.seconds:g} s measured after {args.warmup:g} s warm-up per "
          f"target and level{rounds}; direct baseline {args.direct_http}, socket bound by {args.direct_bind}; {os.cpu_count()} CPUs; {setup}")
    agg: dict[str, dict[str, float]] = {}
    for level in args.levels:
        for target in TARGETS:
            rs = [r for r in results if r.target == target and r.connections == level]
            agg[f"{target}@{level}"] = {k: median(getattr(r, k) for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
            agg[f"{target}@{level}"]["n"] = sum(r.requests for r in rs)
            if args.rounds > 1:
                a = agg[f"{target}@{level}"]
                med = dataclasses.replace(rs[0], rps=a["rps"], p50_ms=a["p50_ms"], p99_ms=a["p99_ms"],
                                          requests=int(a["n"]), errors=sum(r.errors for r in rs),
                                          cpu={k: median(r.cpu[k] for r in rs) for k in rs[0].cpu})
                print(f"  {row(med)}  (medians of {args.rounds} rounds, N summed)")
        h, d = agg[f"hostcore@{level}"], agg[f"direct@{level}"]
        print(f"http echo, {args.instances} instances, {level} connection{'s' if level > 1 else ''}: hostcore "
              f"{_rps(h['rps'])} = {ratio(results, 'rps', level):.3g}x uvicorn direct "
              f"({_rps(d['rps'])}); p50 {h['p50_ms']:.2f} ms = {ratio(results, 'p50_ms', level):.3g}x "
              f"({d['p50_ms']:.2f} ms), p99 {h['p99_ms']:.2f} ms = {ratio(results, 'p99_ms', level):.3g}x "
              f"({d['p99_ms']:.2f} ms); N={int(h['n'])} / {int(d['n'])}")
        if level == 1 and 38.0 <= h["p50_ms"] <= 48.0:
            print("  note: a ~40 ms p50 on one keep-alive connection is the signature of Nagle + delayed ACK "
                  "(TCP_NODELAY off on the accepted sockets); `--direct-bind provider` shows the same in plain uvicorn")
    busy = [r for r in results if r.cpu.get("other_pct", 0.0) > BUSY_PCT]
    if busy:
        print(f"warning: other processes used more than {BUSY_PCT}% of a core during {len(busy)} of {len(results)} "
              f"measurements (up to {max(r.cpu['other_pct'] for r in busy):.0f}%): these figures are noisy")
    return {"levels": args.levels, "seconds": args.seconds, "warmup_s": args.warmup, "rounds": args.rounds,
            "instances": args.instances, "wrk_threads": args.wrk_threads, "cpus": os.cpu_count(),
            "runs": [dataclasses.asdict(r) for r in results], "summary": agg,
            "ratios": {str(lv): {k: ratio(results, k, lv) for k in ("rps", "p50_ms", "p99_ms")} for lv in args.levels}}


async def bench(env: BenchEnv, args: argparse.Namespace) -> tuple[list[Result], str]:
    host = env.host()
    url_h, setup_s = await start_hostcore(env, host, args.instances)
    _, body, headers = await asyncio.to_thread(http_get, url_h)
    sent = [(k.lower(), v) for k, v in headers if k.lower() not in ("date", "content-length", "server")]
    proc, url_d = await asyncio.to_thread(start_direct, env, body, sent, args.direct_bind,
                                    args.direct_http)
    try:
        for target, url in (("direct", url_d), ("hostcore", url_h)):
            await asyncio.to_thread(check_reply, target, url, body)
        setup = f"hostcore ready in {setup_s:.1f} s; body {len(body)} B; {code_note()}"
        print(f"setup: {setup}; both targets answer 200 with {body!r}", flush=True)
        results: list[Result] = []
        for round_ in range(args.rounds):
            for level in args.levels:
                for target, url in (("direct", url_d), ("hostcore", url_h)):
                    r = await asyncio.to_thread(measure, env, target, url, level, args, round_, proc.pid)
                    results.append(r)
                    print(f"  {row(r)}", flush=True)
        for target, url in (("direct", url_d), ("hostcore", url_h)):
            await asyncio.to_thread(check_reply, target, url, body)
        return results, setup
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=5, help="measured seconds per target and level (default 5; wrk "
                   "takes whole seconds)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up before each measurement (default 1; 0 = none)")
    p.add_argument("--levels", default="1,32", help="concurrent connections, comma-separated (default 1,32)")
    p.add_argument("--rounds", type=int, default=1, help="repeat the sweep; report medians")
    p.add_argument("--instances", type=int, default=2, help="echo actor instances (default 2)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1; capped at connections)")
    p.add_argument("--json", metavar="PATH", help="write raw numbers as JSON to PATH ('-' = stdout)")
    p.add_argument("--direct-bind", choices=("uvicorn", "provider"), default="uvicorn",
                   help="how the direct baseline gets its socket: uvicorn binds it (default), or bound as the "
                        "httpserver provider binds it (shows what the provider's socket setup costs)")
    p.add_argument("--direct-http", choices=("h11", "httptools"), default="httptools",
                   help="the direct baseline's HTTP parser (default httptools, what uvicorn picks when it is "
                        "installed; h11 is its pure Python one)")
    p.add_argument("--keep-logs", action="store_true", help="keep the work dir (host and server logs)")
    p.add_argument("--verbose", action="store_true", help="print wrk's own output")
    p.add_argument("--serve-direct", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--response-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.levels = [int(x) for x in str(args.levels).split(",") if x]
    return args


def main() -> int:
    args = _parse()
    if args.serve_direct:
        spec = json.loads(args.response_file.read_text())
        body = spec["body"].encode("latin-1")
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in spec["headers"]]
        headers.append((b"content-length", str(len(body)).encode()))
        return serve_direct(args.serve_direct, body, headers, args.direct_bind, args.direct_http)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    if not ECHO.is_file():
        print(f"fixture actor {ECHO} missing (set HOSTCORE_FIXTURES)", file=sys.stderr)
        return 2
    with BenchEnv("http", args.keep_logs) as env:
        try:
            results, setup = asyncio.run(bench(env, args))
        except BenchFailed as err:
            env.failed = True
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
        report = summarize(args, results, setup)
        if args.json:
            text = json.dumps(report, indent=2)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n")
        if any(r.errors for r in results):
            env.failed = True
            print("FAILED: some requests got errors (see ERRORS above)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
