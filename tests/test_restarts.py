"""Unit tests of the supervision mechanics (hostcore/supervision.py, hostcore/procutil.py)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from typing import Any

import pytest

from hostcore.procutil import pid_alive, wait_for
from hostcore.supervision import ExitWatch, RestartWindow, Rewirable, Rewire, crash_if_asked


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_restart_window_allows_intensity_restarts_per_period_per_key() -> None:
    clock = FakeClock()
    window = RestartWindow(3, 5.0, clock=clock)
    assert [window.allow("control") for _ in range(4)] == [True, True, True, False]
    assert window.allow("events")  # each key has its own window
    clock.now += 5.1  # the old restarts age out
    assert window.allow("control")
    assert window.count("control") == 1


def test_restart_window_counts_a_steady_trickle_as_healthy() -> None:
    clock = FakeClock()
    window = RestartWindow(3, 5.0, clock=clock)
    for _ in range(20):
        assert window.allow("native")
        clock.now += 2.0  # never more than 3 within 5 s


def test_exit_watch_reports_the_key_of_a_process_that_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watch = ExitWatch()
    try:
        assert watch.watch(proc.pid, "instance-1")
        fds = watch.thespian_watch().filenos  # type: ignore[union-attr]
        assert len(fds) == 1
        assert select.select(fds, [], [], 0)[0] == []  # alive: not readable
        proc.kill()
        proc.wait(5)
        ready, _, _ = select.select(fds, [], [], 5)
        assert watch.exited(ready) == ["instance-1"]
        assert watch.thespian_watch() is None  # closed and forgotten
    finally:
        proc.kill()
        proc.wait(5)
        watch.close()


def test_exit_watch_refuses_a_pid_that_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(5)
    assert not ExitWatch().watch(proc.pid, "gone")


class _Role(Rewirable):
    PEERS = frozenset({"native"})

    def __init__(self) -> None:
        self.native: Any = "old"
        self.restarted: list[str] = []

    def peer_restarted(self, role: str) -> None:
        self.restarted.append(role)


def test_rewire_replaces_only_the_peers_a_role_talks_to() -> None:
    role = _Role()
    role.receiveMsg_Rewire(Rewire(role="native", address="new"), None)
    role.receiveMsg_Rewire(Rewire(role="control", address="elsewhere"), None)
    assert role.native == "new" and role.restarted == ["native"]
    assert not hasattr(role, "control")


def test_crash_switch_spares_the_first_start_and_the_other_roles() -> None:
    from hostcore.config import load_config

    config = load_config([], {"HOSTCORE_TEST_CRASH_ROLE": "control"})
    crash_if_asked(config, "control", restart=0)  # the host's start: no crash
    crash_if_asked(config, "events", restart=2)  # another role: no crash
    child = os.fork()
    if child == 0:  # pragma: no cover - the child exits inside crash_if_asked
        crash_if_asked(config, "control", restart=1)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 70


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PDEATHSIG and subreapers are Linux features")
def test_guarded_forks_die_with_their_parent() -> None:
    """A process forked below `guard_forks` dies when its parent is killed, even if it never ran
    a line of its own (the window a Thespian child has before its start-up message)."""
    script = """
import os, sys, time
from hostcore.procutil import guard_forks
guard_forks()
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert wait_for(lambda: not pid_alive(child), 5), "guarded child outlived its parent"
    finally:
        parent.kill()
        parent.wait(5)
        parent.stdout.close()  # type: ignore[union-attr]
