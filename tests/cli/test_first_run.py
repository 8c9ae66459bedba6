"""The first run as a new user meets it: `python -m hostcore up` with no flags in one terminal,
`python -m hostcore ctl …` / `call` with no flags in another. Each host gets its own HOME, so its
context file (~/.hostcore/context.json) and its port-4222-or-fallback choice are its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import describe_pid, fixture_actor, kill_marked, marked_pids

from hostcore.context import read_context
from hostcore.nats_server import DEFAULT_PORT, port_free
from hostcore.procutil import free_port, wait_for

ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
HTTP_KEY = "VDEXNMBHDOPGY74LACEMQZ7EFSPL3DZHGKMFI4AD6GZHBIE6ER7WLFTG"  # builtin:httpserver
REQUEST = '{"method":"GET","path":"/first-run","queryString":"","header":{},"body":""}'
# Settings that would point the CLI or the host somewhere else than "no flags" means.
_CLEARED = ("WASMCLOUD_NATS_URL", "WASMCLOUD_CTL_HOST", "WASMCLOUD_CTL_PORT", "WASMCLOUD_LATTICE_PREFIX",
            "WASMCLOUD_CLUSTER_SEED", "WASMCLOUD_HOST_SEED", "HOSTCORE_DATA_DIR", "WASMCLOUD_ALLOW_FILE_LOAD",
            "HOSTCORE_ALLOW_SECOND_HOST")


class LocalHost:
    """`python -m hostcore up` with no flags, its HOME in a temporary directory."""

    def __init__(self, root: Path, mark: str, **env: str) -> None:
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "host.log"
        base = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        # No dashboard: port 4000 is shared by everything on this machine.
        self.env = {**base, "HOME": str(self.home), "HOSTCORE_TEST_MARK": mark, "PYTHONUNBUFFERED": "1",
                    "WASMCLOUD_DASHBOARD_PORT": "0", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.home / ".hostcore"

    def start(self) -> LocalHost:
        with open(self.log_path, "ab") as out:  # a file, never a pipe (architecture.md Tests)
            self.proc = subprocess.Popen([sys.executable, "-m", "hostcore", "up"], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                                         cwd=self.home, start_new_session=True)
        return self

    def wait_ready(self) -> None:
        ok = wait_for(lambda: read_context(self.data_dir) is not None or self.proc.poll() is not None, 40)
        assert ok and read_context(self.data_dir) is not None, self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A CLI command as typed in a second terminal: same HOME, no flags unless given."""
        return subprocess.run([sys.executable, "-m", "hostcore", *args], capture_output=True, text=True,
                              timeout=90, env={**self.env, **env}, cwd=self.home)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                pytest.fail(f"host ignored SIGTERM:\n{self.log()[-3000:]}")


@pytest.fixture
def local_hosts(tmp_path: Path) -> Iterator[list[LocalHost]]:
    """Hosts a test starts (append to the list); stopped at the end, leftovers fail the test."""
    mark = uuid.uuid4().hex
    hosts: list[LocalHost] = []
    hosts.append(LocalHost(tmp_path / "a", mark, WASMCLOUD_ALLOW_FILE_LOAD="true"))
    yield hosts
    for host in hosts:
        host.stop()
    if not wait_for(lambda: not marked_pids(mark), 5.0):
        left = [describe_pid(p) for p in marked_pids(mark)]
        kill_marked(mark)
        pytest.fail(f"processes outlived their host: {left}")


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one `error: …` line and no traceback."""
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_a_local_host_is_driven_with_no_flags(local_hosts: list[LocalHost], tmp_path: Path) -> None:
    host = local_hosts[0].start()
    host.wait_ready()
    ctx = read_context(host.data_dir)
    assert ctx is not None and ctx.pid == host.proc.pid and ctx.lattice_prefix == "default"
    assert (host.data_dir / "context.json").stat().st_mode & 0o077 == 0  # it holds the cluster seed
    assert f"nats_url={ctx.nats_url}" in host.log()  # the context names the NATS the host really uses

    out = host.cli("ctl", "get", "hosts", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [h["id"] for h in json.loads(out.stdout)["hosts"]] == [ctx.host_id]

    # A start that fails exits non-zero with the host's own error text.
    out = host.cli("ctl", "start", "actor", f"file://{tmp_path}/missing.wasm")
    assert "Unable to read actor file" in one_error_line(out)
    tampered = tmp_path / "tampered.wasm"
    tampered.write_bytes(fixture_actor("echo.wasm").read_bytes()[:-64])
    assert "could not start" in one_error_line(host.cli("ctl", "start", "actor", f"file://{tampered}"))
    assert "Unknown built-in provider builtin:nope" in one_error_line(
        host.cli("ctl", "start", "provider", "builtin:nope"))
    out = host.cli("ctl", "scale", "actor", ctx.host_id, ECHO_KEY, f"file://{fixture_actor('kvcounter.wasm')}")
    assert f"not {ECHO_KEY}" in one_error_line(out)  # the module holds another key
    assert "no host NBOGUS in lattice default" in one_error_line(
        host.cli("ctl", "scale", "actor", "NBOGUS", ECHO_KEY, "", "-c", "1"))

    # A successful scale returns once the instances run; `ctl watch` shows them as they start.
    watch_out = tmp_path / "watch.out"
    with open(watch_out, "w") as out_file:
        watcher = subprocess.Popen([sys.executable, "-m", "hostcore", "ctl", "watch", "--type", "actor_started",
                                    "--host-id", ctx.host_id[:10], "--count", "3"], stdout=out_file,
                                   stderr=subprocess.STDOUT, env=host.env, cwd=host.home)
    try:
        assert wait_for(lambda: "-- watching lattice default" in watch_out.read_text(), 30), watch_out.read_text()
        out = host.cli("ctl", "scale", "actor", ctx.host_id, ECHO_KEY, f"file://{fixture_actor('echo.wasm')}",
                       "-c", "3")
        assert out.returncode == 0, out.stderr
        inv = json.loads(host.cli("ctl", "get", "inventory", ctx.host_id, "-o", "json").stdout)
        assert [len(a["instances"]) for a in inv["actors"] if a["id"] == ECHO_KEY] == [3]
        assert watcher.wait(30) == 0
    finally:
        watcher.kill()
        watcher.wait()
    lines = watch_out.read_text().splitlines()[1:]
    assert len(lines) == 3 and all(" actor_started " in x and f"host={ctx.host_id} {ECHO_KEY}" in x for x in lines)

    # Providers too: the start waits for provider_started, the inventory lists it, the stop waits.
    out = host.cli("ctl", "start", "provider", "builtin:httpserver")
    assert out.returncode == 0 and HTTP_KEY in out.stdout, out.stderr
    out = host.cli("ctl", "get", "inventory", ctx.host_id)
    assert f"{HTTP_KEY}   HTTP Server" in out.stdout and "wasmcloud:httpserver" in out.stdout, out.stdout
    out = host.cli("ctl", "stop", "provider", ctx.host_id, HTTP_KEY)
    assert out.returncode == 0, out.stderr
    assert "is not running on host" in one_error_line(host.cli("ctl", "stop", "provider", ctx.host_id, HTTP_KEY))

    out = host.cli("call", ECHO_KEY, "HttpServer.HandleRequest", REQUEST)  # signed with the context's seed
    assert out.returncode == 0, out.stderr
    assert json.loads(json.loads(out.stdout)["body"])["path"] == "/first-run"

    out = host.cli("ctl", "stop", "actor", ctx.host_id, ECHO_KEY)
    assert out.returncode == 0 and "Stopped 3" in out.stdout, out.stderr
    line = one_error_line(host.cli("call", ECHO_KEY, "HttpServer.HandleRequest", REQUEST))
    assert line == (f"error: actor {ECHO_KEY} is not running in lattice default "
                    "(`hostcore ctl get inventory HOST_ID` lists actors)")

    # Stopping the host through the CLI waits for it and leaves no stale context behind.
    out = host.cli("ctl", "stop", "host", ctx.host_id)
    assert out.returncode == 0 and "stopped" in out.stdout, out.stderr
    assert host.proc.wait(20) == 0
    assert not (host.data_dir / "context.json").exists()
    assert "WARNING" not in host.log()  # normal stops are not warnings


def test_a_second_host_gets_its_own_port_and_a_same_home_one_is_refused(local_hosts: list[LocalHost],
                                                                        tmp_path: Path) -> None:
    first = local_hosts[0].start()
    first.wait_ready()
    first_ctx = read_context(first.data_dir)
    assert first_ctx is not None
    taken = not port_free("127.0.0.1", DEFAULT_PORT)  # the first host (or something else) holds 4222

    # Same data directory, embedded NATS again: refused, pointing at --nats-url.
    again = subprocess.run([sys.executable, "-m", "hostcore", "up"], capture_output=True, text=True, timeout=60,
                           env=first.env, cwd=first.home)
    assert again.returncode == 2
    assert f"--nats-url {first_ctx.nats_url}" in again.stderr and "--allow-second-host" in again.stderr

    # Another user (HOME): a separate lattice on a port that is free, and recorded in its context.
    second = LocalHost(tmp_path / "b", first.env["HOSTCORE_TEST_MARK"])
    local_hosts.append(second)
    second.start().wait_ready()
    ctx = read_context(second.data_dir)
    assert ctx is not None and ctx.nats_url != first_ctx.nats_url
    if taken:
        assert urllib.parse.urlsplit(ctx.nats_url).port != DEFAULT_PORT
    out = second.cli("ctl", "get", "hosts", "-o", "json")
    assert [h["id"] for h in json.loads(out.stdout)["hosts"]] == [ctx.host_id]

    # Its default is no file loading: the error says how to turn it on.
    line = one_error_line(second.cli("ctl", "start", "actor", f"file://{fixture_actor('echo.wasm')}"))
    assert "actor file loading is disabled" in line
    assert "--allow-file-load" in line and "WASMCLOUD_ALLOW_FILE_LOAD=true" in line


def test_unreachable_nats_is_one_line_with_the_reason(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED} | {"HOME": str(tmp_path)}
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "hostcore", "ctl", "get", "hosts", "--nats-url",
                          f"nats://127.0.0.1:{port}"], capture_output=True, text=True, timeout=30, env=env)
    line = one_error_line(out)
    assert line.startswith(f"error: cannot reach NATS at nats://127.0.0.1:{port}: connection refused;"), line
    out = subprocess.run([sys.executable, "-m", "hostcore", "ctl", "get", "hosts"], capture_output=True, text=True,
                         timeout=30, env=env | {"WASMCLOUD_CTL_PORT": str(port)})
    assert "check WASMCLOUD_CTL_HOST/WASMCLOUD_CTL_PORT" in one_error_line(out)
