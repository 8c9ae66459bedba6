"""How the tree survives the death of one of its processes (architecture.md, "The supervisor
supervises its core too").

HostSupervisor restarts a core role that dies (one_for_one, as OTP's host application) and tells
the other roles where the new one lives (`Rewire`). The two supervisors that own processes record
what they run with HostSupervisor (`Remember` / `Forget`); a restarted supervisor receives those
records and takes over the processes that survived its predecessor (`Adopt` / `Adopted`). An
adopted process is not a Thespian child of its new supervisor, so Thespian never reports its exit:
`ExitWatch` turns a pidfd per adopted process into a wake-up of the supervisor instead.

The messages of this protocol live here, beside the mechanics they drive, rather than in the
catalogue of role messages (hostcore/tree/messages/).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from thespian.actors import ActorExitRequest, ThespianWatch, WakeupMessage, WatchMessage

from hostcore.config import HostConfig
from hostcore.procutil import launcher_pid, set_pdeathsig
from hostcore.wire.cloudevents import Event

__all__ = [
    "ORPHANED",
    "Adopt",
    "Adoptable",
    "AdoptingSupervisor",
    "Adopted",
    "ChildRecord",
    "ExitWatch",
    "Flush",
    "Forget",
    "Remember",
    "RestartWindow",
    "Rewirable",
    "Rewire",
    "crash_if_asked",
    "pidfd_open",
]

log = logging.getLogger(__name__)

# How long a restarted supervisor waits for the processes of its predecessor to answer `Adopt`.
# They answer from their actor thread, which never runs guest code, so a live one answers in
# milliseconds; one that does not answer by then is treated as lost and replaced.
ADOPT_TIMEOUT_S = 1.0
# How long an instance or provider module whose supervisor died waits to be adopted before it
# stops itself (a restart takes well under a second; past this the host is stopping anyway).
ORPHAN_GRACE_S = 5.0

_CRASH_EXIT_CODE = 70


# --- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewire:
    """HostSupervisor → every core role: `role` was restarted and now lives at `address`."""

    role: str
    address: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Remember:
    """A supervisor → HostSupervisor: keep `record` under `key`; a successor gets it back."""

    role: str
    key: str
    record: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Forget:
    """A supervisor → HostSupervisor: `key` is gone. `pid` names an adopted process that exited;
    HostSupervisor, its subreaper since its first parent died, reaps it."""

    role: str
    key: str
    pid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Records:
    """Several Remember / Forget at once (one supervisor's changes of one message turn), applied
    in this order."""

    changes: tuple[Remember | Forget, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Adopt:
    """A restarted supervisor → a process its predecessor started: report to me from now on."""

    instance_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Adopted:
    """The answer to `Adopt`. `running` is False for a process that never finished starting."""

    instance_id: str
    pid: int
    running: bool
    api_version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Flush:
    """A barrier through LatticeEvents: once every event sent to it before this one is on the
    wire, it sends `Done(request_id)` to `reply_to` (events come from several senders, and only
    the order between one sender and one receiver is kept)."""

    reply_to: Any
    request_id: str


@runtime_checkable
class ChildRecord(Protocol):
    """What a supervisor remembers of one process it runs (other records, such as a start in
    flight, have no process); HostSupervisor halts it through
    `address` if the supervisor is gone for good, and publishes `stopped_event()` for it."""

    instance_id: str
    address: Any

    def stopped_event(self) -> Event | None: ...  # None: it was never announced


# --- restart intensity ---------------------------------------------------------------------------


class RestartWindow:
    """OTP's restart intensity: at most `intensity` restarts within `period_s`, per key.

    `allow(key)` records a restart and says whether it is within the limit. Not thread-safe.
    """

    def __init__(self, intensity: int, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.intensity, self.period_s, self.clock = intensity, period_s, clock
        self._restarts: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def allow(self, key: str) -> bool:
        now = self.clock()
        window = self._restarts[key]
        while window and now - window[0] > self.period_s:
            window.popleft()
        if len(window) >= self.intensity:
            return False
        window.append(now)
        return True

    def count(self, key: str) -> int:
        return len(self._restarts[key])


# --- peers that come back at another address ------------------------------------------------------


class Rewirable:
    """Mixin for a core role: it keeps each peer role's address in the attribute named after the
    role (`self.events`, `self.native`, …) and `PEERS` lists the roles it talks to."""

    PEERS: frozenset[str] = frozenset()

    def receiveMsg_Rewire(self, msg: Rewire, sender: Any) -> None:
        if msg.role in self.PEERS:
            setattr(self, msg.role, msg.address)
            self.peer_restarted(msg.role)

    def peer_restarted(self, role: str) -> None:
        """Fail or redo what was waiting on the lost `role` (no replay of the message that may
        have killed it: requests in flight are failed, not re-sent)."""


# --- exits of processes that are not our Thespian children ----------------------------------------


def pidfd_open(pid: int) -> int | None:
    """A pidfd for `pid` (readable once it exits), or None if it is gone or pidfds are missing."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


class ExitWatch:
    """pidfds of adopted processes, by key. Return `thespian_watch()` from every receiveMessage;
    a WatchMessage's ready fds give back the keys of the processes that exited."""

    def __init__(self) -> None:
        self._by_fd: dict[int, str] = {}

    def watch(self, pid: int, key: str) -> bool:
        """Start watching; False if `pid` is already gone."""
        fd = pidfd_open(pid)
        if fd is None:
            return False
        self._by_fd[fd] = key
        return True

    def exited(self, ready: list[int]) -> list[str]:
        keys = []
        for fd in ready:
            key = self._by_fd.pop(fd, None)
            if key is not None:
                keys.append(key)
                os.close(fd)
        return keys

    def forget(self, key: str) -> None:
        for fd, k in list(self._by_fd.items()):
            if k == key:
                del self._by_fd[fd]
                os.close(fd)

    def fds(self) -> list[int]:
        return list(self._by_fd)

    def thespian_watch(self) -> ThespianWatch | None:
        return ThespianWatch(self.fds()) if self._by_fd else None

    def close(self) -> None:
        for fd in self._by_fd:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._by_fd.clear()


# --- the adopting side ---------------------------------------------------------------------------

_ADOPT_DEADLINE = "adopt-deadline"


class AdoptingSupervisor:
    """Mixin (listed before ActorTypeDispatcher) for a supervisor that takes over the processes
    of a predecessor that died. Its records (`instance_id`, `address`, `state`, `pid`, `adopted`)
    go through `adopt`; the subclass says what to do when one is `adopted_running` (it had not
    announced itself yet), `adoption_lost` (gone, or never started) or `adopted_exited` later."""

    exits: ExitWatch
    adopting: set[str]

    def child(self, instance_id: str) -> Any:
        raise NotImplementedError

    def adopted_running(self, record: Any, msg: Adopted) -> None:
        raise NotImplementedError

    def adoption_lost(self, record: Any) -> None:
        raise NotImplementedError

    def adopted_exited(self, record: Any) -> None:
        raise NotImplementedError

    def receiveMessage(self, msg: Any, sender: Any) -> ThespianWatch | None:
        if isinstance(msg, WatchMessage):
            for instance_id in self.exits.exited(msg.ready):
                record = self.child(instance_id)
                if record is not None:
                    self.adopted_exited(record)
        else:
            super().receiveMessage(msg, sender)  # type: ignore[misc]
        # Thespian watches only the fds returned by the latest receiveMessage: return it always.
        return self.exits.thespian_watch()

    def adopt(self, record: Any) -> None:
        """Ask the process of `record` to report to us; `adoption_deadline` bounds the wait."""
        self.adopting.add(record.instance_id)
        self.send(record.address, Adopt(instance_id=record.instance_id))  # type: ignore[attr-defined]

    def adoption_deadline(self) -> None:
        if self.adopting:
            self.wakeupAfter(dt.timedelta(seconds=ADOPT_TIMEOUT_S), payload=_ADOPT_DEADLINE)  # type: ignore[attr-defined]

    def receiveMsg_Adopted(self, msg: Adopted, sender: Any) -> None:
        record = self.child(msg.instance_id)
        if record is None or msg.instance_id not in self.adopting:
            self.send(sender, ActorExitRequest())  # type: ignore[attr-defined]  # too late: replaced
            return
        self.adopting.discard(msg.instance_id)
        record.adopted, record.pid = True, msg.pid
        if not msg.running or not self.exits.watch(msg.pid, msg.instance_id):
            self.send(sender, ActorExitRequest())  # type: ignore[attr-defined]
            self.adoption_lost(record)
        elif record.state in ("stopping", "cancelled"):  # the predecessor had asked it to stop: ask again
            self.send(sender, ActorExitRequest())  # type: ignore[attr-defined]
        elif record.state == "starting":  # it reported its start to the predecessor
            self.adopted_running(record, msg)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if msg.payload != _ADOPT_DEADLINE:
            return
        for instance_id in sorted(self.adopting):
            self.adopting.discard(instance_id)
            record = self.child(instance_id)
            if record is not None:
                self.adoption_lost(record)


# --- the adopted side ----------------------------------------------------------------------------

ORPHANED = "orphaned"  # the inbox item an Adoptable hands its actor thread when nobody adopted it


class Adoptable:
    """Mixin for a process a supervisor starts and a successor may adopt (ActorModule,
    ProviderModule; both NatsBridgeActors). Once it runs it calls `outlive_parent(loop)`: from
    then on its parent's death no longer kills it (PDEATHSIG is cleared), the launcher's death
    still does, at once, and if no successor adopts it within ORPHAN_GRACE_S it stops itself:
    its `on_inbox_item` receives ORPHANED and calls `stop_orphan()`."""

    adopted_by: Any = None

    def adoption_reply(self, instance_id: str) -> Adopted:
        raise NotImplementedError

    def receiveMsg_Adopt(self, msg: Adopt, sender: Any) -> None:
        self.adopted_by = sender
        self.send(sender, self.adoption_reply(msg.instance_id))  # type: ignore[attr-defined]

    def outlive_parent(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call on the actor thread once started. Watches run on `loop` (pidfds as readers)."""
        watched: list[tuple[int, Callable[[], None]]] = [(os.getppid(), lambda: self._parent_gone(loop))]
        if launcher_pid():
            watched.append((launcher_pid(), _launcher_gone))
        for pid, gone in watched:
            fd = pidfd_open(pid)
            if fd is None:
                loop.call_soon_threadsafe(gone)
            else:
                loop.call_soon_threadsafe(_on_exit, loop, fd, gone)
        set_pdeathsig(0)  # the pidfd watches are armed: the parent's death is ours to handle now

    def _parent_gone(self, loop: asyncio.AbstractEventLoop) -> None:
        log.warning("supervisor died; waiting to be adopted", extra={"grace_s": ORPHAN_GRACE_S})
        loop.call_later(ORPHAN_GRACE_S, self._orphan_check)

    def _orphan_check(self) -> None:
        if self.adopted_by is None:
            self.to_actor(ORPHANED)  # type: ignore[attr-defined]

    def stop_orphan(self) -> None:
        log.warning("no supervisor adopted this process; stopping")
        self.send(self.myAddress, ActorExitRequest())  # type: ignore[attr-defined]


def _on_exit(loop: asyncio.AbstractEventLoop, fd: int, gone: Callable[[], None]) -> None:
    def ready() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        gone()

    loop.add_reader(fd, ready)


def _launcher_gone() -> None:
    # The launcher was killed: the host is gone, and so must everything it started be.
    os._exit(1)


# --- the test-only crash switch ------------------------------------------------------------------


def crash_if_asked(config: HostConfig, role: str, restart: int) -> None:
    """HOSTCORE_TEST_CRASH_ROLE=<role>: that role dies at every restart (never at the first
    start), so tests can drive a crash loop past the restart intensity."""
    if restart and config.test_crash_role == role:
        log.error("test switch: role crashing at restart", extra={"role": role})
        os._exit(_CRASH_EXIT_CODE)
