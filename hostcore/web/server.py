"""DashboardServer: serves the dashboard app with uvicorn on a daemon thread with its own loop.

The host node's launcher creates it after the Thespian ActorSystem exists (the launcher must
create no thread before that) and closes it on the way out. A port already in use is logged
and the node runs on without a dashboard.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette

from hostcore.web.app import create_app
from hostcore.web.settings import DashboardSettings

__all__ = ["DashboardServer"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 5.0


class DashboardServer:
    """One uvicorn server for one dashboard app. `start()` and `close()` are called from the
    same (owning) thread; `close()` is idempotent and bounded. Usable as a context manager."""

    def __init__(self, settings: DashboardSettings, host: str = "127.0.0.1", port: int = 4000) -> None:
        self.settings = settings
        self.host = host
        self.port = port  # the bound port once started (useful with port 0)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._app: Starlette | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> bool:
        """Bind the port and serve on a daemon thread; True once the app's lifespan started.

        Returns False (with a warning logged) when the port is in use or the app could not start
        (NATS unreachable). Raises RuntimeError if called twice or after close().
        """
        if self._closed or self._thread is not None:
            raise RuntimeError("DashboardServer already started or closed")
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            message = ("dashboard port in use; running without the dashboard" if err.errno == errno.EADDRINUSE
                       else "dashboard address unavailable; running without the dashboard")
            log.warning(message, extra={"host": self.host, "port": self.port, "error": str(err)})
            return False
        sock.listen(128)
        sock.set_inheritable(False)
        self.port = sock.getsockname()[1]
        self._app = create_app(self.settings)
        config = uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=2, ws="none")
        self._server = server = uvicorn.Server(config)
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(server, sock, ready))
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name="hostcore-dashboard", daemon=True)
        self._thread.start()
        ready.wait(_START_TIMEOUT_S)
        if not server.started:
            log.warning("dashboard did not start; running without it", extra={"port": self.port})
            self.close()
            return False
        log.info("dashboard listening", extra={"url": self.url, "lattice": self.settings.lattice_prefix})
        return True

    @staticmethod
    async def _serve(server: uvicorn.Server, sock: socket.socket, ready: threading.Event) -> None:
        async def signal_started() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            ready.set()

        watcher = asyncio.create_task(signal_started())
        try:
            await server.serve(sockets=[sock])
        except SystemExit:  # uvicorn's way of saying the app's startup failed (logged by uvicorn)
            pass
        finally:
            watcher.cancel()

    def close(self) -> None:
        """Stop serving: end the live streams, let uvicorn shut down (lifespan closes NATS),
        and join the thread; after `_STOP_TIMEOUT_S` force it and log a warning. Idempotent."""
        if self._closed:
            return
        self._closed = True
        server, thread, loop = self._server, self._thread, self._loop
        if server is None or thread is None:
            return
        dashboard = getattr(self._app.state, "dashboard", None) if self._app is not None else None
        if loop is not None and dashboard is not None:
            try:  # live page streams never end by themselves; uvicorn would wait for them
                loop.call_soon_threadsafe(dashboard.watcher.close_streams)
            except RuntimeError:  # the loop closed in the meantime
                pass
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("dashboard did not stop in time; forcing it", extra={"port": self.port})
            server.force_exit = True
            thread.join(_STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
