"""The bundled providers with the real fixture actors: HTTP client → httpserver provider → a
minimal actor host (wasmtime running echo.wasm / kvcounter.wasm, routing the guest's keyvalue
host call as the host would, §4.10) → keyvalue provider → Redis. Both providers run as processes
from their bundled PARs; only the host in the middle is a test stand-in."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import redis
import requests
from conftest import eventually, port_open

from hostcore.errors import HostCallError
from hostcore.native.claims import extract_claims
from hostcore.native.invocation import Invocation, InvocationResponse, InvocationValidator, WasmCloudEntity, new_invocation
from hostcore.native.epoch import EpochTicker
from hostcore.native.wasm import ActorRuntime, compile_to_cache, load_module, new_engine
from hostcore.procutil import free_port
from hostcore.native.par import builtin_par, extract_binary, native_target, read_par
from hostcore.providers.protocol import LinkDefinition
from provider_support import ProviderEnv, ProviderProc, provider_procs, redis_url  # noqa: F401 (fixtures)

FIXTURES = Path(os.environ.get("HOSTCORE_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "actors"))


@dataclass
class Lattice:
    http: ProviderEnv
    kv: ProviderEnv
    actor: str


class ActorHost:
    """Runs one fixture actor for `wasmbus.rpc.{lattice}.{actor}`; forwards its keyvalue host
    calls to the linked provider with a signed invocation."""

    def __init__(self, module: bytes, lat: Lattice, cache: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.lat, self.loop = lat, loop
        self.engine = new_engine()
        self.ticker = EpochTicker(self.engine)
        self.ticker.start()
        compiled = load_module(self.engine, compile_to_cache(self.engine, module, cache))
        self.runtime = ActorRuntime(self.engine, compiled, host_call=self.host_call, console_log=lambda _: None,
                                    call_timeout_s=10, max_memory_bytes=256 * 1024 * 1024)
        self.validator = InvocationValidator([lat.http.cluster.public_key])
        self.lock = asyncio.Lock()

    def host_call(self, binding: str, namespace: str, operation: str, payload: bytes) -> bytes:
        kv = self.lat.kv
        if namespace != "wasmcloud:keyvalue":
            raise HostCallError(f"no link for {namespace}")
        inv = new_invocation(kv.cluster, WasmCloudEntity(self.lat.actor),
                             WasmCloudEntity(kv.provider_key, namespace, binding or "default"), operation, payload)
        fut = asyncio.run_coroutine_threadsafe(kv.nc.request(kv.topic, inv.to_wire(), timeout=5), self.loop)
        resp = InvocationResponse.from_wire(fut.result(10).data)
        if resp.error is not None:
            raise HostCallError(resp.error)
        return resp.msg

    async def on_msg(self, msg: Any) -> None:
        inv = Invocation.from_wire(msg.data)
        self.validator.validate(inv)
        async with self.lock:  # one guest instance
            result = await asyncio.to_thread(self.runtime.call, inv.operation, inv.msg)
        await msg.respond(InvocationResponse.success(inv.id, result, "").to_wire())

    def close(self) -> None:
        self.runtime.close()
        self.ticker.close()


@pytest.fixture
async def lattice(nc: nats.aio.client.Client, nats_server: Any, provider_procs: Callable[..., ProviderProc],  # noqa: F811
                  tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    hosts: list[ActorHost] = []
    subs: list[Any] = []

    async def start(fixture: str, *, kv_url: str | None = None) -> tuple[Lattice, int]:
        module = (FIXTURES / fixture).read_bytes()
        actor = extract_claims(module).public_key
        http = ProviderEnv(nc, nats_server.url, "wasmcloud:httpserver")
        kv = ProviderEnv(nc, nats_server.url, "wasmcloud:keyvalue")
        kv.lattice, kv.cluster = http.lattice, http.cluster  # one lattice, one cluster key
        http.actor = kv.actor = actor
        lat = Lattice(http, kv, actor)
        host = ActorHost(module, lat, tmp_path / "wasm", asyncio.get_running_loop())
        hosts.append(host)
        subs.append(await nc.subscribe(f"wasmbus.rpc.{http.lattice}.{actor}", cb=host.on_msg))
        port = free_port()
        providers = [(http, "httpserver", {"PORT": str(port)})]
        if kv_url is not None:
            providers.append((kv, "keyvalue", {"URL": kv_url}))
        for env, name, values in providers:
            par = read_par(builtin_par(name, tmp_path / "pars"))
            env.provider_key = par.claims.public_key
            exe = extract_binary(par, native_target(), tmp_path / "bin" / name)
            link = LinkDefinition(actor_id=actor, provider_id=env.provider_key, link_name="default",
                                  contract_id=env.contract_id, values=values)
            # the keyvalue link arrives in the host data, the httpserver one on linkdefs.put
            proc = provider_procs(env.host_data(links=(link,) if name == "keyvalue" else ()), executable=exe)
            await env.wait_healthy(proc)
            if name == "httpserver":
                await env.put_link(link)
        await eventually(lambda: asyncio.to_thread(port_open, port), 10, f"the httpserver listening on {port}")
        return lat, port

    yield start
    for sub in subs:
        await sub.unsubscribe()
    for host in hosts:
        host.close()


async def test_echo_through_httpserver(lattice: Callable[..., Any]) -> None:
    _, port = await lattice("echo.wasm")
    resp = await asyncio.to_thread(requests.post, f"http://127.0.0.1:{port}/some/path?a=1&b=two",
                                   data=b'{"hello":"world"}', timeout=15)
    assert resp.status_code == 200, resp.text
    echoed = resp.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/some/path"
    assert echoed["query_string"] == "a=1&b=two"
    assert bytes(echoed["body"]) == b'{"hello":"world"}'


async def test_kvcounter_counts_in_redis(lattice: Callable[..., Any], redis_url: str) -> None:  # noqa: F811
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete("counter::mycounter")
        _, port = await lattice("kvcounter.wasm", kv_url=redis_url)
        url = f"http://127.0.0.1:{port}/mycounter"
        bodies = [(await asyncio.to_thread(requests.get, url, timeout=15)).json() for _ in range(3)]
        assert bodies == [{"counter": 1}, {"counter": 2}, {"counter": 3}]
        assert client.get("counter::mycounter")  # kvcounter: "counter:" + path with / → : == b"3"
        resp = await asyncio.to_thread(requests.get, f"{url}?amount=5", timeout=15)
        assert resp.json() == {"counter": 8}
        assert client.get("counter::mycounter") == b"8"
    finally:
        client.close()
