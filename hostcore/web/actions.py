"""State-changing routes: each turns a modal's form into control-interface requests and answers
`{"ok": true, …}` or `{"ok": false, "error": "…"}`, which the modal shows inline.

Starts wait (at most `start_wait_s`) for the event that reports the outcome, because the host
acks `la`/`scale`/`lp` before doing the work (protocol.md §2.3) and reports a failure only as an
`actor_start_failed` / `provider_start_failed` event. No outcome in time means "accepted, still
working" (`pending: true`), e.g. a slow registry pull.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats.errors
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hostcore.control.client import ControlTimeout
from hostcore.control.payloads import json_to_msgpack, msgpack_to_json
from hostcore.errors import ControlRequestRefused, HostcoreError
from hostcore.native.claims import extract_claims
from hostcore.web.forms import ActionFailed, Body, field_count, field_pairs, field_text, json_body
from hostcore.wire.cloudevents import event_name
from hostcore.wire.linkdefs import LinkDefinition

if TYPE_CHECKING:
    from hostcore.web.app import Dashboard

__all__ = ["ActionFailed", "delete_link", "invoke", "put_link", "scale_actor", "start_actor", "start_provider",
           "stop_host", "stop_provider", "upload_actor"]

log = logging.getLogger(__name__)

Handler = Callable[[Request, "Dashboard"], Awaitable[Body]]


def _action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The role boundary of every action: typed errors become inline messages; anything else is
    logged with its traceback and answered with a generic error."""
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request, request.app.state.dashboard)
        except ActionFailed as err:
            return JSONResponse({"ok": False, "error": err.wire}, err.status)
        except ControlTimeout as err:
            return JSONResponse({"ok": False, "error": err.wire}, 504)
        except ControlRequestRefused as err:
            return JSONResponse({"ok": False, "error": err.wire}, 409)
        except HostcoreError as err:
            return JSONResponse({"ok": False, "error": err.wire}, 502)
        except nats.errors.Error as err:
            log.warning("dashboard action failed on NATS", extra={"path": request.url.path, "error": str(err)})
            return JSONResponse({"ok": False, "error": f"The dashboard's NATS connection failed: {err}"}, 503)
        except Exception:
            log.exception("dashboard action failed", extra={"path": request.url.path})
            return JSONResponse({"ok": False, "error": "Internal dashboard error (see the host log)"}, 500)
        return JSONResponse({"ok": True, **result})
    return endpoint


def _event_type(event: Body) -> str:
    return event_name(str(event.get("type", "")))


def _error_text(error: Any) -> str:
    """An event's error text; OTP hosts send Elixir-inspected strings in quotes (protocol.md §2.3)."""
    text = str(error or "unknown error")
    if len(text) > 1 and text[0] == text[-1] == '"':
        try:
            return str(json.loads(text))
        except ValueError:
            return text
    return text


def _bidders(replies: list[Body]) -> list[str]:
    """Host ids of the auction bids (a malformed request gets failure acks, not bids)."""
    return [r["host_id"] for r in replies if isinstance(r.get("host_id"), str) and r["host_id"]]


async def _outcome(fut: asyncio.Future[Body], wait_s: float) -> Body | None:
    try:
        async with asyncio.timeout(wait_s):
            return await fut
    except TimeoutError:
        return None


# --- actors ------------------------------------------------------------------------------------


async def _auction_actor(dash: Dashboard, ref: str, constraints: dict[str, str]) -> str:
    bids = _bidders(await dash.client.auction_actor(ref, constraints, dash.settings.discovery_wait_s))
    if not bids:
        raise ActionFailed(f"No host accepted the auction for {ref}" + (f" with constraints {constraints}"
                                                                          if constraints else ""), 409)
    return bids[0]


async def _launch(dash: Dashboard, host_id: str, ref: str, count: int, constraints: dict[str, str]) -> Body:
    host_id = host_id or await _auction_actor(dash, ref, constraints)

    def reports(ev: Body) -> bool:
        data = ev.get("data") or {}
        return ev.get("source") == host_id and (
            (_event_type(ev) == "actor_started" and data.get("image_ref") == ref)
            or (_event_type(ev) == "actor_start_failed" and data.get("actor_ref") == ref))

    with dash.watcher.expect(reports) as fut:
        await dash.client.launch_actor(host_id, ref, count)
        event = await _outcome(fut, dash.settings.start_wait_s)
    if event is not None and _event_type(event) == "actor_start_failed":
        raise ActionFailed(_error_text(event["data"].get("error")), 409)
    actor_id = event["data"].get("public_key", "") if event else ""
    return {"host_id": host_id, "actor_id": actor_id, "actor_ref": ref, "pending": event is None}


@_action
async def start_actor(request: Request, dash: Dashboard) -> Body:
    """Start `count` instances from a registry ref on `host_id` ("" = first auction bidder)."""
    body = await json_body(request)
    return await _launch(dash, field_text(body, "host_id", required=False), field_text(body, "actor_ref"),
                         field_count(body, "count", 1), field_pairs(body.get("constraints"), "Constraints"))


def _store_upload(directory: Path, module: bytes) -> tuple[str, Path]:
    """Verify the module's claims and store it by content; returns (actor key, path)."""
    claims = extract_claims(module)
    path = directory / f"{claims.public_key}-{hashlib.sha256(module).hexdigest()[:16]}.wasm"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(module)
        tmp.replace(path)
    return claims.public_key, path


@_action
async def upload_actor(request: Request, dash: Dashboard) -> Body:
    """Start an uploaded signed module: stored under `upload_dir` by content, launched as a
    `file://` ref on the chosen host (default: the dashboard's own host, else an auction)."""
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("actor")
        if not isinstance(upload, UploadFile):
            raise ActionFailed("Choose a .wasm file to upload")
        if upload.size is not None and upload.size > dash.settings.max_upload_bytes:
            raise ActionFailed(f"The file is larger than {dash.settings.max_upload_bytes} bytes", 413)
        module = await upload.read(dash.settings.max_upload_bytes + 1)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if len(module) > dash.settings.max_upload_bytes:
        raise ActionFailed(f"The file is larger than {dash.settings.max_upload_bytes} bytes", 413)
    count = field_count(fields, "count", 1) if fields.get("count") else 1
    try:
        actor_id, path = await asyncio.to_thread(_store_upload, dash.settings.upload_dir, module)
    except HostcoreError as err:
        raise ActionFailed(f"Not a signed actor module: {err.wire}") from None
    log.info("actor uploaded", extra={"actor_key": actor_id, "bytes": len(module)})
    # The dashboard's own host loads its uploads/ even with file loading off; any other host
    # needs WASMCLOUD_ALLOW_FILE_LOAD and this machine's files (the form says so).
    host_id = fields.get("host_id") or dash.settings.local_host_id
    result = await _launch(dash, host_id, path.resolve().as_uri(), count,
                           field_pairs(fields.get("constraints"), "Constraints"))
    return {**result, "actor_id": result["actor_id"] or actor_id}


@_action
async def scale_actor(request: Request, dash: Dashboard) -> Body:
    """Bring one host's instances of an actor to `count` (0 stops it)."""
    body = await json_body(request)
    host_id, actor_id = field_text(body, "host_id"), field_text(body, "actor_id")
    count = field_count(body, "count", 0)
    host = dash.model.hosts.get(host_id)
    current = host.actors.get(actor_id) if host else None
    ref = field_text(body, "actor_ref", required=False) or (current.image_ref if current else "")
    running = len(current.instances) if current else 0

    def reports(ev: Body) -> bool:
        data = ev.get("data") or {}
        return ev.get("source") == host_id and (
            (_event_type(ev) == "actor_started" and data.get("public_key") == actor_id)
            or (_event_type(ev) == "actor_start_failed" and data.get("actor_ref") in (ref or actor_id, actor_id)))

    with dash.watcher.expect(reports) as fut:
        await dash.client.scale_actor(host_id, actor_id, ref, count)
        event = await _outcome(fut, dash.settings.start_wait_s) if count > running else None
    if event is not None and _event_type(event) == "actor_start_failed":
        raise ActionFailed(_error_text(event["data"].get("error")), 409)
    return {"host_id": host_id, "actor_id": actor_id, "count": count}


# --- providers, links, hosts, invocations ------------------------------------------------------


@_action
async def start_provider(request: Request, dash: Dashboard) -> Body:
    """Start a provider from a registry ref with a link name and configuration."""
    body = await json_body(request)
    ref, link = field_text(body, "provider_ref"), field_text(body, "link_name", required=False) or "default"
    host_id = field_text(body, "host_id", required=False)
    if not host_id:
        bids = _bidders(await dash.client.auction_provider(
            ref, link, field_pairs(body.get("constraints"), "Constraints"), dash.settings.discovery_wait_s))
        if not bids:
            raise ActionFailed(f"No host accepted the auction for provider {ref} ({link})", 409)
        host_id = bids[0]

    def reports(ev: Body) -> bool:
        data = ev.get("data") or {}
        return ev.get("source") == host_id and data.get("link_name", link) == link and (
            (_event_type(ev) == "provider_started" and data.get("image_ref") == ref)
            or (_event_type(ev) == "provider_start_failed" and data.get("provider_ref") == ref))

    configuration = field_text(body, "configuration", required=False)
    with dash.watcher.expect(reports) as fut:
        await dash.client.launch_provider(host_id, ref, link, configuration)
        event = await _outcome(fut, dash.settings.start_wait_s)
    if event is not None and _event_type(event) == "provider_start_failed":
        raise ActionFailed(_error_text(event["data"].get("error")), 409)
    return {"host_id": host_id, "provider_ref": ref, "link_name": link, "pending": event is None}


@_action
async def stop_provider(request: Request, dash: Dashboard) -> Body:
    body = await json_body(request)
    await dash.client.stop_provider(
        field_text(body, "host_id"), field_text(body, "provider_id"), field_text(body, "link_name"),
        field_text(body, "contract_id", required=False))
    return {}


@_action
async def put_link(request: Request, dash: Dashboard) -> Body:
    body = await json_body(request)
    link = LinkDefinition(actor_id=field_text(body, "actor_id"), provider_id=field_text(body, "provider_id"),
                          contract_id=field_text(body, "contract_id"),
                          link_name=field_text(body, "link_name", required=False) or "default",
                          values=field_pairs(body.get("values"), "Values"))
    await dash.client.put_link(link)
    return {}


@_action
async def delete_link(request: Request, dash: Dashboard) -> Body:
    body = await json_body(request)
    await dash.client.del_link(field_text(body, "actor_id"), field_text(body, "contract_id"),
                               field_text(body, "link_name"))
    return {}


@_action
async def stop_host(request: Request, dash: Dashboard) -> Body:
    body = await json_body(request)
    await dash.client.stop_host(field_text(body, "host_id"))
    return {}


@_action
async def invoke(request: Request, dash: Dashboard) -> Body:
    """Call an actor with a JSON payload sent as msgpack (like `wash call`); returns the reply."""
    if dash.signer is None:
        raise ActionFailed("The dashboard has no cluster seed to sign invocations with", 409)
    body = await json_body(request)
    try:
        payload = json_to_msgpack(field_text(body, "payload", required=False) or "{}")
    except ValueError as err:
        raise ActionFailed(f"Payload is not JSON: {err}") from None
    actor_id, operation = field_text(body, "actor_id"), field_text(body, "operation")
    resp = await dash.client.call_actor(dash.signer, actor_id, operation, payload, timeout_s=dash.settings.timeout_s)
    if resp.error:
        raise ActionFailed(resp.error, 502)
    return {"response": msgpack_to_json(resp.msg)}
