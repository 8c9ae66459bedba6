"""The dashboard in real headless Chromium against real hosts, a real registry and a real
nats-server (issue 7 "Must show"). Every change is observed in the already-open page: the
`page` fixture fails the test if the document was reloaded."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ARTIFACTS, EventWatcher, HostProcess, fixture_actor, http_get, started_host
from dashboard_fixtures import CHROMIUM_ARGS, ECHO_KEY, UI_TIMEOUT_MS, cluster_key, dashboard, page  # noqa: F401
from oci_registry import DockerRegistry
from playwright.async_api import Locator, Page, async_playwright, expect

from hostcore.cli import main as hostcore_cli
from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.nkeys import KeyPair
from hostcore.procutil import free_port
from hostcore.web import DashboardServer, DashboardSettings

ECHO_OCI_PATH = "actors/echo:0.3.4"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as reg:
        yield reg


async def push_echo(registry: DockerRegistry) -> str:
    ref = f"{registry.address}/{ECHO_OCI_PATH}"
    code = await asyncio.to_thread(hostcore_cli, ["reg", "push", ref, str(fixture_actor("echo.wasm")), "--insecure"])
    assert code == 0, f"reg push {ref} failed"
    return ref


def host_row(page: Page, host: HostProcess) -> Locator:
    return page.locator(f'#hosts-table tr[data-host-row="{host.host_id}"]')


def actor_row(page: Page, host: HostProcess, key: str = ECHO_KEY) -> Locator:
    return page.locator(f'#actors-table tr.actor-row[data-actor="{key}"][data-host="{host.host_id}"]')


async def start_from_registry(page: Page, ref: str, host: HostProcess, replicas: int) -> None:
    await page.click('button[data-open="start-actor-modal"]')
    modal = page.locator("#start-actor-modal")
    await modal.locator('input[name="actor_ref"]').fill(ref)
    await modal.locator('select[name="host_id"]').select_option(host.host_id)
    await modal.locator('input[name="count"]').fill(str(replicas))
    await modal.locator('button[type="submit"]').click()


async def scale(page: Page, host: HostProcess, count: int) -> None:
    await actor_row(page, host).locator('button[data-open="scale-actor-modal"]').click()
    modal = page.locator("#scale-actor-modal")
    await modal.locator('input[name="count"]').fill(str(count))
    await modal.locator('button[type="submit"]').click()
    await expect(modal).to_be_hidden()


async def save_screenshot(page: Page) -> None:
    """test-artifacts/dashboard.png; docs/dashboard.png (the README's) is a copy of one of these."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


async def test_start_from_oci_scale_upload_invoke_and_bad_ref(
        host_factory: Callable[..., HostProcess], events: EventWatcher, page: Page, registry: DockerRegistry,
        cluster_key: KeyPair) -> None:
    ref = await push_echo(registry)
    host = await started_host(host_factory, events, env={"WASMCLOUD_OCI_ALLOWED_INSECURE": registry.address,
                                                         "WASMCLOUD_CLUSTER_SEED": cluster_key.seed})
    await expect(host_row(page, host)).to_be_visible()

    # Start echo from its OCI ref with 2 replicas: the actors table shows 2 without a reload.
    await start_from_registry(page, ref, host, 2)
    await expect(page.locator("#start-actor-modal")).to_be_hidden()
    await expect(actor_row(page, host).locator("td.count")).to_have_text("2")
    await expect(actor_row(page, host).locator("td.name")).to_have_text("Echo")
    await expect(host_row(page, host).locator("td.actor-count")).to_have_text("2")

    # Scale to 0: the row goes.
    await scale(page, host, 0)
    await expect(actor_row(page, host)).to_have_count(0)

    # A bad OCI ref: the error shows inline in the modal that caused it, which stays open.
    bad = f"{registry.address}/actors/no-such-actor:0.0.1"
    await start_from_registry(page, bad, host, 1)
    error = page.locator("#start-actor-modal .modal-error")
    await expect(error).to_be_visible()
    assert bad in await error.inner_text() or "not found" in (await error.inner_text()).lower()
    await expect(page.locator("#start-actor-modal")).to_be_visible()
    await page.locator("#start-actor-modal button[data-close]").click()

    # Upload echo.wasm: it appears.
    await page.click('button[data-open="upload-actor-modal"]')
    modal = page.locator("#upload-actor-modal")
    await modal.locator('input[name="actor"]').set_input_files(str(fixture_actor("echo.wasm")))
    await modal.locator('select[name="host_id"]').select_option(host.host_id)
    await modal.locator('button[type="submit"]').click()
    await expect(modal).to_be_hidden()
    await expect(actor_row(page, host).locator("td.count")).to_have_text("1")
    assert "file://" in await actor_row(page, host).locator("td.ref").inner_text()

    # Invoke it from the invocation form: the response shows in the modal.
    await actor_row(page, host).locator('button[data-open="invoke-modal"]').click()
    invoke = page.locator("#invoke-modal")
    await expect(invoke.locator('input[name="actor_id"]')).to_have_value(ECHO_KEY)
    await invoke.locator('button[type="submit"]').click()
    await expect(invoke.locator(".modal-result")).to_contain_text('"statusCode": 200')
    await invoke.locator("button[data-close]").click()

    await expect(page.locator("#events-list li.event-actor_started").first).to_be_visible()


async def test_two_hosts_appear_stopping_one_removes_it_and_a_killed_one_drops_off(
        host_factory: Callable[..., HostProcess], events: EventWatcher, page: Page) -> None:
    # Heartbeats every second; the dashboard drops a host after 3 s without one.
    first, second, third = hosts = [host_factory(env={"HOSTCORE_HEARTBEAT_INTERVAL_S": "1"}).start()
                                    for _ in range(3)]
    await events.wait_for("host_started", count=3, timeout=60)
    for host in hosts:
        await expect(host_row(page, host)).to_be_visible()

    # Selecting a host filters the tables to it.
    await page.locator("#host-filter").select_option(first.host_id)
    await expect(host_row(page, second)).to_be_hidden()
    await page.locator("#host-filter").select_option("")
    await expect(host_row(page, second)).to_be_visible()

    # Stop one from the page: it leaves (host_stopped), the others stay.
    await host_row(page, first).locator("button[data-confirm]").click()
    await page.locator('#confirm-modal button[type="submit"]').click()
    await expect(page.locator("#confirm-modal")).to_be_hidden()
    await expect(host_row(page, first)).to_have_count(0, timeout=30_000)
    assert first.proc is not None and await asyncio.to_thread(first.proc.wait, 30) == 0

    # SIGKILL another (no host_stopped): it drops off after the heartbeat timeout.
    assert second.proc is not None
    os.killpg(second.proc.pid, signal.SIGKILL)
    await asyncio.to_thread(second.proc.wait, 10)
    await expect(host_row(page, second)).to_have_count(0)

    # The live host outlasts several timeouts' worth of heartbeats.
    before = len(events.of_type("host_heartbeat"))
    await events.wait_for("host_heartbeat", lambda d: True, count=before + 5, timeout=15)
    await expect(host_row(page, third)).to_be_visible()


async def test_define_and_delete_a_link_and_start_on_the_first_available_host(
        host_factory: Callable[..., HostProcess], events: EventWatcher, page: Page) -> None:
    host = await started_host(host_factory, events)
    await expect(host_row(page, host)).to_be_visible()
    provider = "VAG3QITQQ2ODAOWB5TTQSDJ53XK3SHBEIFNK4AYJ5RKAX2UNSCAPHA5M"

    await page.click('button[data-open="define-link-modal"]')
    modal = page.locator("#define-link-modal")
    await modal.locator('input[name="actor_id"]').fill(ECHO_KEY)
    await modal.locator('input[name="provider_id"]').fill(provider)
    await modal.locator('input[name="contract_id"]').fill("wasmcloud:httpserver")
    await modal.locator('textarea[name="values"]').fill("PORT=8080\nADDRESS=127.0.0.1")
    await modal.locator('button[type="submit"]').click()
    await expect(modal).to_be_hidden()
    row = page.locator(f'#links-table tr.link-row[data-actor="{ECHO_KEY}"][data-contract="wasmcloud:httpserver"]')
    await expect(row.locator("td.values")).to_contain_text("PORT=8080")
    await expect(row).to_contain_text("default")

    await row.locator("button[data-confirm]").click()
    await page.locator('#confirm-modal button[type="submit"]').click()
    await expect(page.locator("#confirm-modal")).to_be_hidden()
    await expect(row).to_have_count(0)

    # "First available": the host is picked by an actor auction.
    await page.click('button[data-open="start-actor-modal"]')
    start = page.locator("#start-actor-modal")
    await start.locator('input[name="actor_ref"]').fill(f"file://{fixture_actor('echo.wasm')}")
    await start.locator('select[name="host_id"]').select_option("")
    await start.locator('button[type="submit"]').click()
    await expect(start).to_be_hidden()
    await expect(actor_row(page, host).locator("td.count")).to_have_text("1")


async def test_start_a_provider_link_it_and_stop_it(
        host_factory: Callable[..., HostProcess], events: EventWatcher, page: Page) -> None:
    host = await started_host(host_factory, events)
    await expect(host_row(page, host)).to_be_visible()
    await start_from_registry(page, f"file://{fixture_actor('echo.wasm')}", host, 1)
    await expect(actor_row(page, host).locator("td.count")).to_have_text("1")

    await page.click('button[data-open="start-provider-modal"]')
    modal = page.locator("#start-provider-modal")
    await modal.locator('input[name="provider_ref"]').fill("builtin:httpserver")
    await modal.locator('select[name="host_id"]').select_option(host.host_id)
    await modal.locator('button[type="submit"]').click()
    await expect(modal).to_be_hidden()
    provider = page.locator(f'#providers-table tr.provider-row[data-host="{host.host_id}"][data-link="default"]')
    await expect(provider.locator(".badge")).to_have_text("healthy")
    await expect(provider).to_contain_text("wasmcloud:httpserver")
    await expect(host_row(page, host).locator("td.provider-count")).to_have_text("1")
    provider_id = await provider.get_attribute("data-provider")
    assert provider_id and provider_id.startswith("V")

    # Starting it again on the same host: the host's refusal shows inline.
    await page.click('button[data-open="start-provider-modal"]')
    await modal.locator('input[name="provider_ref"]').fill("builtin:httpserver")
    await modal.locator('select[name="host_id"]').select_option(host.host_id)
    await modal.locator('button[type="submit"]').click()
    await expect(modal.locator(".modal-error")).to_contain_text("already running")
    await modal.locator("button[data-close]").click()

    # Link echo to it with the pickers' keys; the provider serves HTTP for echo.
    port = free_port()
    await page.click('button[data-open="define-link-modal"]')
    link = page.locator("#define-link-modal")
    await link.locator('input[name="actor_id"]').fill(ECHO_KEY)
    await link.locator('input[name="provider_id"]').fill(provider_id)
    await link.locator('input[name="contract_id"]').fill("wasmcloud:httpserver")
    await link.locator('textarea[name="values"]').fill(f"PORT={port}")
    await link.locator('button[type="submit"]').click()
    await expect(link).to_be_hidden()
    reply = await http_get(f"http://127.0.0.1:{port}/from/the/dashboard")
    assert reply.status_code == 200 and reply.json()["path"] == "/from/the/dashboard"
    await expect(page.locator(f'#links-table tr.link-row[data-actor="{ECHO_KEY}"]')).to_contain_text(f"PORT={port}")
    await save_screenshot(page)  # the main page with a host, an actor, a provider and a link

    await provider.locator("button[data-confirm]").click()
    await page.locator('#confirm-modal button[type="submit"]').click()
    await expect(page.locator("#confirm-modal")).to_be_hidden()
    await expect(provider).to_have_count(0)


async def test_the_token_gate_in_a_browser(nats_server: EmbeddedNatsServer, lattice: str, tmp_path: Path) -> None:
    settings = DashboardSettings(nats_url=nats_server.url, lattice_prefix=lattice, token="letmein",
                                 discovery_wait_s=0.2, upload_dir=tmp_path)
    server = DashboardServer(settings, port=0)
    assert await asyncio.to_thread(server.start)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            try:
                tab = await browser.new_page()
                reply = await tab.goto(server.url + "/")
                assert reply is not None and reply.status == 401
                await tab.fill('input[name="token"]', "letmein")
                await tab.click('button[type="submit"]')
                await tab.wait_for_selector("#live-status.status-live", timeout=UI_TIMEOUT_MS)
                assert tab.url == server.url + "/"  # the token left the address bar
                status = await tab.evaluate("fetch('/api/readyz').then(r => r.status)")
                assert status == 200
            finally:
                await browser.close()
    finally:
        await asyncio.to_thread(server.close)
