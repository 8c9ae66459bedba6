"""Support for provider tests: a real redis-server, provider processes fed host data on stdin,
and signed invocations as a linked actor would send them. Test modules import the fixtures from
here (not a conftest.py: the suite's modules import helpers `from conftest`, which a second
conftest module would shadow).

Every process started here carries HOSTCORE_TEST_MARK; teardown fails the test if one outlives it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import nats
import nats.errors
import pytest

from hostcore.native.invocation import Invocation, InvocationResponse, WasmCloudEntity, new_invocation
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import free_port, set_pdeathsig, stop_process, wait_for
from hostcore.providers.protocol import HostData, LinkDefinition
from hostcore.natsconn import flush_in_order
from conftest import describe_pid, eventually, kill_marked, marked_pids

HEALTH_DEADLINE_S = 15.0


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server on a free loopback port, no persistence; stopped after the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    log_path = workdir / "redis.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=set_pdeathsig)
    import redis

    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return proc.poll() is not None  # stop polling a dead server; checked below

    try:
        if not wait_for(answers, 10.0) or proc.poll() is not None:
            pytest.fail(f"redis-server did not answer PING within 10 s:\n{log_path.read_text()[-2000:]}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop_process(proc, name="redis-server")


class ProviderEnv:
    """One provider's identity and lattice: the keys a host would give it, and a client side."""

    def __init__(self, nc: nats.aio.client.Client, nats_url: str, contract_id: str) -> None:
        self.nc = nc
        self.nats_url = nats_url
        self.contract_id = contract_id
        self.lattice = f"p{uuid.uuid4().hex[:12]}"
        self.link_name = "default"
        self.cluster = KeyPair.generate(KeyKind.CLUSTER)
        self.host = KeyPair.generate(KeyKind.SERVER)
        self.provider_key = KeyPair.generate(KeyKind.SERVICE).public_key
        self.actor = KeyPair.generate(KeyKind.MODULE).public_key

    @property
    def topic(self) -> str:
        return f"wasmbus.rpc.{self.lattice}.{self.provider_key}.{self.link_name}"

    def host_data(self, *, links: tuple[LinkDefinition, ...] = (), **overrides: Any) -> HostData:
        fields: dict[str, Any] = dict(
            host_id=self.host.public_key, lattice_rpc_prefix=self.lattice, link_name=self.link_name,
            lattice_rpc_url=self.nats_url.removeprefix("nats://"), provider_key=self.provider_key,
            instance_id=str(uuid.uuid4()), link_definitions=links, cluster_issuers=(self.cluster.public_key,),
            invocation_seed=self.cluster.seed, default_rpc_timeout_ms=2000)
        fields.update(overrides)
        return HostData(**fields)

    def link(self, actor: str | None = None, **values: str) -> LinkDefinition:
        return LinkDefinition(actor_id=actor or self.actor, provider_id=self.provider_key,
                              link_name=self.link_name, contract_id=self.contract_id, values=values,
                              id=str(uuid.uuid4()))

    async def put_link(self, ld: LinkDefinition) -> None:
        await self.nc.publish(f"{self.topic}.linkdefs.put", ld.to_msgpack())
        await flush_in_order(self.nc)

    async def del_link(self, ld: LinkDefinition) -> None:
        await self.nc.publish(f"{self.topic}.linkdefs.del", ld.to_msgpack(deleted=True))
        await flush_in_order(self.nc)

    def invocation(self, operation: str, arg: Any, *, actor: str | None = None, signer: KeyPair | None = None,
                   target_key: str | None = None) -> Invocation:
        payload = arg if isinstance(arg, bytes) else msgpack.packb(arg, use_bin_type=True)
        target = WasmCloudEntity(target_key or self.provider_key, self.contract_id, self.link_name)
        return new_invocation(signer or self.cluster, WasmCloudEntity(actor or self.actor), target, operation, payload)

    async def invoke(self, operation: str, arg: Any, *, timeout: float = 5.0, **kw: Any) -> InvocationResponse:
        inv = self.invocation(operation, arg, **kw)
        reply = await self.nc.request(self.topic, inv.to_wire(), timeout=timeout)
        resp = InvocationResponse.from_wire(reply.data)
        assert resp.invocation_id == inv.id
        return resp

    async def call(self, operation: str, arg: Any, **kw: Any) -> Any:
        """Invoke and decode the msgpack reply; fails the test on an error reply."""
        resp = await self.invoke(operation, arg, **kw)
        assert resp.error is None, resp.error
        return msgpack.unpackb(resp.msg, raw=False) if resp.msg else None

    async def wait_healthy(self, proc: ProviderProc | None = None) -> dict[str, Any]:
        """Poll `.health` until the provider answers (it subscribes to it last); fail the test
        if `proc` exits first or nothing answers within 15 s."""
        async def health() -> dict[str, Any]:
            if proc is not None and proc.proc.poll() is not None:
                pytest.fail(f"provider exited with {proc.proc.returncode}:\n{proc.log()}")
            reply = await self.nc.request(f"{self.topic}.health", msgpack.packb({"placeholder": True}), timeout=0.25)
            return dict(msgpack.unpackb(reply.data, raw=False))

        answer: dict[str, Any] = await eventually(
            health, HEALTH_DEADLINE_S, lambda: f"provider health checks\n{proc.log() if proc else ''}",
            ignoring=(nats.errors.TimeoutError, nats.errors.NoRespondersError))
        return answer

    async def wait_unlinked(self, operation: str = "KeyValue.Contains", arg: Any = "probe") -> InvocationResponse:
        """Retry a probe invocation until the provider says "unlinked actor" (after a link delete)."""
        async def unlinked() -> InvocationResponse | None:
            resp = await self.invoke(operation, arg)
            return resp if resp.error is not None and "unlinked actor" in resp.error else None
        found: InvocationResponse = await eventually(unlinked, 10, "an 'unlinked actor' reply")
        return found

    async def wait_linked(self, probe: Callable[[], Awaitable[InvocationResponse]]) -> InvocationResponse:
        """Retry `probe` until its reply is not "unlinked actor" (link puts emit no event)."""
        async def linked() -> InvocationResponse | None:
            resp = await probe()
            return resp if resp.error is None or "unlinked actor" not in resp.error else None
        found: InvocationResponse = await eventually(linked, 10, "a reply other than 'unlinked actor'")
        return found


class ProviderProc:
    """A provider process started with host data on stdin; `stop()` asks it, then kills it."""

    def __init__(self, argv: list[str], host_data: HostData, log_path: Path, mark: str) -> None:
        env = {**os.environ, "HOSTCORE_TEST_MARK": mark, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, preexec_fn=set_pdeathsig)
        assert self.proc.stdin is not None
        self.proc.stdin.write(host_data.to_wire())
        self.proc.stdin.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        stop_process(self.proc, name="provider", grace_s=3.0)


@pytest.fixture
def provider_procs(tmp_path: Path) -> Iterator[Callable[..., ProviderProc]]:
    """Start provider processes (`python -m MODULE`, or an executable); teardown stops them and
    fails the test if any process it started is still alive."""
    mark = uuid.uuid4().hex
    procs: list[ProviderProc] = []

    def start(host_data: HostData, *, module: str | None = None, executable: Path | None = None) -> ProviderProc:
        argv = [str(executable)] if executable else [sys.executable, "-m", str(module)]
        proc = ProviderProc(argv, host_data, tmp_path / f"provider{len(procs)}.log", mark)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
    if marked_pids(mark) and not wait_for(lambda: not marked_pids(mark), 5.0):
        left = [describe_pid(p) for p in marked_pids(mark)]
        kill_marked(mark)
        pytest.fail(f"provider processes left behind: {left}")


@pytest.fixture
async def nc_factory(nats_server: Any) -> AsyncIterator[Callable[[], Awaitable[nats.aio.client.Client]]]:
    clients: list[nats.aio.client.Client] = []

    async def make() -> nats.aio.client.Client:
        client = await nats.connect(nats_server.url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
