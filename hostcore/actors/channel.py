"""The channel between the InstanceTemplate and the instance processes it forks.

An instance is a plain process, not a Thespian actor: a Thespian child costs ~9 ms of CPU and
~4.5 MB of private memory before its first message, and every child's sockets are rescanned by
its parent's loop. What an instance needs from the tree is small: to report that it runs (or
why not), to receive new links (LatticeSnapshot) and live updates (SwapModule), to be stopped
(SIGTERM) and to be seen dying (a pidfd). So each instance connects to a Unix socket its template
listens on and says `Hello`; frames are pickled messages behind a 4-byte length.

The socket's name is fixed per host (abstract namespace, nothing on disk), so that when the
template dies, the instances that ran under it find its successor there and say `Hello` again:
they are taken over, not restarted. Only processes of the host's own user may connect.

A halted instance says `Stopped` once it has drained and let go of everything, just before its
process ends: it is reported stopped then, not when the kernel has finished returning its memory
(a few milliseconds per process, which the exit leaves to idle CPU time).

A spare is an instance forked, built and connected ahead of time with a placeholder id: it says
`Hello` with `spare` set, waits for `Assign`, then subscribes and says `Hello` again as the
instance it became (on the same connection).
"""

from __future__ import annotations

import pickle
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Assign", "FrameReader", "Hello", "Stopped", "frame", "listen", "peer_uid", "rendezvous"]

_LENGTH = struct.Struct("!I")
_BIND_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Instance → template, first on every connection: it is running (`error` empty), or could
    not start. Said again to a successor template after the one it started under died."""

    instance_id: str
    pid: int
    api_version: int = 0
    error: str = ""
    spare: bool = False  # a spare, ready: `instance_id` is its placeholder until it is given one


@dataclass(frozen=True, slots=True)
class Assign:
    """Template → spare: you are instance `instance_id` now; subscribe and say Hello as it."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """Instance → template, last: halted, drained (its in-flight calls answered), metrics flushed,
    NATS closed. Nothing of it serves any more; only its process's exit is left."""

    instance_id: str


def rendezvous(host_id: str) -> str:
    """The template's socket name for this host (Linux abstract namespace)."""
    return f"\0hostcore-instances-{host_id}"


def listen(name: str) -> socket.socket:
    """The template's listening socket at `name`, non-blocking. A predecessor's name is free once
    its process is gone, which may take a moment: retried for up to _BIND_TIMEOUT_S."""
    deadline = time.monotonic() + _BIND_TIMEOUT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(name)
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        return sock


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end (SO_PEERCRED: pid, uid, gid)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class FrameReader:
    """Bytes as they arrive → whole messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            messages.append(pickle.loads(self._buffer[_LENGTH.size:end]))
            del self._buffer[:end]
        return messages
