"""What a default host exposes: with instances and a provider running, every socket its processes
listen on is on loopback (the httpserver link's PORT, which the user asked for, aside); a frame
forged onto a Thespian port is refused before unpickling; a full run's logs hold no secret."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from pathlib import Path
from typing import Any, Callable

import msgpack
import nats
import requests
from conftest import EventWatcher, HostProcess, fixture_actor, marked_pids
from listeners import listeners

from hostcore.control.client import ControlClient
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.native.claims import extract_claims
from hostcore.procutil import free_port, wait_for
from hostcore.native.par import builtin_provider_key
from hostcore.natsconn import flush_in_order

ECHO = fixture_actor("echo.wasm")
HTTP_GET = msgpack.packb({"method": "GET", "path": "/x", "queryString": "", "header": {}, "body": b""})


class MakeDir:
    """Unpickling this creates a directory: proof that a frame was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.path),)


def forged_frame(marker: Path) -> bytes:
    """A Thespian TCP frame ("<length>>" + pickle) whose unpickling would create `marker`."""
    payload = pickle.dumps(MakeDir(marker))
    return b"%d>" % len(payload) + payload


def send_and_drain(port: int, data: bytes) -> bytes:
    """Send `data` to 127.0.0.1:port and read until the peer closes (it has handled the frame)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(4096):
            received += chunk
        return received


def embedded_nats_port(mark: str) -> int:
    for pid in marked_pids(mark):
        try:
            if b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                [listener] = listeners([pid])
                return listener.port
        except (OSError, ValueError):
            continue
    raise AssertionError("no embedded nats-server among the host's processes")


def test_forged_payload_is_live() -> None:
    """The payload the host must refuse really does act when unpickled (so refusing it matters)."""
    target = Path(f"/tmp/hostcore-forged-{os.getpid()}")
    frame = forged_frame(target)
    pickle.loads(frame.partition(b">")[2])
    assert target.is_dir()
    target.rmdir()


async def test_default_host_listens_on_loopback_only_and_refuses_forged_frames(
        host_factory: Callable[..., HostProcess], tmp_path: Path) -> None:
    admin, dashboard, metrics, link_port = free_port(), free_port(), free_port(), free_port()
    token = "dashboard-token-" + os.urandom(8).hex()
    host = host_factory(nats_url="", env={"HOSTCORE_ADMIN_PORT": str(admin), "WASMCLOUD_DASHBOARD_PORT": str(dashboard),
                                          "HOSTCORE_METRICS_PORT": str(metrics), "HOSTCORE_DASHBOARD_TOKEN": token})
    host.start()
    assert wait_for(lambda: "host running" in host.log(), 30), host.log()[-3000:]
    nats_port = embedded_nats_port(host.mark)
    nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")
    try:
        watcher = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=watcher.on_msg)
        await flush_in_order(nc)
        control = ControlClient(nc, lattice_prefix=host.lattice, timeout_s=5.0)
        echo = extract_claims(ECHO.read_bytes()).public_key
        assert (await control.scale_actor(host.host_id, echo, f"file://{ECHO}", 2)).accepted
        await watcher.wait_for("actor_started", lambda d: d["public_key"] == echo, count=2)
        assert (await control.launch_provider(host.host_id, "builtin:httpserver")).accepted
        provider = builtin_provider_key("httpserver")
        await watcher.wait_for("health_check_passed", lambda d: d["public_key"] == provider, timeout=30)
        assert (await control.put_link(LinkDefinition(actor_id=echo, provider_id=provider, link_name="default",
                                                      contract_id="wasmcloud:httpserver",
                                                      values={"PORT": str(link_port)}))).accepted

        def serving() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{link_port}/", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        assert await asyncio.to_thread(wait_for, serving, 20), "the httpserver link never served"

        found = listeners(marked_pids(host.mark))
        ports = {lst.port for lst in found}
        assert {admin, dashboard, metrics, nats_port, link_port} <= ports, found
        # admin, logger, supervisors, each instance, the provider module, nats-server, launcher
        assert len({lst.pid for lst in found}) >= 8, found
        exposed = [lst for lst in found if not lst.loopback and lst.port != link_port]
        assert exposed == [], f"listening beyond loopback: {exposed}"

        marker = tmp_path / "forged"
        for port in sorted({lst.port for lst in found} - {dashboard, metrics, nats_port, link_port})[:4]:
            send_and_drain(port, forged_frame(marker))  # admin and some of its children
        assert not marker.exists(), "a forged Thespian frame was unpickled"
        resp = await ControlClient(nc, lattice_prefix=host.lattice, timeout_s=5.0).call_actor(
            host.cluster_key, echo, "HttpServer.HandleRequest", HTTP_GET, timeout_s=5)
        assert resp.error is None and msgpack.unpackb(resp.msg)["statusCode"] == 200
    finally:
        await nc.close()
    thespian_log = host.workdir / "data" / "thespian.log"
    assert wait_for(lambda: thespian_log.exists() and "without a valid authentication tag" in thespian_log.read_text(), 10)
    assert host.stop() == 0

    logs = [host.log()] + [p.read_text(errors="replace") for p in (host.workdir / "data").rglob("*.log")]
    for secret in (host.host_key.seed, host.cluster_key.seed, token):
        assert not any(secret in text for text in logs), f"secret {secret[:6]}… in the logs"
