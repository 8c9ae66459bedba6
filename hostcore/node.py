"""The host node's launcher (architecture.md P0): embedded NATS, the Thespian ActorSystem, the
HostSupervisor, and the wait for SIGTERM / SIGINT / a control `stop`.

The launcher owns everything it starts: on any exit path it stops the host, shuts the ActorSystem
down and stops the embedded nats-server.

The host's admin leads a Thespian convention: workers (`python -m hostcore worker --join
HOST:ADMIN_PORT`, hostcore/worker.py) join it, and ActorSupervisor may place instances on them
(HOSTCORE_PLACEMENT).
"""

from __future__ import annotations

import logging
import logging.config
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from hostcore.actors.placement import HOST_CAPABILITY, HOST_ID_CAPABILITY
from hostcore.config import HostConfig, Placement
from hostcore.context import LocalContext, announce_host, remove_context, second_host_refusal
from hostcore.host import HostSupervisor
from hostcore.logs import log_defs
from hostcore.nats_server import DEFAULT_PORT, EmbeddedNatsServer
from hostcore.natsconn import wait_for_endpoints
from hostcore.procutil import freeze_heap, set_launcher
from hostcore.telemetry.launcher import LauncherTelemetry
from hostcore.thespian_admin import configure_convention, reap_admin, start_actor_system
from hostcore.thespian_fanout import prepare_for_fanout
from hostcore.thespian_net import ThespianUnverified, secure_thespian
from hostcore.tree.messages import HostFailed, HostReady, HostStopped, StartHost, StopHost

if TYPE_CHECKING:
    from hostcore.web import DashboardServer

__all__ = ["run_node"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0


def run_node(config: HostConfig) -> int:
    """Run one host until it is stopped. Returns the process exit code."""
    logging.config.dictConfig(log_defs(config.log_level, config.structured_logging))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    try:  # before the ActorSystem forks: every process of the tree inherits the bind address and the secret
        secure_thespian(config.network, convention=config.placement is not Placement.LOCAL)
        prepare_for_fanout()
    except ThespianUnverified as err:
        log.error("refusing to start", extra={"error": str(err)})
        return 1
    nats: EmbeddedNatsServer | None = None
    if not config.nats_url:
        if not config.allow_second_host and (refusal := second_host_refusal(config.data_dir)):
            log.error(refusal)
            return 2
        nats = EmbeddedNatsServer(config.data_dir / "nats" / config.host_id[:16], preferred_port=DEFAULT_PORT).start()
        config = config.with_nats_url(nats.url)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # OTP issue #22: a host started before its NATS server waits for it instead of failing. A full
    # handshake per connection: bad credentials or TLS are logged and retried like an absent server.
    if not wait_for_endpoints((config.ctl, config.rpc), stop):
        return 0
    # Thespian's own diagnostics go to a file of ours, not to /tmp shared with other hosts.
    os.environ.setdefault("THESPLOG_FILE", str(config.data_dir / "thespian.log"))
    # Thespian names each process after its actor (via setproctitle); SPT_NOENV keeps the title
    # inside argv so /proc/<pid>/environ stays readable for operators and leak checks.
    os.environ.setdefault("SPT_NOENV", "1")
    # Before the ActorSystem: every process of the tree inherits PROMETHEUS_MULTIPROC_DIR.
    telemetry = LauncherTelemetry(config)
    configure_convention(config.convention)
    set_launcher(os.getpid())  # every process of the tree can watch this launcher
    freeze_heap()  # the whole tree forks from here: its processes share this heap
    # Created before any thread or loop: Thespian forks from here (architecture.md P0 step 2).
    # No 'Convention Address.IPv4': this admin leads the convention that workers join.
    asys = start_actor_system(
        lambda port: {"Admin Port": port, HOST_CAPABILITY: True, HOST_ID_CAPABILITY: config.host_id},
        fixed_port=config.admin_port, log_defs=log_defs(config.log_level, config.structured_logging))
    admin_port = asys.capabilities.get("Admin Port")
    admin_pid: int | None = None
    dashboard: DashboardServer | None = None
    try:
        host = asys.createActor(HostSupervisor)
        reply = asys.ask(host, StartHost(config=config, launcher_pid=os.getpid()), _START_TIMEOUT_S)
        if not isinstance(reply, HostReady):
            error = reply.error if isinstance(reply, HostFailed) else "no answer from the host supervisor"
            log.error("host failed to start", extra={"error": error})
            return 1
        admin_pid = reply.admin_pid
        telemetry.serve()  # /metrics on HOSTCORE_METRICS_PORT: a thread, so only after the fork point
        log.info("host running", extra={"host_id": config.host_id, "lattice": config.lattice_prefix,
                                        "nats_url": config.nats_url, "admin_port": admin_port,
                                        "placement": config.placement.value})
        dashboard = _start_dashboard(config)
        announce_host(config.data_dir, LocalContext(  # the CLI finds this host's lattice with no flags
            nats_url=config.nats_url, lattice_prefix=config.lattice_prefix, ctl_topic_prefix=config.ctl_topic_prefix,
            host_id=config.host_id, pid=os.getpid(), cluster_seed=config.cluster_key.seed,
            dashboard_url=f"http://{config.dashboard_host}:{config.dashboard_port}" if dashboard else ""))
        stopped = False
        while not stopped and not stop.is_set():
            stopped = isinstance(asys.listen(0.25), HostStopped)
        if not stopped:
            asys.tell(host, StopHost(reason="signal"))
            deadline_hits = int(_STOP_TIMEOUT_S / 0.25)
            for _ in range(deadline_hits):
                if isinstance(asys.listen(0.25), HostStopped):
                    break
            else:
                log.warning("host did not stop in time; shutting the actor system down")
        return 0
    finally:
        remove_context(config.data_dir, os.getpid())
        if dashboard is not None:
            dashboard.close()
        telemetry.close()
        asys.shutdown()
        if admin_pid is not None:
            reap_admin(admin_pid)
        if nats is not None:
            nats.close()
        log.info("host exited", extra={"host_id": config.host_id})


def _start_dashboard(config: HostConfig) -> DashboardServer | None:
    """The dashboard, started once the ActorSystem exists (P0 may create threads from
    then on). None when it is off (port 0) or could not start (a port in use is a warning)."""
    if not config.dashboard_port:
        return None
    # Imported here, after the tree forked: no process of the tree needs the dashboard, and pages
    # the launcher touches while serving it would otherwise be copied out of the shared heap.
    from hostcore.web import DashboardServer, DashboardSettings

    server = DashboardServer(DashboardSettings.from_host_config(config, token=config.dashboard_token),
                             host=config.dashboard_host, port=config.dashboard_port)
    return server if server.start() else None
