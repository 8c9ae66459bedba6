"""hostcore.providers.httpserver: the provider as a real process; a fake actor answers its
`HttpServer.HandleRequest` invocations on NATS, and `requests` plays the HTTP client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
import requests
from conftest import eventually, port_open

from hostcore.native.invocation import Invocation, InvocationResponse, InvocationValidator
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import free_port
from hostcore.providers.httpserver import HANDLE_REQUEST, HttpRequest, HttpResponse
from hostcore.natsconn import flush_in_order
from provider_support import ProviderEnv, ProviderProc, provider_procs  # noqa: F401 (fixture)

CONTRACT = "wasmcloud:httpserver"
MODULE = "hostcore.providers.httpserver"


class FakeActor:
    """Answers invocations for one actor key like echo.wasm would, with a few special paths:
    `/slow` never answers, `/fail` answers with an InvocationResponse error."""

    def __init__(self, env: ProviderEnv, actor: str) -> None:
        self.env, self.actor = env, actor
        self.validator = InvocationValidator([env.cluster.public_key])
        self.seen: list[Invocation] = []

    async def on_msg(self, msg: Any) -> None:
        inv = Invocation.from_wire(msg.data)
        self.validator.validate(inv)
        self.seen.append(inv)
        req = HttpRequest.from_wire(inv.msg)
        if req.path == "/slow":
            return
        if req.path == "/fail":
            await msg.respond(InvocationResponse.failure(inv.id, "actor says no", "").to_wire())
            return
        body = json.dumps({"method": req.method, "path": req.path, "query_string": req.query_string,
                           "body": req.body.decode(), "header": req.header}).encode()
        resp = HttpResponse(status_code=201 if req.method == "POST" else 200,
                            header={"content-type": ["application/json"], "x-multi": ["a", "b"]}, body=body)
        await msg.respond(InvocationResponse.success(inv.id, resp.to_wire(), "").to_wire())


@pytest.fixture
def env(nc: nats.aio.client.Client, nats_server: Any) -> ProviderEnv:
    return ProviderEnv(nc, nats_server.url, CONTRACT)


@pytest.fixture
async def actor(env: ProviderEnv) -> AsyncIterator[FakeActor]:
    fake = FakeActor(env, env.actor)
    sub = await env.nc.subscribe(f"wasmbus.rpc.{env.lattice}.{env.actor}", cb=fake.on_msg)
    await flush_in_order(env.nc)
    yield fake
    await sub.unsubscribe()


async def _wait_port(port: int, *, open_: bool = True, proc: ProviderProc | None = None) -> None:
    async def reached() -> bool:
        return await asyncio.to_thread(port_open, port) == open_
    await eventually(reached, 10, lambda: f"port {port} to {'open' if open_ else 'close'}\n{proc.log() if proc else ''}")


async def _serving(env: ProviderEnv, start: Callable[..., ProviderProc], port: int, **hd: Any) -> ProviderProc:
    proc = start(env.host_data(**hd), module=MODULE)
    await env.wait_healthy(proc)
    await env.put_link(env.link(PORT=str(port)))
    await _wait_port(port, proc=proc)
    return proc


async def test_request_and_response_round_trip(env: ProviderEnv, actor: FakeActor,
                                              provider_procs: Callable[..., ProviderProc]) -> None:
    port = free_port()
    await _serving(env, provider_procs, port)
    resp = await asyncio.to_thread(requests.post, f"http://127.0.0.1:{port}/a/b%20c?x=1&y=two",
                                   data=b"hello body", headers={"X-Test": "yes"}, timeout=10)
    assert resp.status_code == 201
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-multi"] == "a, b"
    echoed = resp.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/a/b%20c"
    assert echoed["query_string"] == "x=1&y=two"
    assert echoed["body"] == "hello body"
    assert echoed["header"]["x-test"] == ["yes"]
    inv = actor.seen[-1]
    assert inv.operation == HANDLE_REQUEST
    assert (inv.origin.public_key, inv.origin.contract_id, inv.origin.link_name) == (env.provider_key, CONTRACT, "default")
    assert inv.target.public_key == env.actor

    resp = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/", timeout=10)
    assert resp.status_code == 200 and resp.json()["method"] == "GET" and resp.json()["query_string"] == ""


async def test_timeouts_give_503_and_actor_errors_500(env: ProviderEnv, actor: FakeActor,
                                                     provider_procs: Callable[..., ProviderProc]) -> None:
    port = free_port()
    await _serving(env, provider_procs, port, default_rpc_timeout_ms=300)
    resp = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/slow", timeout=10)
    assert (resp.status_code, resp.content) == (503, b"")
    resp = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/fail", timeout=10)
    assert (resp.status_code, resp.text) == (500, "actor says no")


async def test_no_running_actor_gives_503(env: ProviderEnv, provider_procs: Callable[..., ProviderProc]) -> None:
    port = free_port()
    await _serving(env, provider_procs, port)
    resp = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/", timeout=10)
    assert resp.status_code == 503


async def test_link_delete_stops_the_listener_and_shutdown_stops_all(
        env: ProviderEnv, actor: FakeActor, provider_procs: Callable[..., ProviderProc]) -> None:
    port, other_port = free_port(), free_port()
    proc = await _serving(env, provider_procs, port)
    other = KeyPair.generate(KeyKind.MODULE).public_key
    await env.put_link(env.link(actor=other, ADDRESS=f"127.0.0.1:{other_port}"))
    await _wait_port(other_port, proc=proc)
    await env.del_link(env.link())
    await _wait_port(port, open_=False, proc=proc)
    assert port_open(other_port)
    reply = await env.nc.request(f"{env.topic}.shutdown", json.dumps({"host_id": env.host.public_key}).encode(),
                                 timeout=3)
    assert reply.data == b"shutting down"
    assert proc.wait_exit(2) == 0, proc.log()
    assert not port_open(other_port)


async def test_taken_port_refuses_the_second_link(env: ProviderEnv, actor: FakeActor,
                                                 provider_procs: Callable[..., ProviderProc]) -> None:
    port = free_port()
    proc = await _serving(env, provider_procs, port)
    await env.put_link(env.link(actor=KeyPair.generate(KeyKind.MODULE).public_key, PORT=str(port)))
    await eventually(lambda: "failed binding to address" in proc.log(), 10, "the bind failure in the log")
    resp = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/still-first", timeout=10)
    assert resp.json()["path"] == "/still-first"


async def test_oversized_body_gives_413(env: ProviderEnv, actor: FakeActor,
                                        provider_procs: Callable[..., ProviderProc]) -> None:
    port = free_port()
    proc = provider_procs(env.host_data(), module=MODULE)
    await env.wait_healthy(proc)
    await env.put_link(env.link(config_json=json.dumps({"address": f"127.0.0.1:{port}", "max_content_len": "1k"})))
    await _wait_port(port, proc=proc)
    resp = await asyncio.to_thread(requests.post, f"http://127.0.0.1:{port}/", data=b"x" * 2048, timeout=10)
    assert resp.status_code == 413
    assert actor.seen == []
