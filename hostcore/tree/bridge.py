"""NATS inside a Thespian actor (architecture.md, "Bridge pattern").

nats-py runs on an asyncio loop in a daemon thread of the actor's process. Items for the actor
thread go through a deque plus a wake pipe that Thespian's own select loop watches
(`ThespianWatch`); the actor thread reaches NATS only through `loop.call_soon_threadsafe` /
`run_coroutine_threadsafe`. Only actors that never create children may use it: a process that
forks must hold no threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import uvloop
from nats.aio.client import Client as NatsClient
from thespian.actors import ActorTypeDispatcher, ThespianWatch, WatchMessage

from hostcore.natsconn import NatsEndpoint, flush_in_order
from hostcore.telemetry.process import count_reconnect

log = logging.getLogger(__name__)

__all__ = ["InboxActor", "NatsBridgeActor", "connect_nats", "drain_nats"]

_CLOSE_TIMEOUT_S = 2.0


async def _on_error(err: Exception) -> None:
    # nats-py reports every failed reconnect attempt; one line each, no traceback.
    log.debug("nats error", extra={"error": str(err) or type(err).__name__})


def _on_disconnect(name: str, client: Callable[[], NatsClient | None]) -> Callable[[], Awaitable[None]]:
    async def cb() -> None:
        nc = client()
        if nc is not None and (nc.is_closed or nc.is_draining):  # our own nats_stop: a normal stop
            log.debug("NATS connection closed", extra={"connection": name})
            return
        log.warning("NATS connection lost; reconnecting", extra={"connection": name})
    return cb


def _on_reconnect(name: str) -> Callable[[], Awaitable[None]]:
    async def cb() -> None:
        log.warning("NATS connection restored", extra={"connection": name})
        count_reconnect(name)
    return cb


async def connect_nats(url: str | NatsEndpoint, *, name: str, timeout_s: float = 10.0) -> NatsClient:
    """A connection that reconnects forever once made; raises if the first connect fails."""
    nc: NatsClient | None = None
    nc = await nats.connect(
        **NatsEndpoint.kwargs_for(url, _on_error), name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        allow_reconnect=True, connect_timeout=min(timeout_s, 5.0),
        disconnected_cb=_on_disconnect(name, lambda: nc), reconnected_cb=_on_reconnect(name),
    )
    return nc


async def drain_nats(nc: NatsClient) -> None:
    """Drain (in-flight callbacks finish), bounded by a short timeout: a stuck drain must not
    hang a process that is stopping."""
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), _CLOSE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 -- shutting down
        with contextlib.suppress(Exception):
            await nc.close()


class InboxActor(ActorTypeDispatcher):  # type: ignore[misc]
    """An actor that other threads of its process can hand items to (`to_actor`); they arrive in
    `on_inbox_item` on the actor thread. Call `inbox_start` once, in the actor's own process."""

    _wake_r: int | None = None

    def inbox_start(self) -> None:
        self._inbox: collections.deque[Any] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def to_actor(self, item: Any) -> None:
        """Any thread → actor thread. Thread-safe."""
        self._inbox.append(item)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def on_inbox_item(self, item: Any) -> None:
        raise NotImplementedError

    def receiveMessage(self, msg: Any, sender: Any) -> ThespianWatch | None:
        if isinstance(msg, WatchMessage) and self._wake_r is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 65536)
            while self._inbox:
                item = self._inbox.popleft()
                try:
                    self.on_inbox_item(item)
                except Exception:  # role boundary: log once, keep serving
                    log.exception("failed to handle an inbox item", extra={"item": type(item).__name__})
        else:
            super().receiveMessage(msg, sender)
        # Thespian watches only the fds returned by the *latest* receiveMessage: return it always.
        return ThespianWatch([self._wake_r]) if self._wake_r is not None else None


class NatsBridgeActor(InboxActor):
    """Base for actors that talk to NATS. Subclasses call `nats_start` once, in their own process,
    and implement `on_inbox_item(item)` for items the loop thread hands over with `to_actor`."""

    def nats_start(
        self,
        url: str | NatsEndpoint,
        setup: Callable[[NatsClient], Awaitable[None]],
        *,
        name: str,
        timeout_s: float = 10.0,
    ) -> None:
        """Connect (reconnecting forever afterwards) and run `setup` (subscriptions) on the loop.

        Raises whatever the connection raises after `timeout_s`. Owns the loop thread and the
        connection from here on; `nats_stop` ends both.
        """
        self.inbox_start()
        self._publishing: set[asyncio.Task[None]] = set()  # publish() tasks, until handed over
        # uvloop: the RPC hot path runs on this loop; its socket I/O and scheduling cost less CPU.
        self.loop = uvloop.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="nats-io")
        self._loop_thread.start()

        async def connect() -> None:
            self.nc = await connect_nats(url, name=name, timeout_s=timeout_s)
            await setup(self.nc)
            await flush_in_order(self.nc)

        asyncio.run_coroutine_threadsafe(connect(), self.loop).result(timeout_s)

    def nats_stop(self) -> None:
        """Drain the connection and stop the loop thread. Idempotent; bounded by a short timeout."""
        loop = getattr(self, "loop", None)
        if loop is None or not loop.is_running():
            return

        nc = getattr(self, "nc", None)
        if nc is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(drain_nats(nc), loop).result(_CLOSE_TIMEOUT_S + 1)
        loop.call_soon_threadsafe(loop.stop)
        self._loop_thread.join(_CLOSE_TIMEOUT_S)

    def publish(self, subject: str, data: bytes) -> None:
        """Actor thread → NATS (fire and forget). Thread-safe."""
        self.loop.call_soon_threadsafe(self._publish_soon, subject, data)

    def _publish_soon(self, subject: str, data: bytes) -> None:
        task = self.loop.create_task(self.nc.publish(subject, data))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def published(self) -> None:
        """On the loop: returns once every `publish` made before has been handed to the client."""
        pending = set(self._publishing)
        if pending:
            await asyncio.wait(pending)
