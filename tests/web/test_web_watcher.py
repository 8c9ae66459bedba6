"""LatticeWatcher (hostcore/web/watcher.py) against a real host: a dashboard started after the
host (as the launcher does: host first, then the dashboard) finds it by ping and reads its
inventory; heartbeats that disagree make it re-read the inventory."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import EventWatcher, HostProcess, eventually, fixture_actor, started_host

from hostcore.control.client import ControlClient
from hostcore.nats_server import EmbeddedNatsServer
from hostcore.web import DashboardServer, DashboardSettings

ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"


async def lattice_view(server: DashboardServer, predicate: Callable[[dict[str, Any]], bool],
                       timeout: float = 15.0) -> dict[str, Any]:
    """Poll /api/lattice until `predicate` holds (the page's model has no event of its own)."""
    def fetch() -> dict[str, Any]:
        with urllib.request.urlopen(f"{server.url}/api/lattice", timeout=5) as reply:
            body: dict[str, Any] = json.load(reply)
            return body

    seen: list[dict[str, Any]] = [{}]

    async def matching() -> dict[str, Any] | None:
        seen[0] = await asyncio.to_thread(fetch)
        return seen[0] if predicate(seen[0]) else None
    found: dict[str, Any] = await eventually(matching, timeout, lambda: f"/api/lattice to match; last body: {seen[0]}")
    return found


async def test_a_dashboard_started_later_finds_running_hosts_and_actors(
        host_factory: Callable[..., HostProcess], events: EventWatcher, nc: Any, lattice: str,
        nats_server: EmbeddedNatsServer, tmp_path: Path) -> None:
    host = await started_host(host_factory, events)
    client = ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)
    assert (await client.scale_actor(host.host_id, ECHO_KEY, f"file://{fixture_actor('echo.wasm')}", 2)).accepted
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=2)

    settings = DashboardSettings(nats_url=nats_server.url, lattice_prefix=lattice, discovery_wait_s=0.3,
                                 upload_dir=tmp_path)
    server = DashboardServer(settings, port=0)
    assert await asyncio.to_thread(server.start)
    try:
        body = await lattice_view(server, lambda b: bool(b.get("actors")))
        assert [h["id"] for h in body["hosts"]] == [host.host_id]
        assert body["hosts"][0]["friendly_name"] and body["hosts"][0]["uptime_seconds"] >= 0
        assert [(a["id"], a["name"], a["count"]) for a in body["actors"]] == [(ECHO_KEY, "Echo", 2)]
    finally:
        await asyncio.to_thread(server.close)
