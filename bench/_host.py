"""Shared by bench/http_echo.py and bench/oci_start.py: a nats-server, `python -m hostcore up` hosts,
CloudEvent watching (with arrival times), CPU accounting from /proc, and cleanup of every process
the benchmark started.

Every process started through `BenchEnv` carries MARK_VAR=<run id> in its environment (children
inherit it), so leftovers can be found and killed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from nats.aio.msg import Msg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import _procs  # noqa: E402  (bench/ is on sys.path: every benchmark runs as bench/<name>.py)
from hostcore.nats_server import EmbeddedNatsServer  # noqa: E402
from hostcore.native.nkeys import KeyKind, KeyPair  # noqa: E402

FIXTURES = Path(os.environ.get("HOSTCORE_FIXTURES", REPO.parent / "shared" / "fixtures" / "actors"))
ECHO = FIXTURES / "echo.wasm"
ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
MARK_VAR = "HOSTCORE_BENCH_MARK"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

__all__ = [
    "ECHO", "ECHO_KEY", "FIXTURES", "MARK_VAR", "REPO", "BenchEnv", "BenchFailed", "CpuClock", "Event",
    "EventWatcher", "Host", "LogLine", "code_note", "machine_busy_s", "marked_pids", "median", "parse_log",
    "percentile", "proc_cpu_s", "rollup", "stop_host_process", "tail",
]


class BenchFailed(Exception):
    """A target did not start or did not answer correctly."""


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def median(values: Iterable[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


# --- processes ---------------------------------------------------------------------------------


def marked_pids(mark: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries MARK_VAR=mark."""
    return _procs.marked_pids(MARK_VAR, mark)


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup in kB: Pss, Pss_Anon, Pss_File, Rss, Private_Dirty …; {} once the pid is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            out[key] = int(rest.split()[0])
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of `pid` (all its threads); 0.0 once it is gone."""
    try:
        fields = _procs.stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in this (the measuring) process while the block runs. Its heap grows
    with every event it keeps, and a full collection of it took 40-70 ms during a 0 -> 500: the
    event that arrived meanwhile was timed that much late, whether it came from the host or the
    floor. Collected before, so the pause owes nothing to what came earlier."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (not idle / iowait) since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / _CLK_TCK


class CpuClock:
    """CPU seconds of named process groups over an interval, and the busy time of everything
    else on the machine ("other load", which makes a measurement suspect). `groups` is called at
    the start so that processes are classified as they are when the measurement begins."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self._groups_fn = groups
        self.groups: dict[str, list[int]] = {}
        self._before: dict[str, float] = {}

    def _snap(self) -> dict[str, float]:
        snap = {name: sum(proc_cpu_s(p) for p in pids) for name, pids in self.groups.items()}
        snap["_machine"] = machine_busy_s()
        snap["_wall"] = time.monotonic()
        return snap

    def start(self) -> None:
        self.groups = self._groups_fn()
        self._before = self._snap()

    def stop(self, extra_cpu_s: dict[str, float] | None = None) -> dict[str, float]:
        """CPU seconds per group (plus `extra_cpu_s`, e.g. a reaped child's rusage), `other_pct`
        (the rest of the machine's busy time in % of one core) and `wall_s`."""
        after = self._snap()
        delta = {k: after[k] - self._before[k] for k in after}
        out = {k: v for k, v in delta.items() if not k.startswith("_")}
        out.update(extra_cpu_s or {})
        ours = sum(out.values())
        out["other_pct"] = max(0.0, delta["_machine"] - ours) / delta["_wall"] * 100
        out["wall_s"] = delta["_wall"]
        return out


# --- host logs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One KeyValueFormatter line: `YYYY-mm-dd HH:MM:SS,mmm LEVEL logger: message k=v …`."""

    wall: float  # time.time() scale, ms resolution
    level: str
    logger: str
    text: str

    def value(self, key: str) -> str | None:
        """The value of ` key=` (up to the next space), if present."""
        marker = f" {key}="
        i = self.text.find(marker)
        if i < 0:
            return None
        return self.text[i + len(marker):].split(" ", 1)[0]


def parse_log(text: str) -> list[LogLine]:
    out = []
    for line in text.splitlines():
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            level, logger, rest = line[24:].split(" ", 2)
        except ValueError:
            continue
        out.append(LogLine(stamp.timestamp(), level, logger.rstrip(":"), rest))
    return out


# --- host ----------------------------------------------------------------------------------------


class Host:
    """`python -m hostcore up` as a child process in its own session, output to a file (never a
    pipe: the daemonised Thespian admin would keep it open). `stop()` SIGTERMs it and waits.

    It runs this checkout's hostcore whatever the editable install points at: PYTHONPATH=REPO for
    the host's own processes, and cwd=REPO for the providers, which the host starts with a cut-down
    environment but its own cwd (`python -m` puts the cwd first on sys.path). Everything the host
    writes goes to HOSTCORE_DATA_DIR (Thespian's log included, see hostcore/node.py)."""

    def __init__(self, workdir: Path, nats_url: str, lattice: str, env: dict[str, str]) -> None:
        self.host_key = KeyPair.generate(KeyKind.SERVER)
        self.cluster_key = KeyPair.generate(KeyKind.CLUSTER)
        self.lattice = lattice
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "host.log"
        self.env = {**env, "WASMCLOUD_HOST_SEED": self.host_key.seed, "WASMCLOUD_CLUSTER_SEED": self.cluster_key.seed,
                    "WASMCLOUD_LATTICE_PREFIX": lattice, "WASMCLOUD_ALLOW_FILE_LOAD": "true",
                    "HOSTCORE_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)}
        self.cmd = [sys.executable, "-m", "hostcore", "up", "--nats-url", nats_url]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host_id(self) -> str:
        return self.host_key.public_key

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=REPO, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop_host_process(self.proc)


def stop_host_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a `python -m hostcore up` process, wait, then SIGKILL its session. Idempotent."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"warning: host did not exit {STOP_TIMEOUT_S:g} s after SIGTERM; killing its session",
              file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def installed_hostcore() -> str:
    """Where a plain `import hostcore` (no cwd, no PYTHONPATH) finds the package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import hostcore; print(hostcore.__file__)"], cwd="/",
                         capture_output=True, text=True, env=env, check=False)
    return str(Path(out.stdout.strip()).parent) if out.returncode == 0 else "(not importable)"


def code_note() -> str:
    """One line for the report: which hostcore the hosts run."""
    installed = installed_hostcore()
    note = f"hostcore code: {REPO / 'hostcore'}"
    if Path(installed) != REPO / "hostcore":
        note += f" (forced via cwd/PYTHONPATH; the editable install points at {installed})"
    return note


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str  # the short name: "actor_started"
    data: dict[str, Any]
    arrived: float  # time.perf_counter() when the message reached our callback
    arrived_wall: float  # time.time() at the same moment


@dataclass
class EventWatcher:
    """CloudEvents of one lattice, with their arrival times. Subscribe `on_msg` to
    `wasmbus.evt.{lattice}`."""

    events: list[Event] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def on_msg(self, msg: Msg) -> None:
        arrived, arrived_wall = time.perf_counter(), time.time()
        body = json.loads(msg.data)
        async with self.changed:
            self.events.append(Event(body["type"].rsplit(".", 1)[-1], body.get("data") or {}, arrived, arrived_wall))
            self.changed.notify_all()

    def mark(self) -> int:
        """An index to pass as `since`: only events after this moment count."""
        return len(self.events)

    def of_type(self, event_type: str, since: int = 0,
                pred: Callable[[dict[str, Any]], bool] = lambda d: True) -> list[Event]:
        return [e for e in self.events[since:] if e.type == event_type and pred(e.data)]

    async def wait_for(self, event_type: str, host: Host, *, count: int = 1, since: int = 0, timeout_s: float = 30.0,
                       pred: Callable[[dict[str, Any]], bool] = lambda d: True,
                       fail_on: tuple[str, ...] = ("actor_start_failed", "provider_start_failed")) -> list[Event]:
        """The first `count` matching events after `since`. Raises BenchFailed on timeout, on a
        `fail_on` event after `since`, or when the host process died."""
        def done() -> bool:
            return (len(self.of_type(event_type, since, pred)) >= count or not host.alive()
                    or any(self.of_type(f, since) for f in fail_on))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self.changed:
                while not done():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):  # also notice a dead host
                            await self.changed.wait()
        for f in fail_on:
            if failed := self.of_type(f, since):
                raise BenchFailed(f"{f}: {failed[0].data}\n{tail(host.log_path)}")
        found = self.of_type(event_type, since, pred)
        if len(found) < count:
            seen = [e.type for e in self.events[since:]]
            raise BenchFailed(f"waited {timeout_s:g} s for {count}x {event_type}; saw {seen}; host exit code "
                              f"{host.proc.poll() if host.proc else None}\n{tail(host.log_path)}")
        return found[:count]


# --- the whole environment -----------------------------------------------------------------------


class BenchEnv:
    """Work dir, nats-server, and cleanup: `with BenchEnv("http", keep_logs) as env:`. On exit it
    stops the hosts it made, the nats-server, kills marked leftovers and removes the work dir
    (kept when `keep_logs` or on an error)."""

    def __init__(self, name: str, keep_logs: bool = False) -> None:
        self.mark = uuid.uuid4().hex
        self.run = self.mark[:10]
        self.keep_logs = keep_logs
        self.workdir = Path(tempfile.mkdtemp(prefix=f"hostcore-bench-{name}-"))
        self.env = {**os.environ, MARK_VAR: self.mark}
        self.nats = EmbeddedNatsServer(self.workdir / "nats")
        self.hosts: list[Host] = []
        self.failed = False

    def __enter__(self) -> Self:
        self.nats.start()
        return self

    def host(self, name: str = "host", extra_env: dict[str, str] | None = None) -> Host:
        host = Host(self.workdir / name, self.nats.url, f"bench{self.run}{name}", {**self.env, **(extra_env or {})})
        self.hosts.append(host)
        return host

    def popen(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """A marked child process with output to `log_name` in the work dir."""
        from hostcore.procutil import set_pdeathsig
        with open(self.workdir / log_name, "ab") as out:
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, preexec_fn=set_pdeathsig)

    def host_tree(self, exclude: Iterable[int] = ()) -> list[int]:
        """Every live marked process except nats-server and `exclude`: with one host per run,
        the host's whole tree (launcher, Thespian processes, actor instances, providers), even
        the processes that left its session."""
        skip = {self.nats.pid, *exclude}
        return [p for p in marked_pids(self.mark) if p not in skip]

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for host in self.hosts:
            host.stop()
        self.nats.close()
        left = marked_pids(self.mark)
        deadline = time.monotonic() + 5.0
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = marked_pids(self.mark)
        if left:
            print(f"warning: {len(left)} processes outlived the benchmark; killing "
                  f"{[(p, cmdline(p)[:60]) for p in left]}", file=sys.stderr)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.keep_logs or self.failed or exc_type is not None:
            print(f"logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
