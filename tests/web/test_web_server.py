"""DashboardServer (hostcore/web/server.py): uvicorn on a daemon thread, a busy port, the live
stream, and a bounded, idempotent close."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from hostcore.nats_server import EmbeddedNatsServer
from hostcore.web import DashboardServer, DashboardSettings

HOST = "N" + "S" * 55


def make_settings(nats_server: EmbeddedNatsServer, tmp_path: Path, **kw: Any) -> DashboardSettings:
    return DashboardSettings(nats_url=nats_server.url, lattice_prefix=f"s{uuid.uuid4().hex[:10]}",
                             discovery_wait_s=0.2, upload_dir=tmp_path, **kw)


def dashboard_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hostcore-dashboard"]


def read_sse_event(resp: http.client.HTTPResponse) -> tuple[str, dict[str, Any]]:
    """The next `event:`/`data:` pair of a server-sent event stream (comments skipped)."""
    name = ""
    while True:
        line = resp.fp.readline().decode()
        assert line, "the stream ended"
        if line.startswith("event: "):
            name = line[7:].strip()
        elif line.startswith("data: ") and name:
            return name, json.loads(line[6:])


def test_serves_and_closes(nats_server: EmbeddedNatsServer, tmp_path: Path) -> None:
    server = DashboardServer(make_settings(nats_server, tmp_path), port=0)
    assert server.start()
    try:
        assert server.port != 0
        with urllib.request.urlopen(f"{server.url}/api/readyz", timeout=5) as reply:
            assert json.load(reply)["ready"] is True
    finally:
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 5
    server.close()  # idempotent
    assert not dashboard_threads()
    with pytest.raises(RuntimeError):
        server.start()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.url}/api/livez", timeout=2)


def test_a_port_in_use_is_a_warning_not_an_error(nats_server: EmbeddedNatsServer, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        server = DashboardServer(make_settings(nats_server, tmp_path), port=busy.getsockname()[1])
        with caplog.at_level(logging.WARNING, logger="hostcore.web.server"):
            assert server.start() is False
        assert "dashboard port in use; running without the dashboard" in caplog.messages
        server.close()
    assert not dashboard_threads()


def test_unreachable_nats_means_no_dashboard(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = DashboardServer(DashboardSettings(nats_url="nats://127.0.0.1:9", timeout_s=0.5, upload_dir=tmp_path),
                             port=0)
    with caplog.at_level(logging.WARNING, logger="hostcore.web.server"):
        assert server.start() is False
    assert "dashboard did not start; running without it" in caplog.messages
    assert not dashboard_threads()


def test_live_stream_pushes_changes_and_ends_on_close(nats_server: EmbeddedNatsServer, tmp_path: Path) -> None:
    settings = make_settings(nats_server, tmp_path)
    with DashboardServer(settings, port=0) as server:
        assert server.start()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/api/stream")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
        name, state = read_sse_event(resp)
        assert name == "state" and "No hosts in lattice" in state["fragments"]["hosts"]
        assert set(state["fragments"]) >= {"hosts", "actors", "providers", "links", "events"}

        event = {"specversion": "1.0", "type": "com.wasmcloud.lattice.host_started", "source": HOST, "id": "1",
                 "time": "2024-01-01T00:00:00.000000Z", "data": {"labels": {}, "friendly_name": "quiet-lake-3"}}
        publish(nats_server, f"wasmbus.evt.{settings.lattice_prefix}", json.dumps(event).encode())
        name, state = read_sse_event(resp)
        assert "quiet-lake-3" in state["fragments"]["hosts"]
        assert "host_started" in state["fragments"]["events"]

        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 5, "an open live stream held up close()"
        assert resp.fp.read() is not None  # the stream ended
        conn.close()
    assert not dashboard_threads()


def publish(nats_server: EmbeddedNatsServer, subject: str, data: bytes) -> None:
    """A plain NATS publish over a raw socket (this test has no event loop)."""
    host, port = nats_server.url.removeprefix("nats://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.recv(4096)  # INFO
        sock.sendall(b'CONNECT {"verbose":false}\r\n' + f"PUB {subject} {len(data)}\r\n".encode() + data
                     + b"\r\nPING\r\n")
        assert b"PONG" in sock.recv(4096)
