"""ConnectionMonitor: the dashboard's NATS connection state from nats-py's callbacks.

nats-py calls `error_cb` on every failed reconnect attempt (about once a second while the
server is down); logging each would flood the host log. The monitor logs one line per state
change instead: the outage (with the first error's reason), then the recovery (with how long it
lasted and how many errors it swallowed). A listener hears each change (the watcher, which feeds
the page's `live` pill and re-reads the lattice after an outage). An injectable clock keeps it
testable without a server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import nats.errors

__all__ = ["ConnectionListener", "ConnectionMonitor"]

log = logging.getLogger("hostcore.web.app")

ConnectionListener = Callable[[bool], None]

# Errors that mean the connection itself broke (nats-py disconnects and reconnects after them).
_CONNECTION_ERRORS = (nats.errors.UnexpectedEOF, nats.errors.StaleConnectionError, nats.errors.ConnectionClosedError,
                      OSError, asyncio.TimeoutError)


class ConnectionMonitor:
    """Pass its `on_error` / `on_disconnect` / `on_reconnect` to `nats.connect`. Runs on the
    connection's event loop; not thread-safe."""

    def __init__(self, nats_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.nats_url = nats_url
        self.clock = clock
        self.connected = True
        self.closing = False  # set before a deliberate close: its disconnect is not an outage
        self.listener: ConnectionListener | None = None
        self._down_since = 0.0
        self._suppressed = 0
        self._last_error = ""
        self._pending_reason = ""

    async def on_error(self, err: Exception) -> None:
        reason = str(err) or type(err).__name__
        if not self.connected:
            self._suppressed += 1
            log.debug("dashboard NATS reconnect attempt failed", extra={"nats_url": self.nats_url, "error": reason})
        elif isinstance(err, _CONNECTION_ERRORS):  # the disconnect that follows logs it
            self._pending_reason = reason
            log.debug("dashboard NATS connection error", extra={"nats_url": self.nats_url, "error": reason})
        elif reason != self._last_error:  # any other error of a live connection: once per text
            self._last_error = reason
            log.warning("dashboard NATS connection error", extra={"nats_url": self.nats_url, "error": reason})
        else:
            self._suppressed += 1

    async def on_disconnect(self) -> None:
        if self.closing or not self.connected:
            return
        self.connected = False
        self._down_since = self.clock()
        log.warning("dashboard NATS connection lost; retrying every second (further errors not logged)",
                    extra={"nats_url": self.nats_url, "error": self._pending_reason or "disconnected"})
        self._notify(False)

    async def on_reconnect(self) -> None:
        if self.connected:
            return
        self.connected = True
        log.info("dashboard NATS connection restored",
                 extra={"nats_url": self.nats_url, "down_s": round(self.clock() - self._down_since, 1),
                        "errors_not_logged": self._suppressed})
        self._suppressed, self._last_error, self._pending_reason = 0, "", ""
        self._notify(True)

    def _notify(self, connected: bool) -> None:
        if self.listener is not None:
            self.listener(connected)
