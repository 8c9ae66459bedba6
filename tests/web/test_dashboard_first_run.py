"""The dashboard on a first run, in real headless Chromium against real hosts and nats-servers:
state that existed before the dashboard is shown correctly, the `live` pill follows the
dashboard's NATS connection (one log line per change, not one per reconnect attempt), and Upload
works on a default host (file loading off) while any other file stays refused."""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EventWatcher, HostProcess, eventually, fixture_actor, started_host
from dashboard_fixtures import ECHO_KEY, browser_page, dashboard_settings
from playwright.async_api import Locator, Page, expect

from hostcore.control.client import ControlClient
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import free_port
from hostcore.web import DashboardServer


def host_row(page: Page, host: HostProcess) -> Locator:
    return page.locator(f'#hosts-table tr[data-host-row="{host.host_id}"]')


def actor_row(page: Page, host: HostProcess, key: str = ECHO_KEY) -> Locator:
    return page.locator(f'#actors-table tr.actor-row[data-actor="{key}"][data-host="{host.host_id}"]')


async def test_what_ran_before_the_dashboard_started_shows_with_its_health_and_links(
        host_factory: Callable[..., HostProcess], events: EventWatcher, nc: Any, lattice: str,
        nats_server: EmbeddedNatsServer, tmp_path: Path) -> None:
    host = await started_host(host_factory, events)
    client = ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)
    assert (await client.launch_actor(host.host_id, f"file://{fixture_actor('echo.wasm')}", 2)).accepted
    assert (await client.launch_provider(host.host_id, "builtin:httpserver")).accepted
    provider_key = (await events.wait_for("provider_started", timeout=30))[0]["data"]["public_key"]
    passed = await events.wait_for("health_check_passed", lambda d: d["public_key"] == provider_key, timeout=30)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO_KEY, count=2, timeout=30)
    port = free_port()
    assert (await client.put_link(LinkDefinition(actor_id=ECHO_KEY, provider_id=provider_key,
                                                 contract_id="wasmcloud:httpserver", link_name="default",
                                                 values={"PORT": str(port)}))).accepted

    # Only now the dashboard process starts, then the page: the host's one health_check_passed is
    # long gone and its next health event is up to 30 s away.
    server = DashboardServer(dashboard_settings(nats_server.url, lattice, tmp_path,
                                                KeyPair.generate(KeyKind.CLUSTER)), port=0)
    assert await asyncio.to_thread(server.start)
    try:
        async with browser_page(server.url) as page:
            provider = page.locator(f'#providers-table tr.provider-row[data-provider="{provider_key}"]')
            await expect(provider.locator(".badge")).to_have_text("healthy")
            await expect(provider).to_contain_text("wasmcloud:httpserver")
            await expect(actor_row(page, host).locator("td.count")).to_have_text("2")
            await expect(actor_row(page, host).locator("td.name")).to_have_text("Echo")
            await expect(host_row(page, host).locator("td.provider-count")).to_have_text("1")
            link = page.locator(f'#links-table tr.link-row[data-actor="{ECHO_KEY}"]')
            await expect(link.locator("td.values")).to_contain_text(f"PORT={port}")

            # The host says so again on each unchanged check (OTP v0.63's health_check_status),
            # with the state, so any late observer learns it from the host alone.
            status = await events.wait_for("health_check_status", lambda d: d["public_key"] == provider_key,
                                           timeout=45)
            assert status[0]["data"]["healthy"] is True and status[0]["data"]["link_name"] == "default"
            assert status[0]["data"]["contract_id"] == "wasmcloud:httpserver"
            assert events.of_type("health_check_passed")[-1] is passed[0]  # no change, no second "passed"
            await expect(provider.locator(".badge")).to_have_text("healthy")
    finally:
        await asyncio.to_thread(server.close)


async def test_the_live_pill_follows_the_nats_connection_and_an_outage_logs_two_lines(
        tmp_path: Path, lattice: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.web")
    nats = EmbeddedNatsServer(tmp_path / "nats").start()
    server = DashboardServer(dashboard_settings(nats.url, lattice, tmp_path, KeyPair.generate(KeyKind.CLUSTER)),
                             port=0)
    try:
        assert await asyncio.to_thread(server.start)
        async with browser_page(server.url) as page:
            pill = page.locator("#live-status")
            await expect(pill).to_have_text("live")

            await asyncio.to_thread(nats.close)
            await expect(pill).to_have_text("NATS down")
            await expect(pill).to_have_class(re.compile(r"\bstatus-down\b"))
            # The dashboard retries about once a second; let several attempts fail.
            def failed_attempts() -> int:
                return sum(r.getMessage().startswith("dashboard NATS reconnect attempt failed") for r in caplog.records)
            await eventually(lambda: failed_attempts() >= 3, 30, "three failed reconnect attempts")

            await asyncio.to_thread(nats.start)  # same port, as a restarted server would be
            await expect(pill).to_have_text("live")
            await expect(pill).to_have_class(re.compile(r"\bstatus-live\b"))
    finally:
        await asyncio.to_thread(server.close)
        nats.close()
    lines = [r for r in caplog.records if r.name.startswith("hostcore.web") and r.levelno >= logging.INFO
             and "NATS" in r.getMessage()]
    assert [(r.levelname, r.getMessage().split(";")[0]) for r in lines] == [
        ("WARNING", "dashboard NATS connection lost"), ("INFO", "dashboard NATS connection restored")]
    assert lines[1].__dict__["errors_not_logged"] >= 3


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def test_upload_starts_on_the_dashboards_own_host_with_file_loading_off(
        host_factory: Callable[..., HostProcess], events: EventWatcher) -> None:
    port = free_port()
    host = await started_host(host_factory, events, env={"WASMCLOUD_ALLOW_FILE_LOAD": "false",
                                                         "WASMCLOUD_DASHBOARD_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    await eventually(lambda: asyncio.to_thread(answers, url + "/api/livez"), 30,
                     lambda: f"the host's dashboard to come up; log:\n{host.log()[-3000:]}", interval=0.1)

    async with browser_page(url) as page:
        await expect(host_row(page, host)).to_be_visible()
        await page.click('button[data-open="upload-actor-modal"]')
        modal = page.locator("#upload-actor-modal")
        # The form starts on the dashboard's own host and says what other hosts need.
        await expect(modal.locator('select[name="host_id"]')).to_have_value(host.host_id)
        await expect(modal.locator('select[name="host_id"] option:checked')).to_contain_text("this dashboard's host")
        await expect(modal.locator("#upload-hint")).to_contain_text("registry")
        await modal.locator('input[name="actor"]').set_input_files(str(fixture_actor("echo.wasm")))
        await modal.locator('button[type="submit"]').click()
        await expect(modal).to_be_hidden()
        await expect(actor_row(page, host).locator("td.count")).to_have_text("1")
        ref = await actor_row(page, host).locator("td.ref").inner_text()
        assert ref.startswith("file://") and "/data/uploads/" in ref, ref

        # Any other file is still refused by that host: the host's error shows inline.
        outside = fixture_actor("kvcounter.wasm")
        await page.click('button[data-open="start-actor-modal"]')
        start = page.locator("#start-actor-modal")
        await start.locator('input[name="actor_ref"]').fill(f"file://{outside}")
        await start.locator('select[name="host_id"]').select_option(host.host_id)
        await start.locator('button[type="submit"]').click()
        await expect(start.locator(".modal-error")).to_contain_text("file loading")
        await start.locator("button[data-close]").click()
    failed = await events.wait_for("actor_start_failed", lambda d: d.get("actor_ref") == f"file://{outside}")
    assert "file loading" in failed[0]["data"]["error"]
