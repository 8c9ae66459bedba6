"""Process helpers shared by everything that starts a process: parent-death signal, free ports,
and the ask-wait-SIGTERM-wait-SIGKILL stop sequence (style.md "Processes and resources")."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import NoReturn
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = [
    "close_fds",
    "default_signal_actions",
    "descendants",
    "end_admin_tree",
    "free_port",
    "freeze_heap",
    "guard_forks",
    "launcher_pid",
    "pid_alive",
    "reap",
    "reap_dead_children",
    "set_child_subreaper",
    "set_launcher",
    "set_pdeathsig",
    "stop_process",
    "wait_for",
]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

# Set once in the launcher by `guard_forks`, before the ActorSystem forks: every process of the
# tree inherits it, so each can watch the launcher without being told its pid.
_launcher_pid = 0
_fork_parent = 0
_fork_guarded = False


try:  # once, before any fork: the tree's processes share it instead of each loading its own
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no C library to load
    _libc = None


def _prctl(option: int, value: int) -> None:
    try:
        _libc.prctl(option, value, 0, 0, 0)  # type: ignore[union-attr]
    except AttributeError:  # not Linux
        return


def close_fds(fds: Iterable[int]) -> None:
    """Close every descriptor in `fds`, one `close_range` per run of consecutive numbers: a
    process forked from the InstanceTemplate closes two of its descriptors per instance, and they
    are mostly consecutive. Already closed ones are skipped silently."""
    ordered = sorted(fds)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        os.closerange(ordered[i], ordered[j] + 1)
        i = j + 1


_libc_signal = getattr(_libc, "signal", None)
if _libc_signal is not None:
    _libc_signal.restype, _libc_signal.argtypes = ctypes.c_void_p, (ctypes.c_int, ctypes.c_void_p)


def default_signal_actions(signals: Iterable[int]) -> None:
    """Give every signal in `signals` the kernel's default action, for a forked child leaving
    its parent's handlers behind. Done below Python: `signal.signal` would also let go of each
    Python handler, writing to pages the child shares with its parent (0.8 against 0.2-0.3 ms for
    62 signals, measured in a fork of a process with hostcore imported). `signal.getsignal`
    still names the parent's handlers afterwards; they are never called, and `signal.signal`
    replaces them as usual."""
    if _libc_signal is None:  # pragma: no cover
        for sig in signals:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
        return
    for sig in signals:
        _libc_signal(int(sig), None)  # None is SIG_DFL (0)


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux; no-op elsewhere);
    0 clears it. The setting is per process and cleared by fork (`guard_forks` re-arms it)."""
    _prctl(_PR_SET_PDEATHSIG, int(sig))


def set_child_subreaper() -> None:
    """Orphans below this process are re-parented to it, not to init: they stay in the tree
    (ended with it, reaped by it; see `reap`)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def reap(pid: int) -> None:
    """Collect `pid`'s exit status if it is a dead child of ours (an adopted orphan). Never blocks."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return


_COMM_LEN = 15  # the kernel keeps this much of a process's name


def reap_dead_children(names: tuple[str, ...]) -> list[int]:
    """Collect the exit status of every dead child of this process whose name (the kernel's
    15-character `comm`, which setproctitle sets) starts with one of `names`; returns their pids.

    A subreaper adopts orphans nobody told it about, such as a forked process that died with its
    parent: without this their zombies stay until the subreaper ends. Pass only names of processes
    nothing else waits for: collecting the status of a multiprocessing child here would hide its
    exit from `Process.is_alive`, which would then report it alive forever."""
    reaped: list[int] = []
    names = tuple(name[:_COMM_LEN] for name in names)
    for pid in _children():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        if rest.split()[:1] == ["Z"] and name.startswith(names):
            reap(pid)
            reaped.append(pid)
    return reaped


def _children() -> list[int]:
    """This process's children, from every thread's /proc children list (Linux)."""
    pids: list[int] = []
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return pids
    for task in tasks:
        try:
            pids.extend(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return pids


def freeze_heap() -> None:
    """Collect this process's garbage, then exempt every object that is left from all later
    collections (gc.freeze). Call right before a fork: a child's first full collection would
    otherwise write the GC header of every object it inherited, copying nearly every page of the
    parent's heap (measured: 9-15 MB of private memory per forked process). Frozen objects are
    still freed by reference counting; only cyclic garbage among them stays. Once most of the heap
    is frozen, the collection here only walks what was allocated since (well under 1 ms)."""
    gc.collect()
    gc.freeze()


def _before_fork() -> None:
    global _fork_parent
    _fork_parent = os.getpid()
    freeze_heap()


def _after_fork_in_child() -> None:
    # Armed before the child runs any code of Thespian's: a parent killed in the window between
    # fork and a role's own start-up would otherwise leave this child running as an orphan.
    set_pdeathsig()
    if os.getppid() != _fork_parent:
        os._exit(1)


def set_launcher(pid: int) -> None:
    """Call in the launcher before the ActorSystem forks: every process of the tree inherits it."""
    global _launcher_pid
    _launcher_pid = pid


def guard_forks() -> None:
    """From now on every process forked by this one (or below it) dies with its parent from its
    first instruction (PDEATHSIG), and each fork shares its parent's heap (`freeze_heap` runs
    before every fork). Not for the launcher: Thespian's admin daemonises with a double
    fork, whose intermediate parent exits at once. Idempotent per process."""
    global _fork_guarded
    if not _fork_guarded:  # fork hooks can't be unregistered
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _fork_guarded = True


def launcher_pid() -> int:
    """The pid of the launcher this process descends from (0 outside a host's tree)."""
    return _launcher_pid


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
        log.warning("process ignored SIGTERM, killing it", extra={"child": name, "pid": proc.pid})
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
    """Called from a direct child of a daemonised Thespian admin whose launcher died: SIGKILL
    everything below the admin, then the admin, then this process (no orphans when the launcher is
    killed).

    The admin is stopped first: it restarts a logger that dies, and must fork nothing between the
    listing and the kill. It is killed last because its death kills the caller (PDEATHSIG), which
    must not happen before every other process was killed: the admin's logger, a sibling of the
    caller, was sometimes left running."""
    admin, me = os.getppid(), os.getpid()
    with contextlib.suppress(ProcessLookupError):
        os.kill(admin, signal.SIGSTOP)
    wait_for(lambda: _state(admin) in ("T", ""), 0.5, interval_s=0.005)
    for pid in [*(p for p in descendants(admin) if p != me), admin]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(me, signal.SIGKILL)
    raise SystemExit(1)  # not reached


def _state(pid: int) -> str:
    """The one-letter state of `pid` (R, S, T, Z …); "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout_s` passes; returns the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
