"""A convention with HOSTCORE_CONVENTION_SECRET: a worker with the secret joins and serves
instances; a worker with another secret is refused before anything it sends is unpickled."""

from __future__ import annotations

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
from conftest import EventWatcher, HostProcess, fixture_actor, kill_marked, marked_pids, started_host

from hostcore.control.client import ControlClient
from hostcore.native.claims import extract_claims
from hostcore.procutil import free_port, wait_for

ECHO = fixture_actor("echo.wasm")
HTTP_GET = msgpack.packb({"method": "GET", "path": "/c", "queryString": "", "header": {}, "body": b""})
FAST = {"HOSTCORE_CONVENTION_REREGISTRATION_S": "1", "HOSTCORE_CONVENTION_MISS_MAX": "2"}


class Worker:
    def __init__(self, workdir: Path, join_port: int, name: str, secret: str) -> None:
        self.name, self.mark, self.log_path = name, uuid.uuid4().hex, workdir / f"worker-{name}.log"
        self.env = {**os.environ, **FAST, "HOSTCORE_TEST_MARK": self.mark, "HOSTCORE_DATA_DIR": str(workdir / name),
                    "HOSTCORE_CONVENTION_SECRET": secret, "PYTHONUNBUFFERED": "1"}
        self.cmd = [sys.executable, "-m", "hostcore", "worker", "--join", f"127.0.0.1:{join_port}",
                    "--admin-port", str(free_port()), "--name", name]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.workdir, start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(host: HostProcess, name: str, secret: str) -> Worker:
        worker = Worker(tmp_path, int(host.env["HOSTCORE_ADMIN_PORT"]), name, secret)
        made.append(worker)
        return worker.start()

    yield make
    for worker in made:
        worker.stop()
    left = [p for w in made for p in marked_pids(w.mark)]
    if left and not wait_for(lambda: not any(marked_pids(w.mark) for w in made), 5.0):
        for worker in made:
            kill_marked(worker.mark)
        pytest.fail(f"worker processes outlived their worker: {left}")


def joined_lines(host: HostProcess) -> list[str]:
    return [ln for ln in host.log().splitlines() if "worker joined" in ln]


async def test_only_a_worker_with_the_secret_joins(
        host_factory: Callable[..., HostProcess], workers: Callable[..., Worker], events: EventWatcher,
        nc: Any, lattice: str) -> None:
    secret = "convention-" + os.urandom(12).hex()
    host = await started_host(host_factory, events, env={
        **FAST, "HOSTCORE_ADMIN_PORT": str(free_port()), "HOSTCORE_PLACEMENT": "workers",
        "HOSTCORE_CONVENTION_SECRET": secret})
    intruder = workers(host, "intruder", "not-the-secret-" + os.urandom(8).hex())
    member = workers(host, "member", secret)
    assert wait_for(lambda: any("worker_id=member " in ln for ln in joined_lines(host)), 30), host.log()[-3000:]

    control = ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)
    key = extract_claims(ECHO.read_bytes()).public_key
    assert (await control.scale_actor(host.host_id, key, f"file://{ECHO}", 1)).accepted
    await events.wait_for("actor_started", lambda d: d["public_key"] == key)
    resp = await control.call_actor(host.cluster_key, key, "HttpServer.HandleRequest", HTTP_GET, timeout_s=5)
    assert resp.error is None and msgpack.unpackb(resp.msg)["statusCode"] == 200
    assert any(Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ActorModule") for p in marked_pids(member.mark))

    thespian_log = host.workdir / "data" / "thespian.log"
    assert wait_for(lambda: thespian_log.exists()
                    and "without a valid authentication tag" in thespian_log.read_text(errors="replace"), 20)
    assert not any("worker_id=intruder " in ln for ln in joined_lines(host))
    assert intruder.proc is not None and intruder.proc.poll() is None  # refused, not crashed into
    logs = [host.log(), *(p.read_text(errors="replace") for p in host.workdir.rglob("*.log"))]
    assert not any(secret in text for text in logs)
