"""ControlClient: the control interface from the outside (protocol.md §2), as `wash ctl` and the
wasmcloud_host dashboard speak it. Used by the CLI, the dashboard and the tests.

The caller owns the NATS connection; every request has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from hostcore.errors import HostcoreError
from hostcore.native.chunking import ChunkStore, chunk_invocation, dechunk_response
from hostcore.native.invocation import InvocationResponse, WasmCloudEntity, new_invocation
from hostcore.native.nkeys import KeyPair
from hostcore.telemetry.tracing import trace_headers
from hostcore.wire import subjects
from hostcore.wire.chunking_rules import client_call_timeout
from hostcore.wire.control import (
    Ack,
    AuctionActorRequest,
    AuctionProviderRequest,
    LaunchProviderRequest,
    StopProviderRequest,
    LaunchActorRequest,
    ScaleRequest,
    StopActorRequest,
    StopHostRequest,
    UpdateActorRequest,
    parse_claims_reply,
    parse_links_reply,
)
from hostcore.wire.linkdefs import LinkDefinition, LinkDeleteRequest

log = logging.getLogger(__name__)

__all__ = ["ControlClient", "ControlTimeout"]


class ControlTimeout(HostcoreError, TimeoutError):
    wire = "No reply to the control request in time"


class ControlClient:
    """Control-interface requests for one lattice over a connection the caller owns.

    A command returns its accepted Ack or raises ControlRequestRefused (the host's text in
    `error`); every request raises ControlTimeout when no host answers in time."""

    def __init__(self, nc: NatsClient, *, lattice_prefix: str = "default",
                 ctl_topic_prefix: str = subjects.DEFAULT_CTL_TOPIC_PREFIX, timeout_s: float = 2.0) -> None:
        self.nc = nc
        self.lattice_prefix = lattice_prefix
        self.prefix = subjects.prefix(ctl_topic_prefix, lattice_prefix)
        self.timeout_s = timeout_s

    async def _request(self, subject: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        try:
            # protocol.md §1.2: the caller's active span (if any) travels as `traceparent`.
            msg = await self.nc.request(subject, payload, timeout=timeout_s or self.timeout_s, headers=trace_headers())
        except (NatsTimeout, NoRespondersError, asyncio.TimeoutError):
            raise ControlTimeout(f"No reply on {subject} within {timeout_s or self.timeout_s:g} s") from None
        return bytes(msg.data)

    async def _json(self, subject: str, payload: bytes = b"") -> Any:
        return json.loads(await self._request(subject, payload))

    async def _ack(self, subject: str, payload: bytes, timeout_s: float | None = None) -> Ack:
        """Send a command; its accepted Ack, or ControlRequestRefused with the host's text."""
        return Ack.from_wire(await self._request(subject, payload, timeout_s)).raise_if_refused()

    async def ping_hosts(self, wait_s: float = 1.0) -> list[dict[str, Any]]:
        """Every host's ping reply, collected for `wait_s` (scatter/gather, like wash)."""
        return await self._gather(subjects.ping_hosts(self.prefix), b"", wait_s)

    async def auction_actor(self, actor_ref: str, constraints: dict[str, str] | None = None,
                            wait_s: float = 1.0) -> list[dict[str, Any]]:
        """Bids of the hosts whose labels satisfy `constraints` (protocol.md §2.4)."""
        req = AuctionActorRequest(actor_ref=actor_ref, constraints=constraints or {})
        return await self._gather(subjects.auction(self.prefix, "actor"), req.to_wire(), wait_s)

    async def _gather(self, subject: str, payload: bytes, wait_s: float) -> list[dict[str, Any]]:
        inbox = self.nc.new_inbox()
        replies: list[dict[str, Any]] = []
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(subject, payload, reply=inbox, headers=trace_headers())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except (NatsTimeout, asyncio.TimeoutError):
                    break
                if not msg.data:  # the server's "no responders" status, not a reply
                    continue
                replies.append(json.loads(msg.data))
        finally:
            await sub.unsubscribe()
        return replies

    async def get_inventory(self, host_id: str) -> dict[str, Any]:
        return dict(await self._json(subjects.inventory(self.prefix, host_id)))

    async def get_claims(self) -> list[dict[str, Any]]:
        """The lattice's claims records. Raises ControlRequestRefused / ControlReplyInvalid."""
        subject = subjects.get_claims(self.prefix)
        return parse_claims_reply(await self._request(subject, b""), subject)

    async def get_links(self) -> list[LinkDefinition]:
        """The lattice's link definitions. Raises ControlRequestRefused / ControlReplyInvalid."""
        subject = subjects.get_links(self.prefix)
        return parse_links_reply(await self._request(subject, b""), subject)

    async def put_link(self, link: LinkDefinition) -> Ack:
        return await self._ack(subjects.linkdefs(self.prefix, "put"), link.to_json())

    async def del_link(self, actor_id: str, contract_id: str, link_name: str = "default") -> Ack:
        req = LinkDeleteRequest(actor_id=actor_id, contract_id=contract_id, link_name=link_name)
        return await self._ack(subjects.linkdefs(self.prefix, "del"), req.to_json())

    async def scale_actor(self, host_id: str, actor_id: str, actor_ref: str, count: int) -> Ack:
        req = ScaleRequest(actor_id=actor_id, actor_ref=actor_ref, count=count, host_id=host_id)
        return await self._ack(subjects.host_command(self.prefix, host_id, "scale"), req.to_wire())

    async def launch_actor(self, host_id: str, actor_ref: str, count: int = 1,
                           annotations: dict[str, str] | None = None) -> Ack:
        req = LaunchActorRequest(actor_ref=actor_ref, count=count, annotations=annotations or {}, host_id=host_id)
        return await self._ack(subjects.host_command(self.prefix, host_id, "la"), req.to_wire())

    async def stop_actor(self, host_id: str, actor_id: str, count: int = 0,
                         annotations: dict[str, str] | None = None) -> Ack:
        req = StopActorRequest(actor_ref=actor_id, count=count, annotations=annotations or {}, host_id=host_id)
        return await self._ack(subjects.host_command(self.prefix, host_id, "sa"), req.to_wire(),
                               timeout_s=max(self.timeout_s, 10.0))

    async def update_actor(self, host_id: str, actor_id: str, new_actor_ref: str) -> Ack:
        """Live update (answered once every instance swapped or refused; fetches may take a while)."""
        req = UpdateActorRequest(actor_id=actor_id, new_actor_ref=new_actor_ref, host_id=host_id)
        return await self._ack(subjects.host_command(self.prefix, host_id, "upd"), req.to_wire(),
                               timeout_s=max(self.timeout_s, 30.0))

    async def launch_provider(self, host_id: str, provider_ref: str, link_name: str = "default",
                              configuration: str = "", annotations: dict[str, str] | None = None) -> Ack:
        req = LaunchProviderRequest(provider_ref=provider_ref, link_name=link_name, configuration=configuration,
                                    annotations=annotations or {}, host_id=host_id)
        return await self._ack(subjects.host_command(self.prefix, host_id, "lp"), req.to_wire())

    async def stop_provider(self, host_id: str, provider_id: str, link_name: str = "default",
                            contract_id: str = "") -> Ack:
        req = StopProviderRequest(provider_ref=provider_id, link_name=link_name, contract_id=contract_id,
                                  host_id=host_id)
        return await self._ack(subjects.host_command(self.prefix, host_id, "sp"), req.to_wire(),
                               timeout_s=max(self.timeout_s, 10.0))

    async def auction_provider(self, provider_ref: str, link_name: str = "default",
                               constraints: dict[str, str] | None = None, wait_s: float = 1.0) -> list[dict[str, Any]]:
        req = AuctionProviderRequest(provider_ref=provider_ref, link_name=link_name, constraints=constraints or {})
        return await self._gather(subjects.auction(self.prefix, "provider"), req.to_wire(), wait_s)

    async def stop_host(self, host_id: str) -> Ack:
        req = StopHostRequest(host_id=host_id)
        return await self._ack(subjects.host_command(self.prefix, host_id, "stop"), req.to_wire())

    async def call_actor(self, signer: KeyPair, actor_id: str, operation: str, payload: bytes,
                         *, origin: WasmCloudEntity | None = None, timeout_s: float | None = None) -> InvocationResponse:
        """Invoke an actor over `wasmbus.rpc.{lattice}.{actor_id}` with an invocation signed by
        `signer` (a cluster key the hosts trust). Returns the response; its `error` says why a
        call failed on the host side. Raises ControlTimeout when nobody answers."""
        # As `wash call`: the origin is the signing key with no contract or link, which the host
        # treats as an actor-to-actor call (protocol.md §4.7 step 5).
        inv = new_invocation(signer, origin or WasmCloudEntity(public_key=signer.public_key),
                             WasmCloudEntity(public_key=actor_id), operation, payload)
        subject = subjects.actor_rpc(self.lattice_prefix, actor_id)
        store = ChunkStore(self.nc.jetstream(), self.lattice_prefix)  # protocol.md §4.9, both ways
        sent = await chunk_invocation(store, inv)
        timeout_s = client_call_timeout(len(payload), timeout_s or self.timeout_s)
        resp = InvocationResponse.from_wire(await self._request(subject, sent.to_wire(), timeout_s))
        return await dechunk_response(store, resp, inv.id)
