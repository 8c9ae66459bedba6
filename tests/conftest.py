"""Shared test fixtures: the fixture actors, a real nats-server, host processes, event watching.

Every process a test starts carries HOSTCORE_TEST_MARK in its environment (children inherit it),
so teardown can find leftovers, kill them, and fail the test that left them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import requests

from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import stop_process, wait_for
from hostcore.natsconn import flush_in_order

REPO = Path(__file__).resolve().parents[1]
# bench/_procs.py (standard library only) is shared with the benchmarks; appended, so that
# bench/ shadows nothing the tests import.
sys.path.append(str(REPO / "bench"))
import _procs  # noqa: E402
FIXTURES = Path(os.environ.get("HOSTCORE_FIXTURES", REPO.parent / "shared" / "fixtures" / "actors"))
ARTIFACTS = REPO / "test-artifacts"


def fixture_actor(name: str) -> Path:
    path = FIXTURES / name
    assert path.is_file(), f"fixture actor {path} missing (set HOSTCORE_FIXTURES)"
    return path


async def eventually(predicate: Callable[[], Any | Awaitable[Any]], timeout: float, what: str | Callable[[], str],
                     *, interval: float = 0.05, ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """Await `predicate()` (sync or async) until it returns something truthy, and return that.
    An exception in `ignoring` counts as "not yet". Fails the test with `what` (a callable is
    called then, e.g. to attach a log as it is at the deadline) and the last value or exception
    once `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
        except ignoring as err:
            last = err
        else:
            if last:
                return last
        if loop.time() >= deadline:
            what = what() if callable(what) else what
            pytest.fail(f"not within {timeout}s: {what}\nlast: {repr(last)[:2000]}")
        await asyncio.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


async def http_get(url: str, *, method: str = "GET", within: float = 15.0, **kw: Any) -> requests.Response:
    """One HTTP request, retried while nothing listens yet (a provider's listener comes up after
    its link arrives, asynchronously); any status counts as an answer."""
    async def answer() -> list[requests.Response]:
        # a list: a Response with an error status is falsy, but it is an answer
        return [await asyncio.to_thread(requests.request, method, url, timeout=5, **kw)]
    [resp] = await eventually(answer, within, f"an answer from {url}", interval=0.1,
                              ignoring=(requests.ConnectionError,))
    return resp


def marked_pids(mark: str) -> list[int]:
    """Live processes whose environment carries HOSTCORE_TEST_MARK=mark."""
    return _procs.marked_pids("HOSTCORE_TEST_MARK", mark)


def describe_pid(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        ppid = _procs.stat_fields(pid)[1]
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} (ppid {ppid}): {cmd[:80]}"


def kill_marked(mark: str) -> list[int]:
    left = marked_pids(mark)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    with EmbeddedNatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; stopped after the session."""
    import redis
    import shutil

    from hostcore.procutil import free_port, set_pdeathsig

    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (apt-get install redis-server; .ci/run does)"
    port, workdir = free_port(), tmp_path_factory.mktemp("redis")
    with open(workdir / "redis.log", "ab") as out:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(workdir)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=set_pdeathsig)
    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return proc.poll() is not None

    try:
        if not wait_for(answers, 10.0) or proc.poll() is not None:
            pytest.fail(f"redis-server did not answer PING: {(workdir / 'redis.log').read_text()[-2000:]}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop_process(proc, name="redis-server")


@pytest.fixture
async def nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[nats.aio.client.Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
def own_nats_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """A nats-server for this test alone: its subjects and JetStream buckets start empty."""
    with EmbeddedNatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def own_nc(own_nats_server: EmbeddedNatsServer) -> AsyncIterator[nats.aio.client.Client]:
    client = await nats.connect(own_nats_server.url)
    yield client
    await client.close()


class EventWatcher:
    """Collects CloudEvents from one lattice; `wait_for` awaits the next matching one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._seen = 0

    async def on_msg(self, msg: Any) -> None:
        async with self._changed:
            self.events.append(json.loads(msg.data))
            self._changed.notify_all()

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == f"com.wasmcloud.lattice.{event_type}"]

    async def wait_for(self, event_type: str, pred: Callable[[dict[str, Any]], bool] = lambda d: True,
                       *, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The first `count` events of `event_type` whose data satisfies `pred` (already received
        ones count). Fails the test with what was seen if they do not arrive in `timeout`."""
        def found() -> list[dict[str, Any]]:
            return [e for e in self.of_type(event_type) if pred(e["data"])]
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: len(found()) >= count)
        except TimeoutError:
            seen = [e["type"].rsplit(".", 1)[-1] for e in self.events]
            pytest.fail(f"waited {timeout}s for {count}x {event_type}; saw {seen}")
        return found()[:count]


class HostProcess:
    """`python -m hostcore up` as a child process with known keys, on its own lattice."""

    def __init__(self, workdir: Path, nats_url: str, lattice: str, mark: str, extra_env: dict[str, str]) -> None:
        self.host_key = KeyPair.generate(KeyKind.SERVER)
        self.cluster_key = KeyPair.generate(KeyKind.CLUSTER)
        self.workdir = workdir
        self.nats_url, self.lattice, self.mark = nats_url, lattice, mark
        self.log_path = workdir / f"host-{self.host_key.public_key[:8]}.log"
        self.env = {**os.environ, "HOSTCORE_TEST_MARK": mark, "WASMCLOUD_HOST_SEED": self.host_key.seed,
                    "WASMCLOUD_CLUSTER_SEED": self.cluster_key.seed, "WASMCLOUD_LATTICE_PREFIX": lattice,
                    "WASMCLOUD_ALLOW_FILE_LOAD": "true", "WASMCLOUD_RPC_TIMEOUT_MS": "2000",
                    "HOSTCORE_DATA_DIR": str(workdir / "data"), "PYTHONUNBUFFERED": "1",
                    # No dashboard by default: each would ping the lattice (extra heartbeats).
                    "WASMCLOUD_DASHBOARD_PORT": "0", **extra_env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host_id(self) -> str:
        return self.host_key.public_key

    def start(self, *args: str) -> HostProcess:
        cmd = [sys.executable, "-m", "hostcore", "up", *args]
        if self.nats_url:
            cmd += ["--nats-url", self.nats_url]
        # Never a pipe: the daemonised Thespian admin would keep it open (architecture.md Tests).
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.workdir, start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int | None:
        return stop_child(self.proc, "host", self.log, timeout)


def stop_child(proc: subprocess.Popen[bytes] | None, name: str, log: Callable[[], str], timeout: float) -> int | None:
    """SIGTERM a child we started and return its exit code; fails the test if it needed SIGKILL
    (one that already exited, however it ended, just reports its code)."""
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    stop_process(proc, name=name, grace_s=timeout)
    if proc.returncode == -signal.SIGKILL:
        pytest.fail(f"{name} did not exit {timeout}s after SIGTERM; log:\n{log()[-3000:]}")
    return proc.returncode


@pytest.fixture
def lattice() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def events(nc: nats.aio.client.Client, lattice: str) -> AsyncIterator[EventWatcher]:
    watcher = EventWatcher()
    sub = await nc.subscribe(f"wasmbus.evt.{lattice}", cb=watcher.on_msg)
    await flush_in_order(nc)
    yield watcher
    await sub.unsubscribe()


@pytest.fixture
def host_factory(tmp_path: Path, nats_server: EmbeddedNatsServer, lattice: str) -> Iterator[Callable[..., HostProcess]]:
    """Make hosts on this test's lattice; teardown stops them and fails on leftover processes."""
    mark = uuid.uuid4().hex
    hosts: list[HostProcess] = []

    def make(*, nats_url: str | None = None, env: dict[str, str] | None = None) -> HostProcess:
        workdir = tmp_path / f"host{len(hosts)}"
        workdir.mkdir()
        host = HostProcess(workdir, nats_server.url if nats_url is None else nats_url, lattice, mark, env or {})
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()
    survived = marked_pids(mark)
    if survived and not wait_for(lambda: not marked_pids(mark), 5.0):
        left = [describe_pid(p) for p in marked_pids(mark)]
        kill_marked(mark)
        logs = "\n".join(h.log()[-2000:] for h in hosts)
        pytest.fail(f"processes outlived their host: {left}\n{logs}")


async def started_host(host_factory: Callable[..., HostProcess], events: EventWatcher, **kw: Any) -> HostProcess:
    host = host_factory(**kw).start()
    try:
        await events.wait_for("host_started", lambda d: True, timeout=30)
    except BaseException:
        print(host.log())
        raise
    return host


# The waPC imports of a guest that calls the host: its request/response/error plus __host_call and
# the accessors for the host call's result. Shared by the WAT actors of the integration tests.
WAPC_HOST_CALL_IMPORTS = """\
  (import "wasmbus" "__guest_request" (func $req (param i32 i32)))
  (import "wasmbus" "__guest_response" (func $resp (param i32 i32)))
  (import "wasmbus" "__guest_error" (func $err (param i32 i32)))
  (import "wasmbus" "__host_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasmbus" "__host_response_len" (func $rlen (result i32)))
  (import "wasmbus" "__host_response" (func $rsp (param i32)))
  (import "wasmbus" "__host_error_len" (func $elen (result i32)))
  (import "wasmbus" "__host_error" (func $herr (param i32)))
"""

# A tiny waPC actor for behaviour no fixture has: operation "Loop…" spins forever, anything else
# echoes its payload.
LOOPING_WAT = """
(module
  (import "wasmbus" "__guest_request" (func $req (param i32 i32)))
  (import "wasmbus" "__guest_response" (func $resp (param i32 i32)))
  (memory (export "memory") 2)
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (call $req (i32.const 0) (i32.const 1024))
    (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 76))
      (then (loop $spin (br $spin))))
    (call $resp (i32.const 1024) (local.get $len))
    (i32.const 1)))
"""


def signed_wat_actor(wat: str, name: str, *, module_key: KeyPair | None = None, **claims: Any) -> tuple[bytes, str]:
    """Compile `wat` and sign it (fresh account key; fresh module key unless given);
    returns (module, actor key)."""
    import wasmtime

    from hostcore.native.claims import sign_actor

    module_key = module_key or KeyPair.generate(KeyKind.MODULE)
    signed = sign_actor(wasmtime.wat2wasm(wat), account=KeyPair.generate(KeyKind.ACCOUNT),
                        module_key=module_key, name=name, **claims)
    return signed, module_key.public_key


@pytest.fixture
def looping_actor(tmp_path: Path) -> tuple[Path, str]:
    module, key = signed_wat_actor(LOOPING_WAT, "looper", rev=1, ver="0.1.0")
    path = tmp_path / "looper.wasm"
    path.write_bytes(module)
    return path, key


# Answers every call with the constant "v2" (a second revision for live-update tests).
CONSTANT_WAT = """
(module
  (import "wasmbus" "__guest_request" (func $req (param i32 i32)))
  (import "wasmbus" "__guest_response" (func $resp (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 4096) "v2")
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (call $req (i32.const 0) (i32.const 1024))
    (call $resp (i32.const 4096) (i32.const 2))
    (i32.const 1)))
"""
