"""The dashboard ASGI app (the OTP host's `wasmcloud_host_web`): `create_app(settings)`.

It drives the lattice only through the control interface and events, so one dashboard can drive
every host of its lattice. The app's `lifespan` owns the resources: its own NATS connection, the
`ControlClient` over it, the `LatticeModel` and the `LatticeWatcher` that feeds it, all kept in
one `Dashboard` on `app.state.dashboard` (no module-level state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hostcore.control.client import ControlClient
from hostcore.errors import NkeyError
from hostcore.native.nkeys import KeyPair
from hostcore.natsconn import NatsEndpoint
from hostcore.web import actions, views
from hostcore.web.auth import TokenMiddleware
from hostcore.web.connection import ConnectionMonitor
from hostcore.web.model import LatticeModel
from hostcore.web.settings import DashboardSettings
from hostcore.web.watcher import LatticeWatcher
from hostcore.telemetry.metrics import MetricsApp

__all__ = ["Dashboard", "create_app"]

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_CLOSE_TIMEOUT_S = 2.0


@dataclass(slots=True, kw_only=True)
class Dashboard:
    """What the app's routes share; built by the lifespan, valid until it ends."""

    settings: DashboardSettings
    templates: Jinja2Templates
    nc: NatsClient
    client: ControlClient
    model: LatticeModel
    watcher: LatticeWatcher
    signer: KeyPair | None  # signs invocations from the invocation form
    fragment_cache: tuple[int, dict[str, str]] = field(default=(-1, {}))


async def _connect(settings: DashboardSettings, monitor: ConnectionMonitor) -> NatsClient:
    async with asyncio.timeout(settings.timeout_s + 1):
        return await nats.connect(**NatsEndpoint.kwargs_for(settings.ctl or settings.nats_url, monitor.on_error),
                                  name="hostcore-dashboard", connect_timeout=settings.timeout_s,
                                  max_reconnect_attempts=-1, reconnect_time_wait=1,
                                  disconnected_cb=monitor.on_disconnect, reconnected_cb=monitor.on_reconnect)


def _signer(settings: DashboardSettings) -> KeyPair | None:
    if not settings.cluster_seed:
        return None
    try:
        return KeyPair.from_seed(settings.cluster_seed)
    except NkeyError:
        log.warning("dashboard cluster seed is invalid; the invocation form is disabled")
        return None


def create_app(settings: DashboardSettings) -> Starlette:
    """The dashboard app for `settings`. Nothing is opened until the app's lifespan starts
    (uvicorn or `TestClient` as a context manager); the lifespan raises when NATS is unreachable."""
    templates = Jinja2Templates(directory=_HERE / "templates")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Compile the templates off the loop now rather than inside the first requests.
        await asyncio.to_thread(views.load_templates, templates)
        monitor = ConnectionMonitor(settings.nats_url)
        nc = await _connect(settings, monitor)
        try:
            client = ControlClient(nc, lattice_prefix=settings.lattice_prefix,
                                   ctl_topic_prefix=settings.ctl_topic_prefix, timeout_s=settings.timeout_s)
            model = LatticeModel(settings.lattice_prefix, host_timeout_s=settings.host_timeout_s,
                                 event_buffer=settings.event_buffer)
            async with LatticeWatcher(nc, client, model, settings) as watcher:
                monitor.listener = watcher.on_connection
                app.state.dashboard = Dashboard(settings=settings, templates=templates, nc=nc, client=client,
                                                model=model, watcher=watcher, signer=_signer(settings))
                log.info("dashboard started", extra={"lattice": settings.lattice_prefix})
                yield
        finally:
            monitor.closing = True
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await nc.drain()
            except (TimeoutError, nats.errors.Error):
                await nc.close()
            log.info("dashboard stopped", extra={"lattice": settings.lattice_prefix})

    routes = [
        Route("/", views.index, methods=["GET"]),
        Route("/api/livez", views.livez, methods=["GET"]),
        Route("/api/readyz", views.readyz, methods=["GET"]),
        Route("/api/lattice", views.lattice, methods=["GET"]),
        Route("/api/events", views.events, methods=["GET"]),
        Route("/api/stream", views.stream, methods=["GET"]),
        Route("/api/actors/start", actions.start_actor, methods=["POST"]),
        Route("/api/actors/upload", actions.upload_actor, methods=["POST"]),
        Route("/api/actors/scale", actions.scale_actor, methods=["POST"]),
        Route("/api/providers/start", actions.start_provider, methods=["POST"]),
        Route("/api/providers/stop", actions.stop_provider, methods=["POST"]),
        Route("/api/links", actions.put_link, methods=["POST"]),
        Route("/api/links/delete", actions.delete_link, methods=["POST"]),
        Route("/api/hosts/stop", actions.stop_host, methods=["POST"]),
        Route("/api/invoke", actions.invoke, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    if settings.metrics_dir is not None:  # issue 8: Prometheus text on the dashboard server
        routes.append(Route("/metrics", MetricsApp(settings.metrics_dir)))
    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(TokenMiddleware, token=settings.token)])
