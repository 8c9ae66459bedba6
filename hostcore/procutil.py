"""Process helpers shared by everything that starts a process: parent-death signal, free ports,
and the ask-wait-SIGTERM-wait-SIGKILL stop sequence (style.md "Processes and resources")."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import NoReturn
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["descendants", "end_admin_tree", "free_port", "pid_alive", "set_pdeathsig", "stop_process", "wait_for"]

_PR_SET_PDEATHSIG = 1


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux; no-op elsewhere).

    The setting is per process and cleared by fork, so every child sets it for itself.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        return


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host` (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], *, name: str, grace_s: float = 5.0) -> None:
    """SIGTERM, wait `grace_s`, then SIGKILL (with a warning) and reap. Idempotent."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
        return
    except subprocess.TimeoutExpired:
        log.warning("process ignored SIGTERM, killing it", extra={"process": name, "pid": proc.pid})
    proc.kill()
    proc.wait(grace_s)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def descendants(root: int) -> list[int]:
    """Every live process below `root`, children before grandchildren (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    queue = [root]
    while queue:
        kids = parents.get(queue.pop(0), [])
        out.extend(kids)
        queue.extend(kids)
    return out


def end_admin_tree() -> NoReturn:
    """Called from a direct child of a daemonised Thespian admin whose launcher died: SIGKILL the
    admin, everything below it, then this process (no orphans when the launcher is killed)."""
    admin, me = os.getppid(), os.getpid()
    for pid in [admin, *(p for p in descendants(admin) if p != me)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(me, signal.SIGKILL)
    raise SystemExit(1)  # not reached


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout_s` passes; returns the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
