"""A worker node: a Thespian admin that joins a host's convention.

    python -m hostcore worker --join HOST:ADMIN_PORT [--label k=v]... [--admin-port P] [--name ID]

    worker launcher          waits for SIGTERM / SIGINT; logs joins and losses of the host
     └─ Thespian admin       member of the host's convention, capabilities hostcore.worker,
         │                   hostcore.worker_id, hostcore.labels; forks what the host places here
         ├─ logger           forwards log records to the host's admin (Thespian log aggregation)
         ├─ WorkerWatch      watches the launcher and the host (below)
         └─ ActorModule …    instances the host's ActorSupervisor placed here (HOSTCORE_PLACEMENT);
                             each opens its own NATS connection to the host's NATS URL

The worker's admin forks the instances, so the launcher loads ActorModule's imports before it
creates the ActorSystem and starts no thread before that (architecture.md "A process that forks
must hold no threads").

No orphans: WorkerWatch kills the admin's tree if the launcher dies (as HostSupervisor does for a
host), and kills the instances if the host is lost — the host restarts them elsewhere after the
same detection time, so a partition does not leave two copies serving.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from thespian.actors import (
    ActorSystemConventionUpdate,
    ActorTypeDispatcher,
    WakeupMessage,
)

# Preloaded: the admin forks every instance from itself, so it should hold these pages already.
import hostcore.actors.instance  # noqa: F401
from hostcore.actors.placement import (
    HOST_CAPABILITY,
    HOST_ID_CAPABILITY,
    WORKER_CAPABILITY,
    WORKER_ID_CAPABILITY,
    WORKER_LABELS_CAPABILITY,
)
from hostcore.config import WorkerConfig
from hostcore.logs import log_defs
from hostcore.procutil import descendants, end_admin_tree, pid_alive, set_launcher, set_pdeathsig
from hostcore.thespian_admin import configure_convention, reap_admin, start_actor_system
from hostcore.thespian_fanout import prepare_for_fanout
from hostcore.thespian_net import ThespianUnverified, secure_thespian
from hostcore.tree.messages import (
    StartWorkerWatch,
    WorkerJoined,
    WorkerLeft,
    WorkerStopping,
    WorkerWatching,
)

__all__ = ["WorkerWatch", "run_worker"]

log = logging.getLogger(__name__)

_WATCHDOG_S = 0.5
_START_TIMEOUT_S = 10.0


def run_worker(config: WorkerConfig) -> int:
    """Run one worker until SIGTERM / SIGINT. Returns the process exit code.

    Owns its ActorSystem: on every exit path the system is shut down (the admin deregisters from
    the host and asks each instance to exit, so the host moves them at once) and the admin's
    processes are reaped.
    """
    logging.config.dictConfig(log_defs(config.log_level, config.structured_logging))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.environ.setdefault("THESPLOG_FILE", str(config.data_dir / f"thespian-{config.worker_id}.log"))
    os.environ.setdefault("SPT_NOENV", "1")  # keep /proc/<pid>/environ readable (see hostcore.node)
    configure_convention(config.convention)
    set_launcher(os.getpid())  # every process of the tree can watch this launcher
    try:  # before the ActorSystem forks (see hostcore.thespian_net)
        secure_thespian(config.network, convention=True)
        prepare_for_fanout()
    except ThespianUnverified as err:
        log.error("refusing to start", extra={"error": str(err)})
        return 1
    asys = start_actor_system(
        lambda port: {"Admin Port": port, "Convention Address.IPv4": config.join, WORKER_CAPABILITY: True,
                      WORKER_ID_CAPABILITY: config.worker_id, WORKER_LABELS_CAPABILITY: dict(config.labels)},
        fixed_port=config.admin_port, log_defs=log_defs(config.log_level, config.structured_logging))
    admin_pid: int | None = None
    fields = {"worker_id": config.worker_id, "join": f"{config.join[0]}:{config.join[1]}"}
    try:
        watch = asys.createActor(WorkerWatch)
        reply = asys.ask(watch, StartWorkerWatch(launcher_pid=os.getpid(), worker_id=config.worker_id),
                         _START_TIMEOUT_S)
        if not isinstance(reply, WorkerWatching):
            log.error("worker failed to start", extra={**fields, "error": "no answer from the worker watch"})
            return 1
        admin_pid = reply.admin_pid
        log.info("worker running", extra={**fields, "admin_port": asys.capabilities.get("Admin Port"),
                                          "labels": config.labels})
        joined = False
        warn_at = time.monotonic() + config.join_timeout_s
        while not stop.is_set():
            msg = asys.listen(0.25)
            if isinstance(msg, WorkerJoined):
                joined = True
                log.info("worker joined", extra={**fields, "host_id": msg.host_id, "host_admin": msg.host_admin})
            elif isinstance(msg, WorkerLeft):
                joined = False
                warn_at = time.monotonic() + config.join_timeout_s
                log.warning("host lost; waiting for it to come back",
                            extra={**fields, "host_id": msg.host_id, "dropped_instances": msg.dropped})
            elif not joined and time.monotonic() >= warn_at:
                log.warning("still waiting for the host to answer", extra=fields)
                warn_at = time.monotonic() + config.join_timeout_s
        asys.tell(watch, WorkerStopping())
        return 0
    finally:
        asys.shutdown()
        if admin_pid is not None:
            reap_admin(admin_pid)
        log.info("worker exited", extra=fields)


class WorkerWatch(ActorTypeDispatcher):  # type: ignore[misc]
    """The worker's watchdog, a child of its admin. Thread-free; never forks.

    - the launcher died (kill -9): SIGKILL the admin and everything below it, then itself;
    - the host joined / was lost: tell the launcher; on a loss, SIGKILL every instance (every
      admin child but the logger and this actor), unless the launcher announced WorkerStopping.
    """

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Any = None
        self.launcher_pid = 0
        self.stopping = False

    def receiveMsg_StartWorkerWatch(self, msg: StartWorkerWatch, sender: Any) -> None:
        set_pdeathsig()
        self.launcher, self.launcher_pid = sender, msg.launcher_pid
        # Our admin is a convention member: it reports the leader (the host) joining and leaving.
        self.notifyOnSystemRegistrationChanges(True)
        self.send(sender, WorkerWatching(admin_pid=os.getppid()))
        self.wakeupAfter(dt.timedelta(seconds=_WATCHDOG_S))

    def receiveMsg_WorkerStopping(self, msg: WorkerStopping, sender: Any) -> None:
        self.stopping = True

    def receiveMsg_ActorSystemConventionUpdate(self, msg: ActorSystemConventionUpdate, sender: Any) -> None:
        caps = msg.remoteCapabilities or {}
        if not caps.get(HOST_CAPABILITY):
            return
        host_id, admin = str(caps.get(HOST_ID_CAPABILITY, "")), str(msg.remoteAdminAddress)
        if msg.remoteAdded:
            self.send(self.launcher, WorkerJoined(host_id=host_id, host_admin=admin))
            return
        dropped = 0 if self.stopping else self._drop_instances()
        if dropped:
            log.warning("host lost; killed the instances it had placed here",
                        extra={"host_id": host_id, "instances": dropped})
        self.send(self.launcher, WorkerLeft(host_id=host_id, host_admin=admin, dropped=dropped))

    def _drop_instances(self) -> int:
        admin, me = os.getppid(), os.getpid()
        victims = [p for p in _children(admin) if p != me and not _is_logger(p)]
        for pid in [*victims, *(d for v in victims for d in descendants(v))]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(victims)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if pid_alive(self.launcher_pid):
            self.wakeupAfter(dt.timedelta(seconds=_WATCHDOG_S))
            return
        log.error("worker launcher died; ending the worker", extra={"launcher_pid": self.launcher_pid})
        end_admin_tree()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _is_logger(pid: int) -> bool:
    """Thespian titles its logger process "logger ActorAddr-…" (setproctitle)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"logger ")
    except OSError:
        return True  # gone, or not ours to judge: leave it alone
