"""hostcore.providers.keyvalue: the provider as a real process on a real NATS and Redis, started
from its bundled PAR the way a host would, and driven with signed invocations."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
import redis

from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import pid_alive, wait_for
from hostcore.native.par import builtin_par, builtin_provider_key, extract_binary, native_target, read_par
from provider_support import ProviderEnv, ProviderProc, provider_procs, redis_url  # noqa: F401 (fixtures)

CONTRACT = "wasmcloud:keyvalue"
MODULE = "hostcore.providers.keyvalue"


@pytest.fixture
def env(nc: nats.aio.client.Client, nats_server: object) -> ProviderEnv:
    return ProviderEnv(nc, nats_server.url, CONTRACT)  # type: ignore[attr-defined]


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:  # noqa: F811
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


async def _linked(env: ProviderEnv, start: Callable[..., ProviderProc], redis_url: str,  # noqa: F811
                  **start_kw: object) -> ProviderProc:
    proc = start(env.host_data(), module=MODULE, **start_kw)
    await env.wait_healthy(proc)
    await env.put_link(env.link(URL=redis_url))
    await env.wait_linked(lambda: env.invoke("KeyValue.Contains", "probe"))
    return proc


async def test_increment_from_builtin_par_counts_and_redis_holds_it(
        env: ProviderEnv, provider_procs: Callable[..., ProviderProc], redis_url: str,  # noqa: F811
        redis_client: redis.Redis, tmp_path: Path) -> None:
    par = read_par(builtin_par("keyvalue", tmp_path / "cache"))
    assert par.claims.public_key == builtin_provider_key("keyvalue")
    assert par.claims.capid == CONTRACT
    launcher = extract_binary(par, native_target(), tmp_path / "bin", filename="wasmcloud_keyvalue_default")
    env.provider_key = par.claims.public_key
    proc = provider_procs(env.host_data(), executable=launcher)
    await env.wait_healthy(proc)
    await env.put_link(env.link(URL=redis_url))
    await env.wait_linked(lambda: env.invoke("KeyValue.Contains", "probe"))

    # kvcounter's call: KeyValue.Increment {key, value: i32} → i32
    assert [await env.call("KeyValue.Increment", {"key": "counter:hits", "value": 1}) for _ in range(3)] == [1, 2, 3]
    assert redis_client.get("counter:hits") == b"3"
    assert await env.call("KeyValue.Increment", {"key": "counter:hits", "value": 5}) == 8
    assert redis_client.get("counter:hits") == b"8"


async def test_every_keyvalue_operation(env: ProviderEnv, provider_procs: Callable[..., ProviderProc],
                                        redis_url: str, redis_client: redis.Redis) -> None:  # noqa: F811
    await _linked(env, provider_procs, redis_url)
    call = env.call
    assert await call("KeyValue.Get", "missing") == {"value": "", "exists": False}
    assert await call("KeyValue.Set", {"key": "k", "value": "v1", "expires": 0}) is None
    assert await call("KeyValue.Get", "k") == {"value": "v1", "exists": True}
    assert await call("KeyValue.Contains", "k") is True
    await call("KeyValue.Set", {"key": "ttl", "value": "x", "expires": 100})
    assert 0 < redis_client.ttl("ttl") <= 100
    assert await call("KeyValue.Del", "k") is True
    assert await call("KeyValue.Del", "k") is False
    assert await call("KeyValue.Contains", "k") is False

    assert await call("KeyValue.ListAdd", {"listName": "l", "value": "a"}) == 1
    assert await call("KeyValue.ListAdd", {"listName": "l", "value": "b"}) == 2
    assert await call("KeyValue.ListAdd", {"listName": "l", "value": "a"}) == 3
    assert await call("KeyValue.ListRange", {"listName": "l", "start": 0, "stop": -1}) == ["a", "b", "a"]
    assert await call("KeyValue.ListDel", {"listName": "l", "value": "a"}) is True
    assert await call("KeyValue.ListRange", {"listName": "l", "start": 0, "stop": 10}) == ["b", "a"]
    assert await call("KeyValue.ListClear", "l") is True
    assert await call("KeyValue.ListClear", "l") is False

    assert await call("KeyValue.SetAdd", {"setName": "s1", "value": "x"}) == 1
    assert await call("KeyValue.SetAdd", {"setName": "s1", "value": "x"}) == 0
    await call("KeyValue.SetAdd", {"setName": "s1", "value": "y"})
    await call("KeyValue.SetAdd", {"setName": "s2", "value": "y"})
    await call("KeyValue.SetAdd", {"setName": "s2", "value": "z"})
    assert await call("KeyValue.SetQuery", "s1") == ["x", "y"]
    assert await call("KeyValue.SetUnion", ["s1", "s2"]) == ["x", "y", "z"]
    assert await call("KeyValue.SetIntersection", ["s1", "s2"]) == ["y"]
    assert await call("KeyValue.SetDel", {"setName": "s1", "value": "x"}) == 1
    assert await call("KeyValue.SetClear", "s1") is True
    assert await call("KeyValue.SetQuery", "s1") == []
    assert await call("KeyValue.Keys", {"globExpression": "s*"}) == ["s2"]


async def test_errors_are_invocation_responses(env: ProviderEnv, provider_procs: Callable[..., ProviderProc],
                                               redis_url: str, redis_client: redis.Redis) -> None:  # noqa: F811
    await _linked(env, provider_procs, redis_url)
    resp = await env.invoke("KeyValue.Frobnicate", "k")
    assert resp.error == "method not handled KeyValue.Frobnicate" and resp.msg == b""
    resp = await env.invoke("KeyValue.Increment", {"key": "k"})
    assert resp.error == "deser error: field `value` must be an integer"
    redis_client.set("text", "abc")
    resp = await env.invoke("KeyValue.Increment", {"key": "text", "value": 1})
    assert resp.error is not None and resp.error.startswith("redis error: ")
    other = KeyPair.generate(KeyKind.MODULE).public_key
    resp = await env.invoke("KeyValue.Get", "k", actor=other)
    assert resp.error == f"unlinked actor: '{other}'"
    resp = await env.invoke("KeyValue.Get", "k", signer=KeyPair.generate(KeyKind.CLUSTER))
    assert resp.error == "Issuer of this invocation is not among the list of valid issuers"
    wrong = KeyPair.generate(KeyKind.SERVICE).public_key
    resp = await env.invoke("KeyValue.Get", "k", target_key=wrong)
    assert resp.error == f"target key mismatch: {wrong} != {env.provider_key}"


async def test_start_up_links_apply_before_serving_and_link_delete_unlinks(
        env: ProviderEnv, provider_procs: Callable[..., ProviderProc], redis_url: str,  # noqa: F811
        redis_client: redis.Redis) -> None:
    ld = env.link(URL=redis_url)
    proc = provider_procs(env.host_data(links=(ld,)), module=MODULE)
    await env.wait_healthy(proc)
    # Health answers only once every subscription is up, and start-up links come before those.
    assert await env.call("KeyValue.Increment", {"key": "c", "value": 2}) == 2
    await env.del_link(ld)
    resp = await env.wait_unlinked()
    assert resp.error == f"unlinked actor: '{env.actor}'"


async def test_unreachable_redis_refuses_the_link(env: ProviderEnv, provider_procs: Callable[..., ProviderProc],
                                                  redis_url: str) -> None:  # noqa: F811
    from hostcore.procutil import free_port

    proc = provider_procs(env.host_data(), module=MODULE)
    await env.wait_healthy(proc)
    await env.put_link(env.link(URL=f"redis://:secret@127.0.0.1:{free_port()}/0"))
    await env.put_link(env.link(actor=KeyPair.generate(KeyKind.MODULE).public_key, URL=redis_url))
    assert wait_for(lambda: "redis connection to redis://:***@127.0.0.1" in proc.log(), 10)
    assert "secret" not in proc.log()
    resp = await env.invoke("KeyValue.Get", "k")
    assert resp.error == f"unlinked actor: '{env.actor}'"


async def test_health_and_shutdown(env: ProviderEnv, provider_procs: Callable[..., ProviderProc]) -> None:
    proc = provider_procs(env.host_data(), module=MODULE)
    assert await env.wait_healthy(proc) == {"healthy": True, "message": ""}
    # A shutdown for another host's instance of this provider is not for us: no reply.
    other_host = KeyPair.generate(KeyKind.SERVER).public_key
    with pytest.raises(nats.errors.TimeoutError):
        await env.nc.request(f"{env.topic}.shutdown", json.dumps({"host_id": other_host}).encode(), timeout=0.5)
    assert proc.proc.poll() is None
    reply = await env.nc.request(f"{env.topic}.shutdown", json.dumps({"host_id": env.host.public_key}).encode(),
                                 timeout=2)
    assert reply.data == b"shutting down"
    assert proc.wait_exit(1.5) == 0, proc.log()


async def test_sigterm_exits_cleanly(env: ProviderEnv, provider_procs: Callable[..., ProviderProc]) -> None:
    proc = provider_procs(env.host_data(), module=MODULE)
    await env.wait_healthy(proc)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait_exit(3) == 0, proc.log()


def test_bad_host_data_exits_with_an_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", MODULE], input=b"not base64!\n", capture_output=True, timeout=30)
    assert out.returncode == 1
    assert b"error loading host data: parsing host data: not base64-encoded JSON" in out.stderr


async def test_provider_dies_with_its_parent(env: ProviderEnv) -> None:
    """PR_SET_PDEATHSIG: killing the (host) parent takes the provider with it."""
    import os
    import subprocess
    import sys

    script = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-m', '{MODULE}'], stdin=subprocess.PIPE)\n"
        "p.stdin.write(sys.stdin.buffer.readline()); p.stdin.close()\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child = 0
    try:
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.write(env.host_data().to_wire())
        parent.stdin.close()
        child = int(parent.stdout.readline())
        await env.wait_healthy()  # by now the provider has armed PDEATHSIG
        parent.kill()
        parent.wait(5)
        assert wait_for(lambda: not pid_alive(child), 10), f"provider {child} outlived its parent"
    finally:
        parent.kill()
        parent.wait(5)
        if parent.stdout is not None:
            parent.stdout.close()
        if child and pid_alive(child):
            os.kill(child, signal.SIGKILL)
