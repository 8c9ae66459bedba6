"""Read-only routes: the page, its live stream, the JSON views and the health probes.

The page and the stream render the same Jinja2 fragments (one per table), so there is one way
to draw each table; the stream sends them again whenever the model changed.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.templating import Jinja2Templates

if TYPE_CHECKING:
    from hostcore.web.app import Dashboard

__all__ = ["events", "index", "lattice", "livez", "load_templates", "readyz", "render_fragments", "stream"]

FRAGMENTS = ("hosts", "actors", "providers", "links", "events", "host_filter", "host_options",
             "upload_host_options", "actor_keys", "provider_keys")
_EVENTS_SHOWN = 50
_KEEPALIVE_S = 15.0
_MIN_PUSH_INTERVAL_S = 0.1  # coalesce bursts of events (e.g. 100 actor_started) into one push
_NO_STORE = {"Cache-Control": "no-store"}


def load_templates(templates: Jinja2Templates) -> None:
    """Load (compile) every template into the environment's cache."""
    for name in ("index.html", "modals.html", *(f"fragments/{f}.html" for f in FRAGMENTS)):
        templates.get_template(name)


def _dashboard(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def _context(dash: Dashboard) -> dict[str, Any]:
    snap = dash.model.snapshot()
    actor_keys = sorted({(a["id"], a["name"]) for a in snap["actors"]}, key=lambda kv: (kv[1], kv[0]))
    provider_keys = list({(p["id"], p["link_name"]): p for p in snap["providers"]}.values())
    return {"snap": snap, "events": dash.model.recent_events(_EVENTS_SHOWN), "actor_keys": actor_keys,
            "provider_keys": provider_keys, "invoke_enabled": dash.signer is not None,
            "local_host_id": dash.settings.local_host_id}


def render_fragments(dash: Dashboard) -> dict[str, str]:
    """Every fragment's HTML for the model's current version (rendered once per version)."""
    version, cached = dash.fragment_cache
    if version == dash.model.version:
        return cached
    ctx = _context(dash)
    env = dash.templates.env
    fragments = {name: env.get_template(f"fragments/{name}.html").render(ctx) for name in FRAGMENTS}
    dash.fragment_cache = (dash.model.version, fragments)
    return fragments


async def index(request: Request) -> Response:
    dash = _dashboard(request)
    return dash.templates.TemplateResponse(request, "index.html", _context(dash), headers=_NO_STORE)


async def livez(request: Request) -> Response:
    """The process is alive and serving (no token needed)."""
    return JSONResponse({"alive": True}, headers=_NO_STORE)


async def readyz(request: Request) -> Response:
    """Ready when the dashboard's NATS connection is up and a flush round-trips in time."""
    dash = _dashboard(request)
    body: dict[str, Any] = {"ready": False, "nats_url": dash.settings.nats_url,
                            "lattice_prefix": dash.settings.lattice_prefix}
    if not dash.nc.is_connected:
        return JSONResponse({**body, "error": "NATS connection is not connected"}, 503, headers=_NO_STORE)
    try:
        await dash.nc.flush(timeout=math.ceil(dash.settings.timeout_s))
    except Exception as err:  # noqa: BLE001 -- any failure means "not ready"; say which
        return JSONResponse({**body, "error": f"NATS flush failed: {type(err).__name__}"}, 503, headers=_NO_STORE)
    return JSONResponse({**body, "ready": True, "hosts": len(dash.model.hosts)}, headers=_NO_STORE)


async def lattice(request: Request) -> Response:
    """The whole model: hosts, actors, providers, links."""
    return JSONResponse(_dashboard(request).model.snapshot(), headers=_NO_STORE)


async def events(request: Request) -> Response:
    """The recent CloudEvents, newest first (`?limit=`, default 50)."""
    try:
        limit = max(1, min(int(request.query_params.get("limit", _EVENTS_SHOWN)), 10_000))
    except ValueError:
        return JSONResponse({"ok": False, "error": "limit must be a number"}, 400)
    return JSONResponse({"events": _dashboard(request).model.recent_events(limit)}, headers=_NO_STORE)


async def stream(request: Request) -> Response:
    """Server-sent events: `state` (the fragments and whether the dashboard's NATS connection is
    up: the page's `live` pill) now and after every change; a comment every
    15 s keeps proxies from closing the stream. Ends when the dashboard shuts down."""
    dash = _dashboard(request)

    async def body() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        version = -1
        while not dash.watcher.closing:
            if await dash.watcher.wait_changed(version, _KEEPALIVE_S):
                version = dash.model.version
                payload = json.dumps({"version": version, "nats_connected": dash.model.nats_connected,
                                      "fragments": render_fragments(dash)})
                yield f"event: state\ndata: {payload}\n\n"
                await asyncio.sleep(_MIN_PUSH_INTERVAL_S)
            elif not dash.watcher.closing:
                yield ": keepalive\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={**_NO_STORE, "X-Accel-Buffering": "no"})
