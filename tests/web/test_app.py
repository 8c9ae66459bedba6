"""The dashboard app (hostcore/web/app.py, views.py, auth.py, actions.py input handling) through
Starlette's TestClient, against a real nats-server but no host."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hostcore.nats_server import EmbeddedNatsServer
from hostcore.procutil import wait_for
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.web import Dashboard, DashboardSettings, create_app
from hostcore.web.auth import COOKIE

HOST = "N" + "Q" * 55
TOKEN = "s3cret token/with;odd=chars"


def settings(nats_server: EmbeddedNatsServer, tmp_path: Path, **kw: Any) -> DashboardSettings:
    return DashboardSettings(nats_url=nats_server.url, lattice_prefix=f"w{uuid.uuid4().hex[:10]}", timeout_s=1.0,
                             discovery_wait_s=0.2, start_wait_s=1.0, upload_dir=tmp_path / "uploads", **kw)


@pytest.fixture
def client(nats_server: EmbeddedNatsServer, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(nats_server, tmp_path)), base_url="http://dash.test") as c:
        yield c


@pytest.fixture
def token_client(nats_server: EmbeddedNatsServer, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(nats_server, tmp_path, token=TOKEN)), base_url="http://dash.test") as c:
        yield c


def dashboard(client: TestClient) -> Dashboard:
    dash: Dashboard = client.app.state.dashboard  # type: ignore[attr-defined]
    return dash


def publish_event(client: TestClient, event_type: str, source: str, **data: Any) -> None:
    dash = dashboard(client)
    body = json.dumps({"specversion": "1.0", "type": f"com.wasmcloud.lattice.{event_type}", "source": source,
                       "id": str(uuid.uuid4()), "time": "2024-01-01T00:00:00.000000Z", "data": data}).encode()
    assert client.portal is not None
    client.portal.call(dash.nc.publish, f"wasmbus.evt.{dash.settings.lattice_prefix}", body)
    client.portal.call(dash.nc.flush)


def wait_for_json(client: TestClient, path: str, predicate: Any, timeout: float = 5.0) -> Any:
    """Poll a JSON view (the model changes asynchronously, after NATS delivers the event)."""
    seen: list[Any] = [None]

    def satisfied() -> bool:
        seen[0] = client.get(path).json()
        return bool(predicate(seen[0]))
    # synchronous on purpose: the TestClient runs the app on its own portal thread
    if not wait_for(satisfied, timeout):
        pytest.fail(f"{path} never satisfied the condition; last body: {seen[0]}")
    return seen[0]


# --- probes ------------------------------------------------------------------------------------


def test_livez_and_readyz(client: TestClient) -> None:
    assert client.get("/api/livez").json() == {"alive": True}
    ready = client.get("/api/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_readyz_fails_when_the_nats_connection_is_gone(client: TestClient) -> None:
    assert client.portal is not None
    client.portal.call(dashboard(client).nc.close)
    ready = client.get("/api/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and "not connected" in ready.json()["error"]
    assert client.get("/api/livez").status_code == 200
    action = client.post("/api/hosts/stop", json={"host_id": HOST})
    assert action.status_code == 503
    assert action.json()["error"].startswith("The dashboard's NATS connection failed: ")


def test_lifespan_fails_when_nats_is_unreachable(tmp_path: Path) -> None:
    app = create_app(DashboardSettings(nats_url="nats://127.0.0.1:9", timeout_s=0.5, upload_dir=tmp_path))
    with pytest.raises(Exception), TestClient(app):
        pass


# --- token -------------------------------------------------------------------------------------


def test_without_a_token_everything_but_livez_is_refused(token_client: TestClient) -> None:
    assert token_client.get("/api/livez").status_code == 200
    for path in ("/api/readyz", "/api/lattice", "/api/events", "/api/stream", "/static/dashboard.js"):
        reply = token_client.get(path)
        assert reply.status_code == 401, path
    assert token_client.get("/api/lattice").json() == {"ok": False, "error": "access token required"}
    page = token_client.get("/")
    assert page.status_code == 401 and "Access token required" in page.text
    assert token_client.post("/api/hosts/stop", json={"host_id": HOST}).status_code == 401
    assert token_client.get("/api/lattice", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_bearer_token_and_query_token(token_client: TestClient) -> None:
    assert token_client.get("/api/lattice", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert token_client.get("/api/readyz", params={"token": TOKEN}).json()["ready"] is True


def test_a_page_visit_with_the_token_sets_a_cookie_and_drops_the_token_from_the_url(token_client: TestClient) -> None:
    reply = token_client.get("/", params={"token": TOKEN, "x": "1"}, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/?x=1"
    assert "HttpOnly" in reply.headers["set-cookie"] and "SameSite=Strict" in reply.headers["set-cookie"]
    assert token_client.cookies.get(COOKIE)
    page = token_client.get("/")
    assert page.status_code == 200 and "Hosts" in page.text
    assert token_client.get("/api/lattice").status_code == 200
    token_client.cookies.clear()
    assert token_client.get("/api/lattice").status_code == 401


def test_cross_origin_posts_are_refused(client: TestClient) -> None:
    reply = client.post("/api/hosts/stop", json={"host_id": HOST}, headers={"Origin": "http://evil.example"})
    assert reply.status_code == 403
    same = client.post("/api/hosts/stop", json={}, headers={"Origin": "http://dash.test"})
    assert same.status_code == 400


# --- views -------------------------------------------------------------------------------------


def test_page_and_json_views_follow_lattice_events(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "No hosts in lattice" in page.text
    assert client.get("/api/lattice").json()["hosts"] == []
    publish_event(client, "host_started", HOST, labels={"zone": "a"}, friendly_name="misty-sea-7")
    publish_event(client, "actor_started", HOST, public_key="M" + "E" * 55, image_ref="reg/echo:1",
                  instance_id="i1", annotations={}, api_version=1, claims={"name": "Echo"})
    body = wait_for_json(client, "/api/lattice", lambda b: b["actors"])
    assert body["hosts"][0]["friendly_name"] == "misty-sea-7" and body["hosts"][0]["labels"] == {"zone": "a"}
    assert body["actors"][0] == {"id": "M" + "E" * 55, "name": "Echo", "host_id": HOST, "host_name": "misty-sea-7",
                                 "image_ref": "reg/echo:1", "count": 1}
    events = client.get("/api/events", params={"limit": 1}).json()["events"]
    assert [e["type"] for e in events] == ["actor_started"]
    assert client.get("/api/events", params={"limit": "x"}).status_code == 400
    page = client.get("/")
    assert "misty-sea-7" in page.text and 'data-actor="M' in page.text and "zone=a" in page.text
    publish_event(client, "host_stopped", HOST, labels={})
    wait_for_json(client, "/api/lattice", lambda b: not b["hosts"])


# --- action input and control errors -----------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/api/actors/start", {"actor_ref": "", "host_id": HOST, "count": 1}, 400, "Actor ref is required"),
    ("/api/actors/start", {"actor_ref": "r", "host_id": HOST, "count": "two"}, 400, "Count must be a whole number"),
    ("/api/actors/start", {"actor_ref": "r", "host_id": HOST, "count": 0}, 400, "Count must be at least 1"),
    ("/api/actors/scale", {"host_id": HOST, "actor_id": "M1", "count": -1}, 400, "Count must be at least 0"),
    ("/api/links", {"actor_id": "M1", "provider_id": "V1", "contract_id": "c", "values": "PORT"}, 400,
     "Values: expected KEY=VALUE, got 'PORT'"),
    ("/api/invoke", {"actor_id": "M1", "operation": "op", "payload": "{}"}, 409,
     "The dashboard has no cluster seed to sign invocations with"),
])
def test_bad_input_is_answered_inline(client: TestClient, path: str, body: dict[str, Any], status: int,
                                      error: str) -> None:
    reply = client.post(path, json=body)
    assert reply.status_code == status
    assert reply.json() == {"ok": False, "error": error}


def test_non_json_body_is_refused(client: TestClient) -> None:
    reply = client.post("/api/hosts/stop", content=b"not json", headers={"Content-Type": "application/json"})
    assert reply.json() == {"ok": False, "error": "The request body is not JSON"}


def test_requests_nobody_answers_time_out_inline(client: TestClient) -> None:
    lattice = dashboard(client).settings.lattice_prefix
    reply = client.post("/api/actors/start", json={"actor_ref": "reg/echo:1", "host_id": HOST, "count": 1})
    assert reply.status_code == 504
    assert reply.json()["error"].startswith(f"No reply on wasmbus.ctl.{lattice}.cmd.{HOST}.la within")
    reply = client.post("/api/actors/start", json={"actor_ref": "reg/echo:1", "host_id": "", "count": 1,
                                                   "constraints": "zone=a"})
    assert reply.json() == {"ok": False, "error": "No host accepted the auction for reg/echo:1 with constraints "
                                                  "{'zone': 'a'}"}


def test_invocation_errors_and_bad_payloads(nats_server: EmbeddedNatsServer, tmp_path: Path) -> None:
    seed = KeyPair.generate(KeyKind.CLUSTER).seed
    with TestClient(create_app(settings(nats_server, tmp_path, cluster_seed=seed))) as c:
        bad = c.post("/api/invoke", json={"actor_id": "M1", "operation": "op", "payload": "{nope"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("Payload is not JSON")
        nobody = c.post("/api/invoke", json={"actor_id": "M1", "operation": "op", "payload": "{}"})
        assert nobody.status_code == 504 and nobody.json()["error"].startswith("No reply on wasmbus.rpc.")


def test_upload_of_something_that_is_not_an_actor_is_refused(client: TestClient) -> None:
    reply = client.post("/api/actors/upload", files={"actor": ("x.wasm", b"\0asm\1\0\0\0", "application/wasm")},
                        data={"host_id": HOST, "count": "1"})
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("Not a signed actor module: ")
    missing = client.post("/api/actors/upload", data={"host_id": HOST, "count": "1"})
    assert missing.json() == {"ok": False, "error": "Choose a .wasm file to upload"}


def test_settings_repr_hides_secrets(nats_server: EmbeddedNatsServer, tmp_path: Path) -> None:
    text = repr(settings(nats_server, tmp_path, token=TOKEN, cluster_seed=KeyPair.generate(KeyKind.CLUSTER).seed))
    assert TOKEN not in text and "SC" not in text and "token=set" in text
    with pytest.raises(ValueError, match="host_timeout_s"):
        DashboardSettings(nats_url="nats://x", host_timeout_s=0)


def test_metrics_are_served_on_the_dashboard(tmp_path: Path, nats_server: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    settings = DashboardSettings(nats_url=nats_server.url, lattice_prefix="metrics", metrics_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    list(text_string_to_metric_families(resp.text))  # parses (an empty directory has no samples)
