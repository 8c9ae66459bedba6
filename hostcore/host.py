"""HostSupervisor: the root of one host's supervision tree (architecture.md "Processes").

    HostSupervisor        thread-free; builds the tree, restarts its roles, holds their records
     ├─ LatticeEvents     NATS-bridged: CloudEvents and heartbeats on wasmbus.evt.{lattice}
     ├─ LatticeCache      NATS-bridged: claims, links, refmaps, call aliases (JetStream KV)
     ├─ NativeWorker      claims checks and wasm compiles into the .cwasm cache
     ├─ ActorSupervisor   scale / start / terminate; forks one ActorModule process per instance
     ├─ ProviderSupervisor  lp / sp; one ProviderModule per (provider, link), owning its process
     └─ ControlServer     NATS-bridged: wasmbus.ctl.{lattice}.… → messages

As OTP's one_for_one host application, a role that dies (kill -9 included) is restarted with the
same configuration and every other role learns its new address (`Rewire`); past
`core_restart_intensity` restarts within `core_restart_period_s` the host stops, and
`host_stopped` names the role. The two supervisors record what they run here (`Remember`), so a
restarted supervisor adopts the instances and provider modules that outlived its predecessor
(hostcore/supervision.py). This process is their subreaper: an orphan stays in the tree.

It also watches the launcher: if the launcher dies without stopping us (kill -9), it ends the
Thespian admin and everything below it, so nothing the host started outlives it.

Where the pieces live (tests/test_import_rules.py keeps the arrows pointing down):

    host.py, actors/, providers/, control/   the roles above (NativeWorker: actors/native_worker.py)
    tree/                                    their messages and the NATS bridge they share
    native/                                  host-free: claims, PARs, invocations, wasmtime, OCI
    wire/                                    every subject and wire shape, for host, SDK, client, web, cli
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import signal
import time
from typing import Any

from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ChildActorExited,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from hostcore.actors import instance_process
from hostcore.actors.native_worker import NativeWorker
from hostcore.actors.supervisor import ActorSupervisor
from hostcore.actors.template_link import TEMPLATE_TITLE
from hostcore.config import HostConfig
from hostcore.control.events import LatticeEvents
from hostcore.control.lattice import LatticeCache
from hostcore.control.server import ControlServer
from hostcore.procutil import (
    end_admin_tree,
    guard_forks,
    pid_alive,
    reap,
    reap_dead_children,
    set_child_subreaper,
    set_pdeathsig,
)
from hostcore.providers.supervisor import ProviderSupervisor
from hostcore.supervision import ChildRecord, Forget, Records, Remember, RestartWindow, Rewire, pidfd_open
from hostcore.tree.messages import (
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
from hostcore.wire import cloudevents

log = logging.getLogger(__name__)

__all__ = ["HostSupervisor"]

_WATCHDOG_S = 0.5  # only where pidfds are missing: then the launcher is polled
# How often dead adopted instances nobody reported are collected: a spare, or an instance still
# starting, dies with its template, and nobody else knows its pid.
_REAP_S = 5.0
_REAP = "reap"  # the reaper's wakeup payload
# Started in this order: whoever is created later may already be addressed by the earlier ones.
_ROLES: dict[str, type] = {
    "events": LatticeEvents,
    "lattice": LatticeCache,
    "native": NativeWorker,
    "actor_supervisor": ActorSupervisor,
    "provider_supervisor": ProviderSupervisor,
    "control": ControlServer,
}
_OWNERS = ("actor_supervisor", "provider_supervisor")  # the roles that own processes


class HostSupervisor(ActorTypeDispatcher):  # type: ignore[misc]
    """Builds the tree on StartHost (replies HostReady or HostFailed), restarts any role that
    dies, and tears the tree down on StopHost (purge → host_stopped → HostStopped to the
    launcher)."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Any = None
        self.launcher_fd: int | None = None
        self.children: dict[str, Any] = {}
        self.restarts: collections.Counter[str] = collections.Counter()
        self.records: dict[str, dict[str, Any]] = {role: {} for role in _OWNERS}
        self.ready: set[str] = set()
        self.started = False
        self.stopping = False
        self.purging: set[str] = set()  # supervisors still halting their children

    def receiveMessage(self, msg: Any, sender: Any) -> ThespianWatch | None:
        super().receiveMessage(msg, sender)
        # Thespian watches only the fds returned by the latest receiveMessage: return it always.
        return ThespianWatch([self.launcher_fd]) if self.launcher_fd is not None else None

    def receiveMsg_StartHost(self, msg: StartHost, sender: Any) -> None:
        set_pdeathsig()
        set_child_subreaper()
        guard_forks()
        self.config: HostConfig = msg.config
        self.launcher, self.launcher_pid = sender, msg.launcher_pid
        self.started_at = time.time()
        self.window = RestartWindow(msg.config.core_restart_intensity, msg.config.core_restart_period_s)
        for role, cls in _ROLES.items():
            self.children[role] = self.createActor(cls)
        for role in _ROLES:
            self.send(self.children[role], self._init(role))
        self.launcher_fd = pidfd_open(self.launcher_pid)
        if self.launcher_fd is None:
            self.wakeupAfter(dt.timedelta(seconds=_WATCHDOG_S))
        self.wakeupAfter(dt.timedelta(seconds=_REAP_S), payload=_REAP)

    def _init(self, role: str) -> Any:
        """The start message of `role`, naming its peers' current addresses."""
        cfg, c, restart = self.config, self.children, self.restarts[role]
        peers = {"events": c["events"], "native": c["native"], "lattice": c["lattice"]}
        match role:
            case "events":
                return InitEvents(config=cfg, actor_supervisor=c["actor_supervisor"],
                                  provider_supervisor=c["provider_supervisor"], started_at=self.started_at,
                                  restart=restart)
            case "lattice":
                return InitLattice(config=cfg, actor_supervisor=c["actor_supervisor"],
                                   provider_supervisor=c["provider_supervisor"], restart=restart)
            case "native":
                return InitNative(config=cfg, restart=restart)
            case "actor_supervisor":
                return InitActorSupervisor(config=cfg, **peers, restart=restart,
                                           restore=tuple(self.records[role].values()))
            case "provider_supervisor":
                return InitProviderSupervisor(config=cfg, **peers, restart=restart,
                                              restore=tuple(self.records[role].values()))
            case _:
                return InitControl(config=cfg, host_supervisor=self.myAddress, **peers,
                                   actor_supervisor=c["actor_supervisor"],
                                   provider_supervisor=c["provider_supervisor"], started_at=self.started_at,
                                   restart=restart)

    def receiveMsg_Ready(self, msg: Ready, sender: Any) -> None:
        self.ready.add(msg.role)
        if self.started:
            log.info("core role restarted", extra={"role": msg.role, "restarts": self.restarts[msg.role]})
            return
        if self.ready == set(_ROLES):
            self.started = True
            cfg = self.config
            events = self.children["events"]
            self.send(events, PublishEvent.of(cloudevents.host_started(labels=cfg.labels,
                                                                       friendly_name=cfg.friendly_name)))
            self.send(events, SendHeartbeat())  # the first heartbeat follows host_started
            log.info("host started", extra={"host_id": cfg.host_id, "lattice": cfg.lattice_prefix,
                                            "nats_url": cfg.nats_url})
            self.send(self.launcher, HostReady(host_id=cfg.host_id, admin_pid=os.getppid()))

    def receiveMsg_InitFailed(self, msg: InitFailed, sender: Any) -> None:
        log.error("host role failed to start", extra={"role": msg.role, "error": msg.error})
        if not self.started:
            self.send(self.launcher, HostFailed(error=f"{msg.role}: {msg.error}"))
        elif not self.stopping:  # a restarted role that cannot start: the host cannot keep its promises
            self._stop(f"{msg.role} failed to restart: {msg.error}")

    # --- records of the processes the supervisors own ------------------------------------------

    def receiveMsg_Remember(self, msg: Remember, sender: Any) -> None:
        self.records[msg.role][msg.key] = msg.record

    def receiveMsg_Forget(self, msg: Forget, sender: Any) -> None:
        self.records[msg.role].pop(msg.key, None)
        if msg.pid:
            reap(msg.pid)

    def receiveMsg_Records(self, msg: Records, sender: Any) -> None:
        for change in msg.changes:
            if isinstance(change, Remember):
                self.receiveMsg_Remember(change, sender)
            else:
                self.receiveMsg_Forget(change, sender)

    # --- restarts ------------------------------------------------------------------------------

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        role = next((r for r, address in self.children.items() if address == msg.childAddress), None)
        if role is None:
            return
        if self.stopping:
            self._exited_while_stopping(role)
            return
        if not self.started:  # the tree never came up: the launcher reports it
            self.send(self.launcher, HostFailed(error=f"{role}: process died while starting"))
            return
        if not self.window.allow(role):
            del self.children[role]
            cfg = self.config
            self._stop(f"{role} died {self.window.count(role) + 1} times within {cfg.core_restart_period_s:g} s")
            return
        log.warning("core role died; restarting it", extra={"role": role})
        self.ready.discard(role)
        self.restarts[role] += 1
        address = self.createActor(_ROLES[role])
        self.children[role] = address
        self.send(address, self._init(role))
        for other, peer in self.children.items():
            if other != role:
                self.send(peer, Rewire(role=role, address=address))

    # --- stop ----------------------------------------------------------------------------------

    def receiveMsg_StopHost(self, msg: StopHost, sender: Any) -> None:
        self._stop(msg.reason)

    def _stop(self, reason: str) -> None:
        """protocol.md §11.4 (OTP `do_stop`): purge everything, publish every actor_stopped and
        provider_stopped, and only then host_stopped; the launcher is told once that is out."""
        if self.stopping:
            return
        self.stopping, self.stop_reason = True, reason
        log.info("host stopping", extra={"host_id": self.config.host_id, "reason": reason})
        if "control" in self.children:
            self.send(self.children["control"], ActorExitRequest())  # no new work while we purge
        for role in _OWNERS:
            self.purging.add(role)
            if role in self.children:
                # The supervisor's Done comes through LatticeEvents (a Flush), after its events.
                self.send(self.children[role], Purge(request_id=role))
            else:  # it is gone for good: halt what it recorded ourselves
                self._halt_records(role)
        if not self.purging:
            self._purged()

    def _halt_records(self, role: str) -> None:
        for record in self.records[role].values():
            if not isinstance(record, ChildRecord):
                continue
            if record.address is not None:
                self.send(record.address, ActorExitRequest())
            elif getattr(record, "pid", 0):  # an instance process (not a Thespian actor): it drains on SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGTERM)
            event = record.stopped_event()
            if event is not None and "events" in self.children:
                self.send(self.children["events"], PublishEvent.of(event))
        self.records[role].clear()
        self.purging.discard(role)

    def receiveMsg_Done(self, msg: Done, sender: Any) -> None:
        if msg.request_id not in self.purging:
            return
        self.purging.discard(msg.request_id)
        if not self.purging:
            self._purged()

    def _purged(self) -> None:
        """Every actor and provider is gone and its event is out."""
        events = self.children.get("events")
        if events is None:
            self.send(self.launcher, HostStopped(host_id=self.config.host_id))
            return
        self.send(events, PublishEvent.of(cloudevents.host_stopped(labels=self.config.labels, reason=self.stop_reason)))
        # Stopping LatticeEvents drains its connection, so host_stopped is out before we answer.
        self.send(events, ActorExitRequest())

    def _exited_while_stopping(self, role: str) -> None:
        del self.children[role]
        if role == "events":
            self.send(self.launcher, HostStopped(host_id=self.config.host_id))
        elif role in self.purging:  # a supervisor died mid-purge: finish its work from its records
            self._halt_records(role)
            if not self.purging:
                self._purged()

    # --- launcher watchdog ---------------------------------------------------------------------

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if msg.payload == _REAP:
            # Only instances and templates (orphaned by a supervisor's death): the roles are
            # multiprocessing children, which Thespian reaps.
            if reaped := reap_dead_children((*instance_process.TITLES, TEMPLATE_TITLE)):
                log.debug("reaped dead instances", extra={"pids": reaped})
            self.wakeupAfter(dt.timedelta(seconds=_REAP_S), payload=_REAP)
            return
        if pid_alive(self.launcher_pid):
            self.wakeupAfter(dt.timedelta(seconds=_WATCHDOG_S))
            return
        self._launcher_died()

    def receiveMsg_WatchMessage(self, msg: WatchMessage, sender: Any) -> None:
        if self.launcher_fd in msg.ready:  # the launcher's pidfd: it exited
            self._launcher_died()

    def _launcher_died(self) -> None:
        # The launcher was killed: end the daemonised admin and all it started (PDEATHSIG then
        # reaps our own children). The admin's logger is a child of the admin, so it goes too.
        log.error("launcher died; ending the host", extra={"launcher_pid": self.launcher_pid})
        end_admin_tree()
