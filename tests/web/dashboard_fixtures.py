"""Fixtures for the dashboard browser tests: a DashboardServer on the test's lattice and a page in
real headless Chromium (Debian's `chromium`, driven by Playwright's async API on the test's loop;
architecture.md "Tests": `playwright install` is not possible here)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.web import DashboardServer, DashboardSettings

# A deadline for what the page must come to show, not a speed target: a loaded 2-core CI machine
# needs more than Playwright's 5 s default to start a host and let the dashboard discover it.
expect.set_options(timeout=20_000)

ECHO_KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
UI_TIMEOUT_MS = 20_000

__all__ = ["CHROMIUM_ARGS", "ECHO_KEY", "UI_TIMEOUT_MS", "browser_page", "cluster_key", "dashboard", "dashboard_settings",
           "page"]


@pytest.fixture
def cluster_key() -> KeyPair:
    """The cluster key the test's hosts trust and the dashboard signs invocations with."""
    return KeyPair.generate(KeyKind.CLUSTER)


def dashboard_settings(nats_url: str, lattice: str, tmp_path: Path, cluster_key: KeyPair) -> DashboardSettings:
    """A standalone dashboard's settings for tests: short timeouts, hosts dropped after 3 s."""
    return DashboardSettings(nats_url=nats_url, lattice_prefix=lattice, timeout_s=5.0,
                             cluster_seed=cluster_key.seed, host_timeout_s=3.0, discovery_wait_s=0.5,
                             start_wait_s=20.0, upload_dir=tmp_path / "uploads")


@pytest.fixture
def dashboard(nats_server: EmbeddedNatsServer, lattice: str, tmp_path: Path,
              cluster_key: KeyPair) -> Iterator[DashboardServer]:
    server = DashboardServer(dashboard_settings(nats_server.url, lattice, tmp_path, cluster_key), port=0)
    assert server.start(), "the dashboard did not start"
    yield server
    server.close()


@contextlib.asynccontextmanager
async def browser_page(url: str) -> AsyncIterator[Page]:
    """The dashboard at `url` open in headless Chromium, its live stream up; fails the test if
    the page was reloaded meanwhile."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (apt-get install -y chromium)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 1000})
            tab = await context.new_page()
            tab.set_default_timeout(UI_TIMEOUT_MS)
            await tab.goto(url + "/")
            await tab.wait_for_selector("#live-status.status-live")
            # Set once; a page reload would lose it (the tables must update without reloading).
            await tab.evaluate("window.__sameDocument = 42")
            yield tab
            assert await tab.evaluate("window.__sameDocument") == 42, "the page was reloaded"
        finally:
            async with asyncio.timeout(10):
                await browser.close()


@pytest.fixture
async def page(dashboard: DashboardServer) -> AsyncIterator[Page]:
    async with browser_page(dashboard.url) as tab:
        yield tab
