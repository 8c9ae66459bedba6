"""LatticeWatcher: keeps the dashboard's `LatticeModel` current and tells the pages when it changed.

It subscribes to `wasmbus.evt.{lattice}` before asking anything (so nothing falls between a
reply and the events after it), discovers hosts with `ping.hosts`, reads inventories of new or
disagreeing hosts and the link list, and drops hosts that went quiet. Actions use `expect` to
await the event that tells how a request they sent turned out.

Owned by the app's lifespan: `async with LatticeWatcher(...)` starts it; leaving the block
unsubscribes and cancels and awaits every task it started. Runs on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Self

import msgpack
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hostcore.control.client import ControlClient, ControlTimeout
from hostcore.errors import ControlReplyInvalid, ControlRequestRefused
from hostcore.web.model import LatticeModel, LinkView
from hostcore.web.settings import DashboardSettings
from hostcore.wire import subjects

__all__ = ["EventPredicate", "LatticeWatcher"]

log = logging.getLogger(__name__)

EventPredicate = Callable[[dict[str, Any]], bool]

_CLOSE_TIMEOUT_S = 2.0
_HEALTH_REQUEST = msgpack.packb({"placeholder": True})  # what hosts send (protocol.md §4.11)


class LatticeWatcher:
    """Feeds `model` from the lattice; `wait_changed` wakes the live page streams."""

    def __init__(self, nc: NatsClient, client: ControlClient, model: LatticeModel,
                 settings: DashboardSettings) -> None:
        self.nc, self.client, self.model, self.settings = nc, client, model, settings
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refreshing: set[str] = set()
        self._again: set[str] = set()
        self._links_task: asyncio.Task[None] | None = None
        self._probing: set[tuple[str, str, str]] = set()
        self._waiters: list[tuple[EventPredicate, asyncio.Future[dict[str, Any]]]] = []
        self._changed = asyncio.Event()
        self.closing = False

    async def __aenter__(self) -> Self:
        self._sub = await self.nc.subscribe(subjects.lattice_events(self.settings.lattice_prefix), cb=self._on_event)
        await self.nc.flush(timeout=math.ceil(self.settings.timeout_s))
        self._spawn(self._discover())
        self._spawn(self._expire_loop())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close_streams()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await asyncio.gather(*tasks, return_exceptions=True)
                if self._sub is not None and self.nc.is_connected:
                    await self._sub.unsubscribe()
        except TimeoutError:
            log.warning("dashboard watcher did not stop in time", extra={"tasks": len(self._tasks)})

    # --- change notification ---------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def close_streams(self) -> None:
        """End every live page stream (called before shutdown so uvicorn need not wait for them)."""
        self.closing = True
        self._notify()

    async def wait_changed(self, version: int, timeout_s: float) -> bool:
        """Wait until the model's version differs from `version` (True) or `timeout_s` passes
        or the dashboard is closing (False)."""
        changed = self._changed
        if self.model.version != version:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await changed.wait()
        return self.model.version != version and not self.closing

    # --- awaiting outcomes -----------------------------------------------------------------------

    @contextlib.contextmanager
    def expect(self, predicate: EventPredicate) -> Iterator[asyncio.Future[dict[str, Any]]]:
        """A future for the first event (whole CloudEvent) matching `predicate` from now on.
        Enter it before sending the request whose outcome the event reports."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            yield fut
        finally:
            self._waiters.remove(entry)
            fut.cancel()

    # --- inputs ----------------------------------------------------------------------------------

    def on_connection(self, connected: bool) -> None:
        """The dashboard's NATS connection went down or came back (from its ConnectionMonitor).
        Back up, everything is read again: events sent meanwhile were missed."""
        self.model.set_connected(connected)
        if connected and not self.closing:
            for host_id in list(self.model.hosts):
                self.refresh_host(host_id)
            self._spawn(self._discover())
        self._notify()

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = json.loads(msg.data)
        except (ValueError, UnicodeDecodeError):
            log.debug("ignoring an event that is not JSON", extra={"bytes": len(msg.data)})
            return
        if not isinstance(event, dict):
            return
        self.model.apply_event(event)
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate(event):
                fut.set_result(event)
        self._after_change()

    def _after_change(self) -> None:
        stale = self.model.take_stale()
        for host_id in stale:
            self.refresh_host(host_id)
        if stale:
            self.refresh_links()
        self._notify()

    async def _discover(self) -> None:
        """Find the hosts that are already running (each ping also makes them heartbeat)."""
        try:
            replies = await self.client.ping_hosts(wait_s=self.settings.discovery_wait_s)
        except (ControlTimeout, ValueError) as err:  # ValueError: a reply that is not JSON
            log.warning("host discovery by ping failed", extra={"error": str(err)})
            replies = []
        except nats.errors.Error as err:
            log.warning("host discovery failed", extra={"error": str(err)})
            return
        for reply in replies:
            self.model.apply_ping(reply)
        self._after_change()
        self.refresh_links()

    def refresh_host(self, host_id: str) -> None:
        """Re-read `host_id`'s inventory soon; one request per host in flight."""
        if host_id in self._refreshing:
            self._again.add(host_id)
            return
        self._refreshing.add(host_id)
        self._spawn(self._refresh_host(host_id))

    async def _refresh_host(self, host_id: str) -> None:
        try:
            while True:
                self._again.discard(host_id)
                since = self.model.seq
                try:
                    inventory = await self.client.get_inventory(host_id)
                except ControlTimeout:
                    log.debug("no inventory from host", extra={"host_id": host_id})
                    return
                except nats.errors.Error as err:
                    log.warning("inventory request failed", extra={"host_id": host_id, "error": str(err)})
                    return
                self.model.apply_inventory(host_id, inventory, since)
                self._probe_health(host_id)
                self._notify()
                if host_id not in self._again:
                    return
        finally:
            self._refreshing.discard(host_id)

    def _probe_health(self, host_id: str) -> None:
        """Ask each of the host's providers of unknown health directly, as its host does, so one
        started before the dashboard shows its health now rather than at its next change."""
        for provider_id, link_name in self.model.unknown_health(host_id):
            key = (host_id, provider_id, link_name)
            if key not in self._probing:
                self._probing.add(key)
                self._spawn(self._probe(key))

    async def _probe(self, key: tuple[str, str, str]) -> None:
        host_id, provider_id, link_name = key
        subject = subjects.provider_health(subjects.provider_rpc(self.settings.lattice_prefix, provider_id, link_name))
        try:
            await self.nc.request(subject, _HEALTH_REQUEST, timeout=self.settings.timeout_s)
        except (nats.errors.Error, TimeoutError) as err:
            # Starting, or gone: its host's next health event tells (a guess here could be wrong).
            log.debug("no answer to a provider health probe", extra={"provider_key": provider_id, "error": str(err)})
            return
        finally:
            self._probing.discard(key)
        self.model.apply_probe(host_id, provider_id, link_name, True)  # any reply is healthy (§4.11)
        self._notify()

    def refresh_links(self) -> None:
        """Re-read the claims (for names) and link definitions soon (one request in flight)."""
        if self._links_task is None or self._links_task.done():
            self._links_task = self._spawn(self._refresh_links())

    async def _refresh_links(self) -> None:
        try:
            claims = await self.client.get_claims()
        except (ControlTimeout, ControlRequestRefused, ControlReplyInvalid, nats.errors.Error) as err:  # a nicety
            log.debug("no claims from the lattice", extra={"error": str(err)})
        else:
            self.model.apply_claims(claims)
        since = self.model.seq
        try:
            links = [LinkView.from_obj(ld.to_map()) for ld in await self.client.get_links()]
        except (ControlTimeout, ControlRequestRefused, ControlReplyInvalid) as err:
            log.debug("no link definitions from the lattice", extra={"error": str(err)})
            return
        except nats.errors.Error as err:
            log.warning("link definitions request failed", extra={"error": str(err)})
            return
        self.model.apply_links(links, since)
        self._notify()

    async def _expire_loop(self) -> None:
        interval = min(1.0, self.settings.host_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            for host_id in self.model.expire():
                log.info("host dropped: no heartbeat", extra={"host_id": host_id,
                                                              "timeout_s": self.settings.host_timeout_s})
                self._notify()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("dashboard background task failed", exc_info=err)
