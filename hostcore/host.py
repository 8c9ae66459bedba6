"""HostSupervisor: the root of one host's supervision tree (architecture.md "Processes").

    HostSupervisor        thread-free; builds the tree, holds the host's lifecycle
     ├─ LatticeEvents     NATS-bridged: CloudEvents and heartbeats on wasmbus.evt.{lattice}
     ├─ LatticeCache      NATS-bridged: claims, links, refmaps, call aliases (JetStream KV)
     ├─ NativeWorker      claims checks and wasm compiles into the .cwasm cache
     ├─ ActorSupervisor   scale / start / terminate; forks one ActorModule process per instance
     ├─ ProviderSupervisor  lp / sp; one ProviderModule per (provider, link), owning its process
     └─ ControlServer     NATS-bridged: wasmbus.ctl.{lattice}.… → messages

It also watches the launcher: if the launcher dies without stopping us (kill -9), it ends the
Thespian admin and everything below it, so nothing the host started outlives it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from hostcore.actors.messages import (
    Done,
    HostFailed,
    HostReady,
    HostStopped,
    InitActorSupervisor,
    InitControl,
    InitEvents,
    InitFailed,
    InitLattice,
    InitNative,
    InitProviderSupervisor,
    PublishEvent,
    Purge,
    Ready,
    SendHeartbeat,
    StartHost,
    StopHost,
)
from hostcore.actors.supervisor import ActorSupervisor
from hostcore.config import HostConfig
from hostcore.control.events import LatticeEvents
from hostcore.control.lattice import LatticeCache
from hostcore.control.server import ControlServer
from hostcore.native.worker import NativeWorker
from hostcore.procutil import end_admin_tree, pid_alive, set_pdeathsig
from hostcore.providers.supervisor import ProviderSupervisor

log = logging.getLogger(__name__)

__all__ = ["HostSupervisor"]

_WATCHDOG_S = 0.5
_ROLES = frozenset({"events", "lattice", "native", "actor_supervisor", "provider_supervisor", "control"})


class HostSupervisor(ActorTypeDispatcher):  # type: ignore[misc]
    """Builds the tree on StartHost (replies HostReady or HostFailed) and tears it down on
    StopHost (purge → host_stopped → HostStopped to the launcher)."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Any = None
        self.ready: set[str] = set()
        self.stopping = False
        self.purging: set[str] = set()  # supervisors still halting their children

    def receiveMsg_StartHost(self, msg: StartHost, sender: Any) -> None:
        set_pdeathsig()
        self.config: HostConfig = msg.config
        self.launcher, self.launcher_pid = sender, msg.launcher_pid
        self.events = self.createActor(LatticeEvents)
        self.lattice = self.createActor(LatticeCache)
        self.native = self.createActor(NativeWorker)
        self.actors = self.createActor(ActorSupervisor)
        self.providers = self.createActor(ProviderSupervisor)
        self.control = self.createActor(ControlServer)
        self.send(self.actors, InitActorSupervisor(config=msg.config, events=self.events, native=self.native,
                                                   lattice=self.lattice))
        self.send(self.providers, InitProviderSupervisor(config=msg.config, events=self.events, native=self.native,
                                                         lattice=self.lattice))
        self.send(self.native, InitNative(config=msg.config))
        self.send(self.events, InitEvents(config=msg.config, actor_supervisor=self.actors,
                                          provider_supervisor=self.providers))
        self.send(self.lattice, InitLattice(config=msg.config, actor_supervisor=self.actors,
                                            provider_supervisor=self.providers))
        self.send(self.control, InitControl(config=msg.config, host_supervisor=self.myAddress,
                                            actor_supervisor=self.actors, provider_supervisor=self.providers,
                                            events=self.events, lattice=self.lattice, native=self.native))
        self.wakeupAfter(dt.timedelta(seconds=_WATCHDOG_S))

    def receiveMsg_Ready(self, msg: Ready, sender: Any) -> None:
        self.ready.add(msg.role)
        if self.ready == _ROLES:
            cfg = self.config
            self.send(self.events, PublishEvent(event_type="host_started",
                                                data={"labels": cfg.labels, "friendly_name": cfg.friendly_name}))
            self.send(self.events, SendHeartbeat())  # the first heartbeat follows host_started
            log.info("host started", extra={"host_id": cfg.host_id, "lattice": cfg.lattice_prefix,
                                            "nats_url": cfg.nats_url})
            self.send(self.launcher, HostReady(host_id=cfg.host_id, admin_pid=os.getppid()))

    def receiveMsg_InitFailed(self, msg: InitFailed, sender: Any) -> None:
        log.error("host start failed", extra={"role": msg.role, "error": msg.error})
        self.send(self.launcher, HostFailed(error=f"{msg.role}: {msg.error}"))

    # --- stop ----------------------------------------------------------------------------------

    def receiveMsg_StopHost(self, msg: StopHost, sender: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("host stopping", extra={"host_id": self.config.host_id, "reason": msg.reason})
        self.send(self.control, ActorExitRequest())  # no new work while we purge
        self.purging = {"actors", "providers"}
        self.send(self.actors, Purge(request_id="actors"))
        self.send(self.providers, Purge(request_id="providers"))

    def receiveMsg_Done(self, msg: Done, sender: Any) -> None:
        if msg.request_id not in self.purging:
            return
        self.purging.discard(msg.request_id)
        if not self.purging:  # every actor and provider is gone
            self.send(self.events, PublishEvent(event_type="host_stopped", data={"labels": self.config.labels}))
            # Stopping LatticeEvents drains its connection, so host_stopped is out before we answer.
            self.send(self.events, ActorExitRequest())

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        if self.stopping and msg.childAddress == self.events:
            self.send(self.launcher, HostStopped(host_id=self.config.host_id))
        elif not self.stopping:
            # A core child died: without it the host cannot keep its promises; stop cleanly.
            log.error("core host process died; stopping the host", extra={"child": str(msg.childAddress)})
            self.receiveMsg_StopHost(StopHost(reason="core process died"), sender)

    # --- launcher watchdog ---------------------------------------------------------------------

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if pid_alive(self.launcher_pid):
            self.wakeupAfter(dt.timedelta(seconds=_WATCHDOG_S))
            return
        # The launcher was killed: end the daemonised admin and all it started (PDEATHSIG then
        # reaps our own children). The admin's logger is a child of the admin, so it goes too.
        log.error("launcher died; ending the host", extra={"launcher_pid": self.launcher_pid})
        end_admin_tree()
