"""ProviderModule: one capability provider (key, link name) on this host (protocol.md §11.7).

It spawns the provider executable with the host data on stdin, logs its output, health-checks it
over NATS (first quickly until it answers, then every 30 s; events on change), re-sends the links
once the provider answers (the OTP host lost links put while a provider started, its issue #361),
and stops it with a shutdown request, a grace period and a kill. It owns the child process: the
child gets SIGKILL from the kernel if this process dies (PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
from typing import Any

from nats.aio.client import Client as NatsClient
from thespian.actors import ActorExitRequest

from hostcore.config import SECRET_ENV, HostConfig
from hostcore.logs import ChildLogRelay, relay_output
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import ORPHANED, Adoptable, Adopted, Rewirable
from hostcore.tree.bridge import NatsBridgeActor
from hostcore.tree.messages import (LatticeSnapshot, ProviderFailed, ProviderStarted, PublishEvent,
                                      StartProviderProcess)
from hostcore.wire import cloudevents, subjects
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.wire.provider import HEALTH_REQUEST, encode_host_data, otp_host_data, shutdown_request

log = logging.getLogger(__name__)

__all__ = ["ProviderModule", "host_data", "provider_env"]

_FIRST_PROBE_S = 0.1
_READY_DEADLINE_S = 30.0
_HEALTH_INTERVAL_S = 30.0
_SHUTDOWN_TIMEOUT_S = 2.0


def provider_env(environ: dict[str, str]) -> dict[str, str]:
    """protocol.md Corrections (§11.7): the provider inherits the host's whole environment, as
    OTP's `Port.open` with `{:env, …}` extends it (providers read RUST_LOG and their own settings
    from it), less the secrets only hostcore has (the convention secret, the dashboard token)."""
    return {k: v for k, v in environ.items() if k not in SECRET_ENV}


def host_data(cfg: HostConfig, msg: StartProviderProcess) -> dict[str, Any]:
    """The §11.7 host data map for the provider `msg` starts (shape: wire.provider.otp_host_data)."""
    return otp_host_data(
        host_id=cfg.host_id, lattice_rpc_prefix=cfg.lattice_prefix, link_name=msg.link_name,
        connection=cfg.prov_rpc.host_data_fields(), instance_id=msg.instance_id,
        provider_key=msg.claims.public_key, links=msg.links, config_json=msg.config_json,
        default_rpc_timeout_ms=int(cfg.rpc_timeout_s * 1000), cluster_issuers=cfg.cluster_issuers,
        invocation_seed=cfg.cluster_key.seed, js_domain=cfg.js_domain, structured_logging=cfg.structured_logging)


class ProviderModule(Adoptable, Rewirable, NatsBridgeActor):
    """Supervised by ProviderSupervisor; an ActorExitRequest stops the provider and this process.
    It outlives a supervisor that dies, so the provider keeps serving while a successor adopts it
    (hostcore/supervision.py)."""

    proc: subprocess.Popen[bytes] | None = None

    def receiveMsg_StartProviderProcess(self, msg: StartProviderProcess, sender: Any) -> None:
        set_pdeathsig()
        self.config, self.start, self.events = msg.config, msg, msg.events
        self.links = {ld.id: ld for ld in msg.links}
        pk = msg.claims.public_key
        self.topic = subjects.provider_rpc(msg.config.lattice_prefix, pk, msg.link_name)
        self.healthy: bool | None = None
        try:
            async def setup(nc: NatsClient) -> None:
                return None

            self.proc = self._spawn(msg)  # before nats_start: fork while this process has one thread
            self.nats_start(msg.config.rpc, setup, name=f"hostcore-provider-{pk[:8]}-{msg.link_name}")
        except Exception as err:  # noqa: BLE001 -- reported as provider_start_failed
            log.exception("provider failed to start", extra={"provider_key": pk})
            self.send(sender, ProviderFailed(instance_id=msg.instance_id, error=str(getattr(err, "wire", err))))
            return
        self.outlive_parent(self.loop)
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._health_loop()))
        threading.Thread(target=self._reap, daemon=True, name="provider-wait").start()
        self.send(sender, ProviderStarted(instance_id=msg.instance_id, pid=self.proc.pid))

    def _spawn(self, msg: StartProviderProcess) -> subprocess.Popen[bytes]:
        env = provider_env(dict(os.environ))
        data = encode_host_data(host_data(msg.config, msg))
        proc = subprocess.Popen([str(msg.binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=set_pdeathsig)
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        threading.Thread(target=self._pump_output, args=(proc,), daemon=True, name="provider-log").start()
        log.info("provider process started", extra={"provider_key": msg.claims.public_key, "pid": proc.pid,
                                                   "link_name": msg.link_name})
        return proc

    def _pump_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        key = self.start.claims.public_key
        relay_output(proc.stdout, ChildLogRelay(logging.getLogger("hostcore.provider"), key[:12],
                                                {"provider_key": key, "link_name": self.start.link_name}))

    def _reap(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        self.to_actor(("exited", code))

    PEERS = frozenset({"events"})  # health events go through LatticeEvents, which may be restarted

    def adoption_reply(self, instance_id: str) -> Adopted:
        return Adopted(instance_id=instance_id, pid=os.getpid(),
                       running=self.proc is not None and self.proc.poll() is None)

    def on_inbox_item(self, item: Any) -> None:
        if item is ORPHANED:
            self.stop_orphan()
        elif item[0] == "event":
            self.send(self.events, item[1])
        elif item[0] == "exited" and not getattr(self, "stopping", False):
            # The provider died on its own: this module ends too; the supervisor reports it.
            log.warning("provider process exited", extra={"provider_key": self.start.claims.public_key,
                                                          "code": item[1]})
            self.send(self.myAddress, ActorExitRequest())

    # --- health and links ----------------------------------------------------------------------

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READY_DEADLINE_S
        interval = _FIRST_PROBE_S
        while True:
            ok = await self._health_check(min(interval, 1.0) if self.healthy is None else self.config.rpc_timeout_s)
            if ok and self.healthy is None:
                await self._resend_links()
            if self.healthy is None and not ok and loop.time() < deadline:
                await asyncio.sleep(_FIRST_PROBE_S)
                continue
            self._health_event(ok, changed=ok != self.healthy)  # v0.63: a status event when unchanged
            self.healthy = ok
            await asyncio.sleep(_HEALTH_INTERVAL_S)

    async def _health_check(self, timeout_s: float) -> bool:
        try:
            await self.nc.request(subjects.provider_health(self.topic), HEALTH_REQUEST, timeout=timeout_s)
        except Exception:  # noqa: BLE001 -- any failure is "unhealthy" (§4.11: any reply is healthy)
            return False
        return True

    def _health_event(self, ok: bool, *, changed: bool) -> None:
        event = cloudevents.health_check(public_key=self.start.claims.public_key, link_name=self.start.link_name,
                                         contract_id=self.start.claims.capid, healthy=ok, changed=changed)
        if self.events is not None:
            self.to_actor(("event", PublishEvent(event_type=event.type, data=event.data)))
            return
        body = cloudevents.cloud_event(event.type, event.data, self.config.host_id)
        self.loop.create_task(self.nc.publish(subjects.lattice_events(self.config.lattice_prefix), body))

    async def _resend_links(self) -> None:
        for ld in list(self.links.values()):
            await self.nc.publish(subjects.provider_linkdefs(self.topic, "put"), ld.to_msgpack())

    def receiveMsg_LatticeSnapshot(self, msg: LatticeSnapshot, sender: Any) -> None:
        mine: dict[str, LinkDefinition] = {ld.id: ld for ld in msg.links
                                           if ld.provider_id == self.start.claims.public_key
                                           and ld.link_name == self.start.link_name}
        if self.config.rpc.servers != self.config.ctl.servers and getattr(self, "loop", None) is not None:
            # LatticeCache announces links on the control connection, which a provider on another
            # server does not hear: forward the changes on RPC (protocol.md §1.1).
            for ld in mine.values():
                if self.links.get(ld.id) != ld:
                    self.publish(subjects.provider_linkdefs(self.topic, "put"), ld.to_msgpack())
            for ld in self.links.values():
                if ld.id not in mine:
                    self.publish(subjects.provider_linkdefs(self.topic, "del"), ld.to_msgpack(deleted=True))
        self.links = mine

    # --- stop ----------------------------------------------------------------------------------

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            request = shutdown_request(self.config.host_id)
            try:
                asyncio.run_coroutine_threadsafe(
                    self.nc.request(subjects.provider_shutdown(self.topic), request, timeout=_SHUTDOWN_TIMEOUT_S),
                    self.loop).result(_SHUTDOWN_TIMEOUT_S + 0.5)
            except Exception:  # noqa: BLE001 -- it may not answer; the kill below still happens
                log.info("provider did not answer the shutdown request",
                         extra={"provider_key": self.start.claims.public_key})
            try:
                proc.wait(self.config.provider_shutdown_delay_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
        self.nats_stop()
