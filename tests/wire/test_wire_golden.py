"""Golden bytes and shapes of the wire layer: subjects, event data (key order included, since
events are JSON), the CloudEvent envelope, link definitions and acks. The literals are what the
host sent before the wire layer existed and what protocol.md documents."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from hostcore.wire import cloudevents as ev
from hostcore.wire import subjects
from hostcore.wire.control import failure_ack, success_ack
from hostcore.wire.linkdefs import LinkDefinition, link_id


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def test_subjects() -> None:
    assert subjects.actor_rpc("default", "MA") == "wasmbus.rpc.default.MA"
    root = subjects.provider_rpc("lat", "VP", "default")
    assert root == "wasmbus.rpc.lat.VP.default"
    assert subjects.provider_health(root) == "wasmbus.rpc.lat.VP.default.health"
    assert subjects.provider_shutdown(root) == "wasmbus.rpc.lat.VP.default.shutdown"
    assert subjects.provider_linkdefs(root, "put") == "wasmbus.rpc.lat.VP.default.linkdefs.put"
    assert subjects.provider_linkdefs(root, "*") == "wasmbus.rpc.lat.VP.default.linkdefs.*"
    assert subjects.rpc_events("lat") == "wasmbus.rpcevt.lat"
    assert subjects.lattice_events("lat") == "wasmbus.evt.lat"
    p = subjects.prefix(subjects.DEFAULT_CTL_TOPIC_PREFIX, "lat")
    assert p == "wasmbus.ctl.lat"
    assert subjects.host_command(p, "NH", "la") == "wasmbus.ctl.lat.cmd.NH.la"
    assert subjects.linkdefs(p, "del") == "wasmbus.ctl.lat.linkdefs.del"
    assert subjects.auction(p, "provider") == "wasmbus.ctl.lat.auction.provider"
    assert subjects.registries_put(p) == "wasmbus.ctl.lat.registries.put"
    assert subjects.control_subscriptions(p, "NH") == {
        "cmd": "wasmbus.ctl.lat.cmd.NH.*", "inv": "wasmbus.ctl.lat.get.NH.inv", "ping": "wasmbus.ctl.lat.ping.hosts",
        "get": "wasmbus.ctl.lat.get.*", "linkdefs": "wasmbus.ctl.lat.linkdefs.*",
        "registries": "wasmbus.ctl.lat.registries.put", "auction": "wasmbus.ctl.lat.auction.>"}


def test_cloud_event_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=1))
    when = dt.datetime(2022, 11, 28, 18, 32, 29, 123456, tzinfo=dt.timezone.utc)
    event = ev.refmap_set("reg/a:1", "MA")
    assert ev.cloud_event(event.type, event.data, "NH", now=when) == (
        b'{"specversion":"1.0","type":"com.wasmcloud.lattice.refmap_set","source":"NH",'
        b'"id":"00000000-0000-0000-0000-000000000001","time":"2022-11-28T18:32:29.123456Z",'
        b'"datacontenttype":"application/json","data":{"oci_url":"reg/a:1","public_key":"MA"}}')
    assert ev.event_name("com.wasmcloud.lattice.actor_started") == "actor_started"


CLAIMS = SimpleNamespace(public_key="VP", issuer="AI", name="HTTP", ver="0.1", capid="wasmcloud:httpserver", revision=2)
ENTITY_A = SimpleNamespace(public_key="MA", contract_id="", link_name="")
ENTITY_P = SimpleNamespace(public_key="VP", contract_id="wasmcloud:x", link_name="default")

# (builder output, today's literal) pairs: same type, same data, same key order.
GOLDEN = [
    (ev.actor_started(public_key="MA", image_ref="r", api_version=1, instance_id="i", annotations={"a": "b"},
                      claims={"c": 1}),
     ("actor_started", {"public_key": "MA", "image_ref": "r", "api_version": 1, "instance_id": "i",
                        "annotations": {"a": "b"}, "claims": {"c": 1}})),
    (ev.actor_stopped(public_key="MA", instance_id="i", annotations={}),
     ("actor_stopped", {"public_key": "MA", "instance_id": "i", "annotations": {}})),
    (ev.actor_start_failed("ref", "boom"), ("actor_start_failed", {"actor_ref": "ref", "error": "boom"})),
    (ev.actor_updated(public_key="MA", revision=3, instance_id="i"),
     ("actor_updated", {"public_key": "MA", "revision": 3, "instance_id": "i"})),
    (ev.actor_update_failed(public_key="MA", revision=3, instance_id="i", reason="no"),
     ("actor_update_failed", {"public_key": "MA", "revision": 3, "instance_id": "i", "reason": "no"})),
    (ev.provider_started(claims=CLAIMS, image_ref="r", link_name="default", instance_id="i", annotations={}),  # type: ignore[arg-type]
     ("provider_started", {"public_key": "VP", "image_ref": "r", "link_name": "default",
                           "contract_id": "wasmcloud:httpserver", "instance_id": "i", "annotations": {},
                           "claims": {"issuer": "AI", "tags": None, "name": "HTTP", "version": "0.1",
                                      "not_before_human": "immediately", "expires_human": "never"}})),
    (ev.provider_stopped(public_key="VP", link_name="default", contract_id="c", instance_id="i", annotations={}),
     ("provider_stopped", {"public_key": "VP", "link_name": "default", "contract_id": "c", "instance_id": "i",
                           "annotations": {}, "reason": "normal"})),
    (ev.provider_start_failed("ref", "default", "boom"),
     ("provider_start_failed", {"provider_ref": "ref", "link_name": "default", "error": "boom"})),
    (ev.health_check(public_key="VP", link_name="l", contract_id="c", healthy=True, changed=True),
     ("health_check_passed", {"public_key": "VP", "link_name": "l", "contract_id": "c"})),
    (ev.health_check(public_key="VP", link_name="l", contract_id="c", healthy=False, changed=True),
     ("health_check_failed", {"public_key": "VP", "link_name": "l", "contract_id": "c"})),
    (ev.health_check(public_key="VP", link_name="l", contract_id="c", healthy=False, changed=False),
     ("health_check_status", {"public_key": "VP", "link_name": "l", "contract_id": "c", "healthy": False})),
    (ev.refmap_set("r", "MA"), ("refmap_set", {"oci_url": "r", "public_key": "MA"})),
    (ev.host_started(labels={"a": "b"}, friendly_name="f"),
     ("host_started", {"labels": {"a": "b"}, "friendly_name": "f"})),
    (ev.host_stopped(labels={}, reason="Host stop requested"),
     ("host_stopped", {"labels": {}, "reason": "Host stop requested"})),
    (ev.invocation(ENTITY_A, ENTITY_P, "Op", 3, ok=True),  # type: ignore[arg-type]
     ("invocation_succeeded", {"source": {"public_key": "MA", "contract_id": None, "link_name": None},
                               "dest": {"public_key": "VP", "contract_id": "wasmcloud:x", "link_name": "default"},
                               "operation": "Op", "bytes": 3})),
    (ev.actors_started(public_key="MA", image_ref="r", annotations={}, claims={}, count=2, host_id="NH"),
     ("actors_started", {"public_key": "MA", "image_ref": "r", "annotations": {}, "claims": {}, "count": 2,
                         "host_id": "NH"})),
    (ev.actors_start_failed(public_key="MA", image_ref="r", annotations={}, error="e", host_id="NH"),
     ("actors_start_failed", {"public_key": "MA", "image_ref": "r", "annotations": {}, "error": "e",
                              "host_id": "NH"})),
    (ev.actors_stopped(public_key="MA", count=1, remaining=0, annotations={}, host_id="NH"),
     ("actors_stopped", {"public_key": "MA", "count": 1, "remaining": 0, "annotations": {}, "host_id": "NH"})),
]


@pytest.mark.parametrize(("event", "expected"), GOLDEN, ids=[g[1][0] + str(i) for i, g in enumerate(GOLDEN)])
def test_event_data_is_unchanged(event: ev.Event, expected: tuple[str, dict[str, Any]]) -> None:
    assert (str(event.type), dumps(event.data)) == (expected[0], dumps(expected[1]))


def test_heartbeat_data_order() -> None:
    event = ev.host_heartbeat(actor_counts={"MA": 2}, providers=[], labels={}, friendly_name="f", version="0.63.0",
                              uptime_seconds=61)
    assert event.type == "host_heartbeat"
    assert list(event.data) == ["actors", "providers", "labels", "friendly_name", "version", "uptime_seconds",
                                "uptime_human"]
    assert event.data["uptime_human"] == "1 minute, 1 second"


def test_linkdef_bytes() -> None:
    link = LinkDefinition(actor_id="MA", provider_id="VP", link_name="default", contract_id="wasmcloud:kv",
                          values={"k": "v"})
    assert link.id == link_id("MA", "wasmcloud:kv", "default")
    # protocol.md §4.11: the msgpack map the host publishes on `….linkdefs.put`
    assert msgpack.unpackb(link.to_msgpack()) == {**link.to_map(), "deleted": False}
    assert list(msgpack.unpackb(link.to_msgpack(deleted=True))) == ["id", "actor_id", "provider_id", "link_name",
                                                                    "contract_id", "values", "deleted"]
    assert ev.linkdef(link.to_map(), deleted=True).type == "linkdef_deleted"


def test_acks() -> None:
    assert success_ack() == b'{"accepted":true,"error":""}'
    assert failure_ack("no") == b'{"accepted":false,"error":"no"}'


def test_query_reply_key_order() -> None:
    from hostcore.wire.control import (ActorDescription, HostInventory, InstanceDescription, PingReply,
                                       ProviderDescription)
    ping = PingReply(id="NH", issuer="CC", labels={}, friendly_name="f", uptime_seconds=1, uptime_human="1 second",
                     version="0.63.0", cluster_issuers="CC", js_domain=None, ctl_host="h", prov_rpc_host="h",
                     rpc_host="h", lattice_prefix="default")
    assert list(ping.to_map()) == ["id", "issuer", "labels", "friendly_name", "uptime_seconds", "uptime_human",
                                   "version", "cluster_issuers", "js_domain", "ctl_host", "prov_rpc_host",
                                   "rpc_host", "lattice_prefix"]
    inv = HostInventory(host_id="NH", issuer="CC", labels={}, friendly_name="f",
                        actors=(ActorDescription(id="MA", image_ref="r", name="", instances=(
                            InstanceDescription(annotations={}, instance_id="i", revision=1),)),),
                        providers=(ProviderDescription(id="VP", image_ref="r", link_name="default", name="",
                                                       instance_id="p", annotations={}, revision=2,
                                                       contract_id="c"),))
    assert dumps(inv.to_map()) == (
        '{"host_id":"NH","issuer":"CC","labels":{},"friendly_name":"f","actors":[{"id":"MA","image_ref":"r",'
        '"name":"","instances":[{"annotations":{},"instance_id":"i","revision":1}]}],"providers":[{"id":"VP",'
        '"image_ref":"r","link_name":"default","name":"","instance_id":"p","annotations":{},"revision":2,'
        '"contract_id":"c"}]}')
