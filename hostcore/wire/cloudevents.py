"""Lattice events (protocol.md §3): the CloudEvents 1.0 envelope, the event types, and one
builder per event the host publishes, so every event's data has one definition.

This module is the only place that writes `specversion` or an event's data keys. Key order is
part of the bytes (the envelope is JSON), so each builder fixes it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from hostcore.wire.claims_records import ProviderClaimsLike, provider_event_claims

__all__ = [
    "EVENT_TYPE_PREFIX",
    "Event",
    "EventType",
    "actor_start_failed",
    "actor_started",
    "actor_stopped",
    "actor_update_failed",
    "actor_updated",
    "actors_start_failed",
    "actors_started",
    "actors_stopped",
    "cloud_event",
    "event_name",
    "health_check",
    "host_heartbeat",
    "host_started",
    "host_stopped",
    "humanize_seconds",
    "invocation",
    "invocation_event_data",
    "linkdef",
    "provider_start_failed",
    "provider_started",
    "provider_stopped",
    "refmap_set",
]

EVENT_TYPE_PREFIX = "com.wasmcloud.lattice."


class EventType(StrEnum):
    """The event names; the wire type is EVENT_TYPE_PREFIX + the value."""

    ACTOR_STARTED = "actor_started"
    ACTOR_STOPPED = "actor_stopped"
    ACTOR_START_FAILED = "actor_start_failed"
    ACTOR_UPDATED = "actor_updated"
    ACTOR_UPDATE_FAILED = "actor_update_failed"
    ACTORS_STARTED = "actors_started"
    ACTORS_START_FAILED = "actors_start_failed"
    ACTORS_STOPPED = "actors_stopped"
    PROVIDER_STARTED = "provider_started"
    PROVIDER_STOPPED = "provider_stopped"
    PROVIDER_START_FAILED = "provider_start_failed"
    HEALTH_CHECK_PASSED = "health_check_passed"
    HEALTH_CHECK_FAILED = "health_check_failed"
    HEALTH_CHECK_STATUS = "health_check_status"
    LINKDEF_SET = "linkdef_set"
    LINKDEF_DELETED = "linkdef_deleted"
    REFMAP_SET = "refmap_set"
    HOST_STARTED = "host_started"
    HOST_STOPPED = "host_stopped"
    HOST_HEARTBEAT = "host_heartbeat"
    INVOCATION_SUCCEEDED = "invocation_succeeded"
    INVOCATION_FAILED = "invocation_failed"


@dataclass(frozen=True, slots=True)
class Event:
    """One event before its envelope: its type and its `data` map."""

    type: EventType
    data: dict[str, Any]


def event_name(cloud_event_type: str) -> str:
    """`com.wasmcloud.lattice.actor_started` → `actor_started` (other types pass unchanged)."""
    return cloud_event_type.removeprefix(EVENT_TYPE_PREFIX)


def cloud_event(event_type: str, data: dict[str, Any], source: str, *, now: dt.datetime | None = None) -> bytes:
    """Encode one CloudEvent 1.0 as JSON bytes (only the fields the OTP host sets)."""
    when = now or dt.datetime.now(dt.timezone.utc)
    return json.dumps(
        {
            "specversion": "1.0",
            "type": EVENT_TYPE_PREFIX + event_type,
            "source": source,
            "id": str(uuid.uuid4()),
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datacontenttype": "application/json",
            "data": data,
        },
        separators=(",", ":"),
    ).encode()


# Timex's humanized units (its `deconstruct`): a year is 365 days and a month 30.
_HUMAN_UNITS = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                ("hour", 3600), ("minute", 60), ("second", 1))


def humanize_seconds(seconds: int) -> str:
    """Timex-style duration text, e.g. `1 week, 1 day, 2 minutes` (protocol.md §2.4).
    QUIRK: a zero duration is `0 microseconds`, as Timex 3.7 (OTP's) renders it."""
    parts = []
    for unit, size in _HUMAN_UNITS:
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return ", ".join(parts) or "0 microseconds"


# --- actors (§3.3) -------------------------------------------------------------------------------


def actor_started(*, public_key: str, image_ref: str, api_version: int, instance_id: str,
                  annotations: Mapping[str, str], claims: dict[str, Any]) -> Event:
    return Event(EventType.ACTOR_STARTED, {
        "public_key": public_key, "image_ref": image_ref, "api_version": api_version,
        "instance_id": instance_id, "annotations": annotations, "claims": claims})


def actor_stopped(*, public_key: str, instance_id: str, annotations: Mapping[str, str]) -> Event:
    # v0.63 adds the annotations
    return Event(EventType.ACTOR_STOPPED, {"public_key": public_key, "instance_id": instance_id,
                                           "annotations": annotations})


def actor_start_failed(actor_ref: str, error: str) -> Event:
    return Event(EventType.ACTOR_START_FAILED, {"actor_ref": actor_ref, "error": error})


def actor_updated(*, public_key: str, revision: int, instance_id: str) -> Event:
    return Event(EventType.ACTOR_UPDATED, {"public_key": public_key, "revision": revision,
                                           "instance_id": instance_id})


def actor_update_failed(*, public_key: str, revision: int, instance_id: str, reason: str) -> Event:
    return Event(EventType.ACTOR_UPDATE_FAILED, {"public_key": public_key, "revision": revision,
                                                 "instance_id": instance_id, "reason": reason})


# The v0.63 batch events (wadm-notes.md §1.3); OTP puts the host id in each one's data too.

def actors_started(*, public_key: str, image_ref: str, annotations: Mapping[str, str],
                   claims: dict[str, Any], count: int, host_id: str) -> Event:
    return Event(EventType.ACTORS_STARTED, {"public_key": public_key, "image_ref": image_ref,
                                            "annotations": annotations, "claims": claims, "count": count,
                                            "host_id": host_id})


def actors_start_failed(*, public_key: str, image_ref: str, annotations: Mapping[str, str], error: str,
                        host_id: str) -> Event:
    return Event(EventType.ACTORS_START_FAILED, {"public_key": public_key, "image_ref": image_ref,
                                                 "annotations": dict(annotations), "error": error,
                                                 "host_id": host_id})


def actors_stopped(*, public_key: str, count: int, remaining: int, annotations: Mapping[str, str],
                   host_id: str) -> Event:
    return Event(EventType.ACTORS_STOPPED, {"public_key": public_key, "count": count, "remaining": remaining,
                                            "annotations": dict(annotations), "host_id": host_id})


# --- providers (§3.3) ----------------------------------------------------------------------------


def provider_started(*, claims: ProviderClaimsLike, image_ref: str, link_name: str, instance_id: str,
                     annotations: Mapping[str, str]) -> Event:
    return Event(EventType.PROVIDER_STARTED, {
        "public_key": claims.public_key, "image_ref": image_ref, "link_name": link_name,
        "contract_id": claims.capid, "instance_id": instance_id, "annotations": annotations,
        "claims": provider_event_claims(claims)})


def provider_stopped(*, public_key: str, link_name: str, contract_id: str, instance_id: str,
                     annotations: Mapping[str, str]) -> Event:
    # QUIRK: OTP's port closes with reason `normal` however the process ended.
    return Event(EventType.PROVIDER_STOPPED, {"public_key": public_key, "link_name": link_name,
                                              "contract_id": contract_id, "instance_id": instance_id,
                                              "annotations": annotations, "reason": "normal"})


def provider_start_failed(provider_ref: str, link_name: str, error: str) -> Event:
    return Event(EventType.PROVIDER_START_FAILED, {"provider_ref": provider_ref, "link_name": link_name,
                                                   "error": error})


def health_check(*, public_key: str, link_name: str, contract_id: str, healthy: bool, changed: bool) -> Event:
    """health_check_passed/_failed on a change; v0.63's health_check_status (with our `healthy`,
    which tells a late observer the state) when a check found the state unchanged."""
    # wadm requires the contract (v0.63)
    data: dict[str, Any] = {"public_key": public_key, "link_name": link_name, "contract_id": contract_id}
    if changed:
        return Event(EventType.HEALTH_CHECK_PASSED if healthy else EventType.HEALTH_CHECK_FAILED, data)
    data["healthy"] = healthy
    return Event(EventType.HEALTH_CHECK_STATUS, data)


# --- lattice data and host (§3.3, §3.4) -----------------------------------------------------------


def linkdef(link_map: dict[str, Any], *, deleted: bool) -> Event:
    """`link_map` is LinkDefinition.to_map()."""
    return Event(EventType.LINKDEF_DELETED if deleted else EventType.LINKDEF_SET, link_map)


def refmap_set(oci_url: str, public_key: str) -> Event:
    return Event(EventType.REFMAP_SET, {"oci_url": oci_url, "public_key": public_key})


def host_started(*, labels: Mapping[str, str], friendly_name: str) -> Event:
    return Event(EventType.HOST_STARTED, {"labels": labels, "friendly_name": friendly_name})


def host_stopped(*, labels: Mapping[str, str], reason: str) -> Event:
    return Event(EventType.HOST_STOPPED, {"labels": labels, "reason": reason})


def host_heartbeat(*, actor_counts: dict[str, int], providers: list[dict[str, str]], labels: Mapping[str, str],
                   friendly_name: str, version: str, uptime_seconds: int) -> Event:
    """We emit the v0.60+ shape (`actors`: key → instance count) so the event stays small at
    10,000 instances (protocol.md §3.4; later tooling reads this form). `providers` holds
    `{public_key, link_name, contract_id}` maps."""
    return Event(EventType.HOST_HEARTBEAT, {
        "actors": actor_counts,
        "providers": providers,
        "labels": labels,
        "friendly_name": friendly_name,
        "version": version,
        "uptime_seconds": uptime_seconds,
        "uptime_human": humanize_seconds(uptime_seconds),
    })


# --- invocations (§3.5, on wasmbus.rpcevt) --------------------------------------------------------


class EntityLike(Protocol):
    @property
    def public_key(self) -> str: ...
    @property
    def contract_id(self) -> str: ...
    @property
    def link_name(self) -> str: ...


def invocation_event_data(source: EntityLike, dest: EntityLike, operation: str, size: int) -> dict[str, Any]:
    """protocol.md §3.5 data; an actor entity's empty contract and link are sent as null."""
    def entity(e: EntityLike) -> dict[str, Any]:
        return {"public_key": e.public_key, "contract_id": e.contract_id or None, "link_name": e.link_name or None}
    return {"source": entity(source), "dest": entity(dest), "operation": operation, "bytes": size}


def invocation(source: EntityLike, dest: EntityLike, operation: str, size: int, *, ok: bool) -> Event:
    return Event(EventType.INVOCATION_SUCCEEDED if ok else EventType.INVOCATION_FAILED,
                 invocation_event_data(source, dest, operation, size))
