"""LatticeModel (hostcore/web/model.py): pure logic with a fake clock and literal events."""

from __future__ import annotations

from typing import Any

from hostcore.web.model import Health, LatticeModel, LinkView

H1 = "N" + "A" * 55
H2 = "N" + "B" * 55
ECHO = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
PROV = "V" + "C" * 55


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ev(event_type: str, source: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "type": f"com.wasmcloud.lattice.{event_type}", "source": source,
            "id": "x", "time": "2024-01-01T00:00:00.000000Z", "datacontenttype": "application/json", "data": data}


def started(source: str, instance_id: str, key: str = ECHO, ref: str = "file:///echo.wasm") -> dict[str, Any]:
    return ev("actor_started", source, public_key=key, image_ref=ref, instance_id=instance_id, annotations={},
              api_version=1, claims={"name": "Echo"})


def model(clock: FakeClock | None = None) -> LatticeModel:
    return LatticeModel("lat", host_timeout_s=10, clock=clock or FakeClock())


def test_host_started_then_instances_counted_per_host() -> None:
    m = model()
    m.apply_event(ev("host_started", H1, labels={"a": "1"}, friendly_name="misty-sea-1"))
    m.apply_event(ev("host_started", H2, labels={}, friendly_name="dark-moon-2"))
    for i, host in enumerate((H1, H1, H2)):
        m.apply_event(started(host, f"i{i}"))
    snap = m.snapshot()
    assert [h["friendly_name"] for h in snap["hosts"]] == ["dark-moon-2", "misty-sea-1"]
    assert {(a["host_id"], a["count"], a["name"]) for a in snap["actors"]} == {(H1, 2, "Echo"), (H2, 1, "Echo")}
    assert snap["hosts"][1]["actor_count"] == 2 and snap["hosts"][1]["labels"] == {"a": "1"}
    assert m.take_stale() == set()  # new hosts announced themselves: nothing to re-read


def test_stopping_every_instance_removes_the_row() -> None:
    m = model()
    m.apply_event(started(H1, "i1"))
    m.apply_event(started(H1, "i2"))
    m.apply_event(ev("actor_stopped", H1, public_key=ECHO, instance_id="i1"))
    assert m.snapshot()["actors"][0]["count"] == 1
    m.apply_event(ev("actor_stopped", H1, public_key=ECHO, instance_id="i2"))
    assert m.snapshot()["actors"] == []


def test_an_event_from_an_unknown_host_adds_it_and_asks_for_its_inventory() -> None:
    m = model()
    m.apply_event(started(H1, "i1"))
    assert list(m.hosts) == [H1]
    assert m.take_stale() == {H1}
    assert m.take_stale() == set()


def test_host_stopped_removes_the_host() -> None:
    m = model()
    m.apply_event(ev("host_started", H1, labels={}, friendly_name="a"))
    m.apply_event(ev("host_stopped", H1, labels={}))
    assert m.snapshot()["hosts"] == []


def test_a_stopped_host_is_not_brought_back_by_its_last_heartbeat_only_by_a_restart() -> None:
    clock = FakeClock()
    m = model(clock)
    m.apply_event(ev("host_started", H1, labels={}, friendly_name="a"))
    m.apply_event(ev("host_stopped", H1, labels={}))
    m.apply_event(ev("host_heartbeat", H1, actors={}, providers=[], labels={}, friendly_name="a"))
    m.apply_ping({"id": H1, "friendly_name": "a", "labels": {}, "uptime_seconds": 5})
    assert m.hosts == {}
    m.apply_event(ev("host_started", H1, labels={}, friendly_name="a"))
    assert list(m.hosts) == [H1]
    m.apply_event(ev("host_stopped", H1, labels={}))
    clock.now += 11  # past host_timeout_s: the same key heartbeating again is a live host
    m.apply_event(ev("host_heartbeat", H1, actors={}, providers=[], labels={}, friendly_name="a"))
    assert list(m.hosts) == [H1]


def test_quiet_hosts_expire_and_heartbeats_keep_hosts_alive() -> None:
    clock = FakeClock()
    m = model(clock)
    m.apply_event(ev("host_started", H1, labels={}, friendly_name="a"))
    m.apply_ping({"id": H2, "friendly_name": "b", "labels": {}, "uptime_seconds": 5})
    clock.now += 8
    m.apply_event(ev("host_heartbeat", H2, actors={}, providers=[], labels={}, friendly_name="b", uptime_seconds=13))
    assert m.expire() == []
    clock.now += 3
    version = m.version
    assert m.expire() == [H1]
    assert list(m.hosts) == [H2] and m.version > version
    assert m.snapshot()["hosts"][0]["uptime_seconds"] == 16


def test_heartbeat_that_disagrees_marks_the_host_stale_in_both_shapes() -> None:
    m = model()
    m.apply_event(ev("host_started", H1, labels={}, friendly_name="a"))
    m.apply_event(started(H1, "i1"))
    m.apply_event(ev("host_heartbeat", H1, actors={ECHO: 1}, providers=[]))
    assert m.take_stale() == set()
    m.apply_event(ev("host_heartbeat", H1, actors=[{"public_key": ECHO, "instance_id": "i1"}], providers=[]))
    assert m.take_stale() == set()
    m.apply_event(ev("host_heartbeat", H1, actors={ECHO: 2}, providers=[]))
    assert m.take_stale() == {H1}
    m.apply_event(ev("host_heartbeat", H1, actors={ECHO: 1},
                     providers=[{"public_key": PROV, "link_name": "default", "contract_id": "wasmcloud:x"}]))
    assert m.take_stale() == {H1}


def test_inventory_replaces_state_then_replays_events_received_since_the_request() -> None:
    m = model()
    m.apply_event(ev("host_started", H1, labels={}, friendly_name="a"))
    m.apply_event(started(H1, "old"))
    since = m.seq
    m.apply_event(started(H1, "new"))  # arrives while the inventory request is in flight
    m.apply_event(ev("actor_stopped", H1, public_key=ECHO, instance_id="gone"))
    inventory = {"host_id": H1, "labels": {"x": "y"}, "friendly_name": "a",
                 "actors": [{"id": ECHO, "image_ref": "file:///echo.wasm", "name": "Echo",
                             "instances": [{"instance_id": "old", "annotations": {}, "revision": 0},
                                           {"instance_id": "gone", "annotations": {}, "revision": 0}]}],
                 "providers": [{"id": PROV, "link_name": "default", "name": "HTTP", "image_ref": "r",
                                "instance_id": "p", "annotations": {}, "revision": 0}]}
    m.apply_inventory(H1, inventory, since)
    host = m.hosts[H1]
    assert host.actors[ECHO].instances == {"old", "new"}
    assert host.labels == {"x": "y"}
    assert m.snapshot()["providers"][0]["name"] == "HTTP"


def test_inventory_failure_ack_changes_nothing() -> None:
    m = model()
    m.apply_event(started(H1, "i1"))
    m.apply_inventory(H1, {"accepted": False, "error": "nope"}, 0)
    assert m.hosts[H1].actors[ECHO].instances == {"i1"}


def test_providers_and_health_badges() -> None:
    m = model()
    m.apply_event(ev("provider_started", H1, public_key=PROV, image_ref="reg/http:1", link_name="default",
                     contract_id="wasmcloud:httpserver", instance_id="p1", annotations={}, claims={"name": "HTTP"}))
    assert m.snapshot()["providers"][0]["health"] == "unknown"
    m.apply_event(ev("health_check_passed", H1, public_key=PROV, link_name="default"))
    assert m.hosts[H1].providers[(PROV, "default")].health is Health.HEALTHY
    m.apply_event(ev("health_check_failed", H1, public_key=PROV, link_name="default"))
    assert m.snapshot()["providers"][0]["health"] == "unhealthy"
    m.apply_event(ev("provider_stopped", H1, public_key=PROV, link_name="default", contract_id="x",
                     instance_id="p1", reason="normal"))
    assert m.snapshot()["providers"] == []


def test_links_from_events_and_from_get_links_with_replay() -> None:
    m = model()
    link = {"actor_id": ECHO, "provider_id": PROV, "link_name": "default", "contract_id": "wasmcloud:httpserver",
            "values": {"PORT": "8080"}}
    m.apply_event(ev("linkdef_set", "n/a", id="1", **link))
    assert m.snapshot()["links"][0]["values"] == {"PORT": "8080"}
    assert m.hosts == {}  # a link event does not invent a host
    since = m.seq
    m.apply_event(ev("linkdef_deleted", H1, id="1", **link))
    m.apply_links([LinkView.from_obj(link)], since)  # stale reply: the delete wins
    assert m.snapshot()["links"] == []


def test_recent_events_newest_first_and_bounded() -> None:
    m = LatticeModel("lat", host_timeout_s=10, event_buffer=3, clock=FakeClock())
    for i in range(5):
        m.apply_event(started(H1, f"i{i}"))
    recent = m.recent_events(10)
    assert [e["data"]["instance_id"] for e in recent] == ["i4", "i3", "i2"]
    assert recent[0]["type"] == "actor_started" and recent[0]["source"] == H1


def test_link_view_from_a_get_links_entry_tolerates_missing_values() -> None:
    link = LinkView.from_obj({"actor_id": "M1", "provider_id": "V1", "link_name": "l", "contract_id": "c",
                              "values": None, "id": "abc"})
    assert link.values == {} and link.id == "abc" and link.key == ("M1", "c", "l")


def inventory_with_provider(m: LatticeModel, host: str = H1) -> None:
    """A host found by ping whose inventory lists a running provider (started before the dashboard)."""
    m.apply_ping({"id": host, "friendly_name": "h"})
    m.apply_inventory(host, {"actors": [], "providers": [
        {"id": PROV, "link_name": "default", "contract_id": "wasmcloud:httpserver", "name": "HTTP"}]}, m.seq)


def test_a_provider_known_only_from_an_inventory_gets_its_health_from_a_status_event() -> None:
    m = model()
    inventory_with_provider(m)
    assert m.unknown_health(H1) == [(PROV, "default")]
    # OTP's status event carries no state: it cannot tell.
    m.apply_event(ev("health_check_status", H1, public_key=PROV, link_name="default", contract_id="c"))
    assert m.hosts[H1].providers[(PROV, "default")].health is Health.UNKNOWN
    # hostcore's carries `healthy`.
    m.apply_event(ev("health_check_status", H1, public_key=PROV, link_name="default", contract_id="c", healthy=True))
    assert m.snapshot()["providers"][0]["health"] == "healthy"
    assert m.unknown_health(H1) == []
    m.apply_event(ev("health_check_status", H1, public_key=PROV, link_name="default", contract_id="c", healthy=False))
    assert m.snapshot()["providers"][0]["health"] == "unhealthy"


def test_a_probe_fills_unknown_health_only_and_events_win_over_it() -> None:
    m = model()
    inventory_with_provider(m)
    before = m.version
    m.apply_probe(H1, PROV, "default", True)
    assert m.hosts[H1].providers[(PROV, "default")].health is Health.HEALTHY and m.version > before
    m.apply_event(ev("health_check_failed", H1, public_key=PROV, link_name="default"))
    m.apply_probe(H1, PROV, "default", True)  # a late probe answer does not undo the host's verdict
    assert m.hosts[H1].providers[(PROV, "default")].health is Health.UNHEALTHY
    m.apply_probe(H2, PROV, "default", True)  # unknown host or provider: ignored
    m.apply_probe(H1, PROV, "other", True)


def test_health_survives_a_later_inventory_and_a_status_event_is_replayed_after_one() -> None:
    m = model()
    inventory_with_provider(m)
    since = m.seq
    m.apply_event(ev("health_check_status", H1, public_key=PROV, link_name="default", healthy=True))
    # An inventory requested before that event answers after it: the event is replayed on top.
    m.apply_inventory(H1, {"actors": [], "providers": [{"id": PROV, "link_name": "default"}]}, since)
    assert m.hosts[H1].providers[(PROV, "default")].health is Health.HEALTHY
    assert m.hosts[H1].providers[(PROV, "default")].contract_id == "wasmcloud:httpserver"


def test_nothing_expires_while_the_dashboard_is_cut_off_and_hosts_get_a_fresh_timeout_after() -> None:
    clock = FakeClock()
    m = model(clock)
    m.apply_ping({"id": H1})
    m.set_connected(False)
    assert m.snapshot()["nats_connected"] is False
    clock.now += 60  # long past host_timeout_s, but we heard nobody because our connection was down
    assert m.expire() == [] and H1 in m.hosts
    version = m.version
    m.set_connected(True)
    assert m.version > version and m.snapshot()["nats_connected"] is True
    clock.now += 9
    assert m.expire() == []
    clock.now += 2  # still silent a whole timeout after we came back: gone
    assert m.expire() == [H1] and m.snapshot()["hosts"] == []


def test_set_connected_only_counts_changes() -> None:
    m = model()
    version = m.version
    m.set_connected(True)
    assert m.version == version
    m.set_connected(False)
    m.set_connected(False)
    assert m.version == version + 1


def test_claims_name_the_keys_of_links_whose_actor_runs_nowhere() -> None:
    m = model()
    m.apply_links([LinkView(actor_id=ECHO, provider_id=PROV, link_name="default", contract_id="wasmcloud:httpserver")],
                  m.seq)
    assert m.snapshot()["links"][0]["actor_name"] == ""
    m.apply_claims([{"sub": ECHO, "name": "Echo", "rev": "1"}, {"sub": PROV, "name": "HTTP Server"},
                    {"sub": "Mnoname", "name": ""}, {"name": "no key"}])
    link = m.snapshot()["links"][0]
    assert (link["actor_name"], link["provider_name"]) == ("Echo", "HTTP Server")
    assert "Mnoname" not in m.names
