"""The Thespian admin process of a host or worker node: its convention timers, set before it
starts, and making sure it is gone after shutdown. Used by the launcher (node.py) and by worker
nodes (worker.py), so a worker needs neither the launcher nor the dashboard."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from thespian.actors import ActorSystem, InvalidActorAddress

from hostcore.config import ConventionTiming
from hostcore.procutil import descendants, free_port, pid_alive, wait_for

log = logging.getLogger(__name__)

__all__ = ["configure_convention", "reap_admin", "start_actor_system"]


def configure_convention(timing: ConventionTiming) -> None:
    """Set Thespian's convention timers for the admin this process is about to start (the admin
    forks from here, so call this before creating the ActorSystem). Idempotent; not thread-safe.

    Thespian reads CONVENTION_* from the environment once, at import; its module globals are set
    too, so import order does not matter. The restart period must be short as well: a member's
    admin picks its next wake-up *before* it has joined, from CONVENTION_RESTART_PERIOD (3:22 by
    default), and sleeps through the leader's answer. Measured with thespian 4.0.1: a worker
    registered once and then stayed silent for 200 s, so the leader dropped it after
    period × miss_max although it was alive.
    """
    period = dt.timedelta(seconds=timing.period_s)
    os.environ["CONVENTION_REREGISTRATION_PERIOD"] = f"{timing.period_s // 60}:{timing.period_s % 60}"
    os.environ["CONVENTION_RESTART_PERIOD"] = os.environ["CONVENTION_REREGISTRATION_PERIOD"]
    os.environ["CONVENTION_REGISTRATION_MISS_MAX"] = str(timing.miss_max)
    convention: Any = importlib.import_module("thespian.system.admin.convention")
    convention.CONVENTION_REREGISTRATION_PERIOD = period
    convention.CONVENTION_RESTART_PERIOD = period
    convention.CONVENTION_REGISTRATION_MISS_MAX = timing.miss_max


def reap_admin(admin_pid: int) -> None:
    """ActorSystem.shutdown() should end the admin and its logger; make sure of it."""
    leftovers = [admin_pid, *descendants(admin_pid)]
    if wait_for(lambda: not any(pid_alive(p) for p in leftovers), 5.0):
        return
    log.warning("actor system processes outlived shutdown; killing them", extra={"pids": leftovers})
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_actor_system(capabilities: Callable[[int], dict[str, Any]], *, fixed_port: int,
                       log_defs: dict[str, Any], attempts: int = 3) -> ActorSystem:
    """A node's ActorSystem, created before any thread (the admin forks from here).

    `capabilities(port)` gives the capabilities for an admin on `port`. With no `fixed_port` a
    free port is picked, and a failed start is retried on a fresh one: between picking a port and
    binding it another process may take it (seen with several nodes starting at once on a loaded
    machine; Thespian then says "not a valid or useable ActorSystem Admin").
    """
    for attempt in range(1, attempts + 1):
        port = fixed_port or free_port()
        try:
            return ActorSystem("multiprocTCPBase", capabilities(port), logDefs=log_defs, transientUnique=True)
        except InvalidActorAddress as err:
            if fixed_port or attempt == attempts:
                raise
            log.warning("actor system did not start; retrying on another port", extra={"port": port, "error": str(err)})
    raise AssertionError("unreachable")
