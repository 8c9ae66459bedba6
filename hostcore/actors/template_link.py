"""ActorSupervisor's end of its InstanceTemplate: the template is a process of its own, started by
exec, and the two talk over a socket pair in the channel's frames (hostcore/actors/channel.py).

Why not a Thespian child, forked from the supervisor: every instance is forked from the template,
and a fork costs in proportion to what the parent holds and how deep it sits in a chain of forks
(each mapping is linked into every ancestor's reverse-map trees). A template forked from the tree
held all of hostcore, Thespian and the supervisor's heap, five forks below the launcher; one
started by exec holds what an instance needs and nothing else. Measured (100 echo instances forked
from each, the same instance code): the parent's CPU per fork 5.0-5.8 → 2.7-3.4 ms, each
instance's private memory 6.94-7.04 → 6.64-6.70 MB. A message on the pair also costs less than a
Thespian hop, and the supervisor-template hop is on the path of every crash's replacement.

The supervisor watches the socket and the template's pidfd from its Thespian loop (ThespianWatch):
the template's reports are dispatched as messages from `link`, and its death is `died`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from hostcore.actors.channel import FrameReader, frame
from hostcore.procutil import launcher_pid

__all__ = ["TEMPLATE_TITLE", "TemplateLink"]

log = logging.getLogger(__name__)

# How tools, tests and the host's reaper tell the template's process: by the start of its title.
TEMPLATE_TITLE = "InstanceTemplate "
# A message to the template waits this long for room in the pair's buffer (the template reads it
# between two forks, ~10 ms); a template that takes none for this long is hung, and is replaced.
_SEND_TIMEOUT_S = 10.0
_BUFFER_BYTES = 1 << 20  # ForkInstances and ToInstances for hundreds of instances fit at once
_READ_BYTES = 16 << 10  # a turn's worth of reports: a few dozen instances' starts or exits
# The template imports this very hostcore, from wherever this one came (an editable install, the
# working directory, PYTHONPATH): its directory goes first on sys.path unless it is there already.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
_MAIN = """
import sys
root = sys.argv.pop(1)
if root not in sys.path:
    sys.path.insert(0, root)
from hostcore.actors.template_main import main
main()
"""


class TemplateLink:
    """The template process: its pid and pidfd, and the socket to it."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid, self.pidfd, self.sock = pid, pidfd, sock
        self.reader = FrameReader()
        self.ready = False  # it said TemplateReady: its listener is bound, instances may report
        self.dead = False

    @classmethod
    def spawn(cls, first: Any) -> TemplateLink:
        """Start a template process and send it `first` (its InitTemplate)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER_BYTES)
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER_BYTES)
            os.set_inheritable(theirs.fileno(), True)
            reset = {s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)}
            # A session of its own (setsid), which the instances it forks share: where the kernel
            # groups tasks by session for scheduling (autogroup, when it is on and the host is not
            # in a CPU cgroup), instances starting by the dozen then compete with the tree's roles
            # as one group, not each as much as the ActorSupervisor. Measured during a 0 -> 500:
            # the ActorSupervisor's run-queue wait 1.29 -> 0.38 s; bench/scale.py's inventory p50
            # 28-40 -> 10-17 ms (bench/SCALE_PROFILE.md, eighth pass).
            pid = os.posix_spawn(sys.executable,
                                 [sys.executable, "-c", _MAIN, _SOURCE_ROOT, str(theirs.fileno()),
                                  str(os.getpid()), str(launcher_pid())],
                                 os.environ, setsigmask=(), setsigdef=reset, setsid=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        link = cls(pid, os.pidfd_open(pid), ours)
        ours.settimeout(_SEND_TIMEOUT_S)
        link.send(first)
        return link

    def fds(self) -> list[int]:
        """What the supervisor's loop watches for this template."""
        if self.dead:
            return []
        return [self.pidfd] if self.sock.fileno() < 0 else [self.sock.fileno(), self.pidfd]

    def send(self, message: Any) -> None:
        if self.dead or self.sock.fileno() < 0:
            return  # it is gone; its successor is sent what it needs
        try:
            self.sock.sendall(frame(message))
        except OSError as err:
            log.error("instance template not taking messages; replacing it", extra={"error": str(err)})
            self.kill()

    def receive(self, ready: list[int]) -> tuple[list[Any], bool]:
        """The messages the template sent, and whether it has died (reaped by now), after a
        WatchMessage that reported `ready`."""
        messages: list[Any] = []
        fd = self.sock.fileno()
        if fd >= 0 and fd in ready:
            messages = self._read()
        if self.pidfd in ready and not self.dead:
            if self.sock.fileno() >= 0:
                messages += self._read(everything=True)  # what it said last
            self.dead = True
            os.close(self.pidfd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.sock.close()
        return messages, self.dead

    def _read(self, *, everything: bool = False) -> list[Any]:
        """What has arrived. One read of at most _READ_BYTES, unless `everything`: what is left
        keeps the socket readable, so the supervisor's loop comes back for it after the other
        messages waiting there (an inventory must not wait behind a scale's worth of reports)."""
        self.sock.setblocking(False)
        messages: list[Any] = []
        try:
            while True:
                data = self.sock.recv(_READ_BYTES)
                if not data:  # it is ending: its pidfd says when it has
                    self.sock.close()
                    break
                messages += self.reader.feed(data)
                if not everything:
                    break
        except BlockingIOError:
            pass
        except OSError:
            self.sock.close()
        finally:
            if self.sock.fileno() >= 0:
                self.sock.settimeout(_SEND_TIMEOUT_S)
        return messages

    def kill(self) -> None:
        """End it now; its pidfd reports the death."""
        if not self.dead:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def close(self) -> None:
        """We are ending: it has been told to stop; it is reaped by the host's subreaper."""
        self.sock.close()
        if not self.dead:
            self.dead = True
            os.close(self.pidfd)
