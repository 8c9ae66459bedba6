"""A host joins authenticated and TLS nats-servers with OTP's connection settings (protocol.md
§10.2): nkey users, operator mode (JWTs from hostcore.natsjwt), TLS with a CA made here, and
control and RPC on two different servers. In each: the host joins, echo answers a call, a
provider passes its health check, and none of the secrets reach the host's logs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
import requests
from conftest import EventWatcher, HostProcess, fixture_actor
from nats_configs import Operator, Pki, Server, nkey_users_config, start_server

from hostcore.control.client import ControlClient
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.native.claims import extract_claims
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.natsconn import NatsEndpoint, flush_in_order
from hostcore.procutil import free_port, wait_for
from hostcore.native.par import builtin_provider_key

ECHO = fixture_actor("echo.wasm")
HTTP_GET = msgpack.packb({"method": "GET", "path": "/auth", "queryString": "", "header": {}, "body": b""})


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(name: str, config: str, *, scheme: str = "nats") -> Server:
        server = start_server(tmp_path / name, config, scheme=scheme)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


def role_env(role: str, server: Server, **settings: str) -> dict[str, str]:
    """WASMCLOUD_{ROLE}_HOST/_PORT (+ _SEED, _JWT, _TLS) for one connection."""
    env = {f"WASMCLOUD_{role.upper()}_HOST": "127.0.0.1", f"WASMCLOUD_{role.upper()}_PORT": str(server.port)}
    env.update({f"WASMCLOUD_{role.upper()}_{k.upper()}": v for k, v in settings.items()})
    return env


@asynccontextmanager
async def client(endpoint: NatsEndpoint) -> AsyncIterator[nats.aio.client.Client]:
    nc = await nats.connect(**endpoint.connect_kwargs(), connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


def http_ok(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def leaked(host: HostProcess, secrets: list[str]) -> list[str]:
    """Secrets found in the host's output or in any log file under its data dir."""
    texts = [host.log()] + [p.read_text(errors="replace") for p in (host.workdir / "data").rglob("*.log")]
    return [s[:12] + "…" for s in secrets if any(s in t for t in texts)]


async def exercise(host: HostProcess, ctl: NatsEndpoint, rpc: NatsEndpoint, secrets: list[str],
                   *, link: bool = False) -> None:
    """Start the host, wait for it, scale echo and call it, start a provider and wait for its
    health check (and with `link`, serve echo through it), stop the host; then look for the
    secrets in its logs."""
    watcher = EventWatcher()
    async with client(ctl) as ctl_nc, client(rpc) as rpc_nc:
        await ctl_nc.subscribe(f"wasmbus.evt.{host.lattice}", cb=watcher.on_msg)
        await flush_in_order(ctl_nc)
        host.start()
        try:
            await watcher.wait_for("host_started", timeout=30)
            control = ControlClient(ctl_nc, lattice_prefix=host.lattice, timeout_s=5.0)
            key = extract_claims(ECHO.read_bytes()).public_key
            assert (await control.scale_actor(host.host_id, key, f"file://{ECHO}", 1)).accepted
            await watcher.wait_for("actor_started", lambda d: d["public_key"] == key)
            caller = ControlClient(rpc_nc, lattice_prefix=host.lattice, timeout_s=5.0)
            resp = await caller.call_actor(host.cluster_key, key, "HttpServer.HandleRequest", HTTP_GET, timeout_s=5)
            assert resp.error is None, resp.error
            assert msgpack.unpackb(resp.msg)["statusCode"] == 200

            assert (await control.launch_provider(host.host_id, "builtin:httpserver")).accepted
            provider = builtin_provider_key("httpserver")
            await watcher.wait_for("provider_started", lambda d: d["public_key"] == provider, timeout=30)
            await watcher.wait_for("health_check_passed", lambda d: d["public_key"] == provider, timeout=30)
            if link:
                port = free_port()
                assert (await control.put_link(LinkDefinition(
                    actor_id=key, provider_id=provider, link_name="default", contract_id="wasmcloud:httpserver",
                    values={"PORT": str(port)}))).accepted
                assert await asyncio.to_thread(wait_for, lambda: http_ok(port), 20), "link never reached the provider"
            seen = json.dumps([watcher.events, await control.get_inventory(host.host_id),
                               await control.ping_hosts(wait_s=0.5)], default=str)
            assert not [s[:8] for s in [host.host_key.seed, host.cluster_key.seed, *secrets] if s in seen]
        except BaseException:
            print(host.log()[-4000:])
            raise
    assert host.stop() == 0
    assert not leaked(host, [host.host_key.seed, host.cluster_key.seed, *secrets])


async def test_nkey_users(host_factory: Callable[..., HostProcess], servers: Callable[..., Server]) -> None:
    host_user, test_user = KeyPair.generate(KeyKind.USER), KeyPair.generate(KeyKind.USER)
    server = servers("nkeys", nkey_users_config(host_user.public_key, test_user.public_key))
    env = {**role_env("rpc", server, seed=host_user.seed), **role_env("ctl", server, seed=host_user.seed),
           **role_env("prov_rpc", server, seed=host_user.seed)}
    host = host_factory(nats_url="", env=env)
    mine = NatsEndpoint.from_url("ctl", server.url, seed=test_user.seed)
    await exercise(host, mine, mine, [host_user.seed])


async def test_operator_mode_with_creds_file_and_jwts(
        host_factory: Callable[..., HostProcess], servers: Callable[..., Server], tmp_path: Path) -> None:
    op = Operator()
    server = servers("operator", op.config())
    creds = op.creds(tmp_path / "host.creds")
    prov_jwt, prov_seed = op.user("providers")
    test_jwt, test_seed = op.user("test")
    env = {**role_env("rpc", server), **role_env("ctl", server),
           **role_env("prov_rpc", server, seed=prov_seed, jwt=prov_jwt), "HOSTCORE_NATS_CREDS": str(creds)}
    host = host_factory(nats_url="", env=env)
    mine = NatsEndpoint.from_url("ctl", server.url, seed=test_seed, jwt=test_jwt)
    creds_jwt, creds_seed = NatsEndpoint.from_url("rpc", server.url, creds_file=creds).user_credentials()
    await exercise(host, mine, mine, [prov_seed, prov_jwt, creds_seed, creds_jwt])


async def test_tls_with_a_private_ca(
        host_factory: Callable[..., HostProcess], servers: Callable[..., Server], tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    server = servers("tls", pki.server_config(), scheme="tls")
    env = {**role_env("rpc", server, tls="1"), **role_env("ctl", server, tls="1"),
           **role_env("prov_rpc", server, tls="1"), "HOSTCORE_NATS_CA": str(pki.ca_file)}
    host = host_factory(nats_url="", env=env)
    mine = NatsEndpoint.from_url("ctl", server.url, ca_file=pki.ca_file)
    await exercise(host, mine, mine, [])


async def test_control_and_rpc_on_two_servers(
        host_factory: Callable[..., HostProcess], servers: Callable[..., Server]) -> None:
    ctl_user, rpc_user = KeyPair.generate(KeyKind.USER), KeyPair.generate(KeyKind.USER)
    ctl_server = servers("ctl", nkey_users_config(ctl_user.public_key))
    rpc_server = servers("rpc", nkey_users_config(rpc_user.public_key))
    env = {**role_env("ctl", ctl_server, seed=ctl_user.seed), **role_env("rpc", rpc_server, seed=rpc_user.seed),
           **role_env("prov_rpc", rpc_server, seed=rpc_user.seed)}
    host = host_factory(nats_url="", env=env)
    await exercise(host, NatsEndpoint.from_url("ctl", ctl_server.url, seed=ctl_user.seed),
                   NatsEndpoint.from_url("rpc", rpc_server.url, seed=rpc_user.seed), [ctl_user.seed, rpc_user.seed],
                   link=True)


async def test_bad_credentials_are_logged_and_retried_and_the_cli_says_one_line(
        host_factory: Callable[..., HostProcess], servers: Callable[..., Server]) -> None:
    allowed, wrong = KeyPair.generate(KeyKind.USER), KeyPair.generate(KeyKind.USER)
    server = servers("nkeys", nkey_users_config(allowed.public_key))
    host = host_factory(nats_url="", env={**role_env("rpc", server, seed=wrong.seed),
                                          **role_env("ctl", server, seed=wrong.seed)}).start()

    def failures() -> list[str]:
        return [ln for ln in host.log().splitlines() if "waiting for NATS: connection failed, retrying" in ln]

    assert wait_for(lambda: len(failures()) >= 2, 20), host.log()[-3000:]
    assert "connection=ctl" in failures()[0] and "Authorization Violation" in failures()[0]
    assert host.proc is not None and host.proc.poll() is None  # still trying, not gone
    assert "Traceback" not in host.log()
    assert host.stop() == 0
    assert not leaked(host, [wrong.seed])

    cli = subprocess.run(
        [sys.executable, "-m", "hostcore", "ctl", "get", "hosts", "--ctl-host", "127.0.0.1",
         "--ctl-port", str(server.port), "--ctl-seed", wrong.seed],
        capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1
    assert cli.stdout == "" and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert "Authorization Violation" in cli.stderr and wrong.seed not in cli.stderr


async def test_host_data_carries_the_prov_rpc_credentials(tmp_path: Path) -> None:
    """§11.7: providers get the PROV_RPC server and credentials (the creds file's JWT and seed)."""
    from hostcore.config import load_config
    op = Operator()
    creds = op.creds(tmp_path / "p.creds")
    cfg = load_config([], {"WASMCLOUD_PROV_RPC_HOST": "10.1.2.3", "WASMCLOUD_PROV_RPC_PORT": "4333",
                           "WASMCLOUD_PROV_RPC_TLS": "1", "HOSTCORE_NATS_CREDS": str(creds)},
                      config_file=tmp_path / "none.json")
    jwt, seed = cfg.prov_rpc.user_credentials()
    fields: dict[str, Any] = cfg.prov_rpc.host_data_fields()
    assert fields == {"lattice_rpc_url": "10.1.2.3:4333", "lattice_rpc_user_jwt": jwt,
                      "lattice_rpc_user_seed": seed, "lattice_rpc_tls": True}
    assert seed.startswith("SU") and jwt.count(".") == 2
    assert seed not in repr(cfg) and jwt not in repr(cfg)
