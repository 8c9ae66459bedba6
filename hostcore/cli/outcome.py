"""Waiting for what a command caused, as wash 0.x does: subscribe to the lattice's events before
the request goes out, then wait for the events that say it worked or why it did not.

Each `Expect…` judges one event at a time (`feed`) and says how far it got (`progress`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from hostcore.cli.session import CliError
from hostcore.wire import subjects

__all__ = [
    "EventStream", "Expectation", "ExpectActorStarts", "ExpectActorStops", "ExpectHostStopped",
    "ExpectProviderStart", "ExpectProviderStop", "ExpectUpdates", "Failed", "await_outcome", "event_type",
]

_PREFIX = "com.wasmcloud.lattice."


def event_type(event: dict[str, Any]) -> str:
    return str(event.get("type", "")).removeprefix(_PREFIX)


class Failed(CliError):
    """The host reported that the command failed (its error text is the message)."""


class Expectation(Protocol):
    def feed(self, kind: str, source: str, data: dict[str, Any]) -> bool:
        """Take one event; True once the outcome is complete. Raises Failed."""

    def progress(self) -> str: ...


class EventStream:
    """wasmbus.evt.{lattice}, subscribed on entering (before the command is sent)."""

    def __init__(self, nc: NatsClient, lattice: str) -> None:
        self.nc, self.subject = nc, subjects.lattice_events(lattice)
        self.sub: Subscription | None = None

    async def __aenter__(self) -> EventStream:
        self.sub = await self.nc.subscribe(self.subject)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()

    async def next(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event, None if none came within `timeout_s`; unparsable ones are skipped."""
        assert self.sub is not None
        try:
            msg = await self.sub.next_msg(timeout=timeout_s)
        except (asyncio.TimeoutError, TimeoutError, nats.errors.TimeoutError):
            return None
        except nats.errors.Error as err:
            raise CliError(f"lost the NATS connection while waiting ({err})") from None
        try:
            event = json.loads(msg.data)
        except ValueError:
            return {}
        return event if isinstance(event, dict) else {}


async def await_outcome(events: EventStream, expect: Expectation, *, timeout_s: float, what: str) -> None:
    """Feed events to `expect` until it is complete. Shows a progress line on a terminal.

    Raises Failed (the host's error) or CliError (timed out, naming how far it got)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    tty = sys.stderr.isatty()
    try:
        while (left := deadline - loop.time()) > 0:
            if tty:
                print(f"\r{what}: {expect.progress()} ", end="", file=sys.stderr, flush=True)
            event = await events.next(min(left, 0.5))
            if not event:
                continue
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            if expect.feed(event_type(event), str(event.get("source", "")), data):
                return
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    raise CliError(f"timed out after {timeout_s:g} s: {what}: {expect.progress()} "
                   "(`hostcore ctl watch` shows the lattice's events; --wait-timeout waits longer)")


@dataclass
class ExpectActorStarts:
    """`count` actor_started of one ref (or key) on one host; actor_start_failed for it fails.

    The key is learned from refmap_set / actor_started when only the ref is known: an
    instantiation failure names the key, not the ref (protocol.md §3.3)."""

    host_id: str
    ref: str
    count: int
    key: str = ""
    started: int = 0

    def feed(self, kind: str, source: str, data: dict[str, Any]) -> bool:
        if source != self.host_id:
            return False
        if kind == "refmap_set" and self.ref and data.get("oci_url") == self.ref:
            self.key = self.key or str(data.get("public_key", ""))
        elif kind == "actor_started" and (data.get("public_key") == self.key or
                                          (self.ref and data.get("image_ref") == self.ref)):
            self.key = self.key or str(data.get("public_key", ""))
            self.started += 1
        elif kind == "actor_start_failed" and data.get("actor_ref") in {self.ref, self.key} - {""}:
            raise Failed(f"the host could not start {self.ref or self.key}: {data.get('error', '')}")
        return self.started >= self.count

    def progress(self) -> str:
        return f"{self.started}/{self.count} started"


@dataclass
class ExpectActorStops:
    host_id: str
    key: str
    count: int
    stopped: int = 0

    def feed(self, kind: str, source: str, data: dict[str, Any]) -> bool:
        if source == self.host_id and kind == "actor_stopped" and data.get("public_key") == self.key:
            self.stopped += 1
        return self.stopped >= self.count

    def progress(self) -> str:
        return f"{self.stopped}/{self.count} stopped"


@dataclass
class ExpectProviderStart:
    host_id: str
    ref: str
    link_name: str
    key: str = ""

    def feed(self, kind: str, source: str, data: dict[str, Any]) -> bool:
        if source != self.host_id or data.get("link_name") != self.link_name:
            return False
        if kind == "provider_started" and self.ref in (data.get("image_ref"), data.get("public_key")):
            self.key = str(data.get("public_key", ""))
            return True
        if kind == "provider_start_failed" and data.get("provider_ref") == self.ref:
            raise Failed(f"the host could not start provider {self.ref}: {data.get('error', '')}")
        return False

    def progress(self) -> str:
        return "starting"


@dataclass
class ExpectProviderStop:
    host_id: str
    key: str
    link_name: str

    def feed(self, kind: str, source: str, data: dict[str, Any]) -> bool:
        return (source == self.host_id and kind == "provider_stopped" and data.get("public_key") == self.key
                and data.get("link_name") == self.link_name)

    def progress(self) -> str:
        return "stopping"


@dataclass
class ExpectHostStopped:
    host_id: str

    def feed(self, kind: str, source: str, data: dict[str, Any]) -> bool:
        return source == self.host_id and kind == "host_stopped"

    def progress(self) -> str:
        return "stopping"


@dataclass
class ExpectUpdates:
    """One actor_updated or actor_update_failed per running instance of `key`."""

    host_id: str
    key: str
    count: int
    updated: int = 0
    failures: list[str] = field(default_factory=list)

    def feed(self, kind: str, source: str, data: dict[str, Any]) -> bool:
        if source != self.host_id or data.get("public_key") != self.key:
            return False
        if kind == "actor_updated":
            self.updated += 1
        elif kind == "actor_update_failed":
            self.failures.append(f"{data.get('instance_id', '?')}: {data.get('reason', '')}")
        if self.updated + len(self.failures) < self.count:
            return False
        if self.failures:
            raise Failed(f"{len(self.failures)} of {self.count} instances kept the old module: "
                         + "; ".join(self.failures))
        return True

    def progress(self) -> str:
        return f"{self.updated + len(self.failures)}/{self.count} updated"
