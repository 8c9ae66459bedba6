"""How the CLI judges lattice events (waiting for outcomes, `ctl watch`) and words its errors."""

from __future__ import annotations

import pytest

from hostcore.cli.outcome import ExpectActorStarts, ExpectActorStops, ExpectProviderStart, ExpectUpdates, Failed
from hostcore.cli.session import NoResponders, explain, hint_for
from hostcore.cli.watch import format_event, matches

HOST, OTHER, KEY = "NHOST", "NOTHER", "MKEY"
REF = "file:///a/echo.wasm"


def test_starts_count_only_this_hosts_instances_of_this_ref() -> None:
    expect = ExpectActorStarts(HOST, REF, 2)
    assert not expect.feed("actor_started", OTHER, {"public_key": KEY, "image_ref": REF})
    assert not expect.feed("actor_started", HOST, {"public_key": "MELSE", "image_ref": "file:///b.wasm"})
    assert not expect.feed("actor_started", HOST, {"public_key": KEY, "image_ref": REF})
    assert expect.progress() == "1/2 started" and expect.key == KEY
    assert expect.feed("actor_started", HOST, {"public_key": KEY, "image_ref": REF})


def test_a_failure_names_the_hosts_error_also_when_it_names_the_key() -> None:
    expect = ExpectActorStarts(HOST, REF, 1)
    expect.feed("actor_start_failed", OTHER, {"actor_ref": REF, "error": "not ours"})
    with pytest.raises(Failed, match="file loading is disabled"):
        expect.feed("actor_start_failed", HOST, {"actor_ref": REF, "error": "actor file loading is disabled"})
    # An instantiation failure reports the key (protocol.md §3.3), learned from refmap_set.
    expect = ExpectActorStarts(HOST, REF, 1)
    expect.feed("refmap_set", HOST, {"oci_url": REF, "public_key": KEY})
    with pytest.raises(Failed, match="trap"):
        expect.feed("actor_start_failed", HOST, {"actor_ref": KEY, "error": "trap"})


def test_scale_with_an_empty_ref_matches_the_key() -> None:
    expect = ExpectActorStarts(HOST, "", 1, key=KEY)
    with pytest.raises(Failed):
        expect.feed("actor_start_failed", HOST, {"actor_ref": KEY, "error": "no ref"})
    assert not ExpectActorStarts(HOST, "", 1, key=KEY).feed("actor_start_failed", HOST, {"actor_ref": "", "error": ""})


def test_stops_providers_and_updates() -> None:
    stops = ExpectActorStops(HOST, KEY, 2)
    assert not stops.feed("actor_stopped", HOST, {"public_key": KEY})
    assert stops.feed("actor_stopped", HOST, {"public_key": KEY})
    prov = ExpectProviderStart(HOST, "builtin:keyvalue", "default")
    assert not prov.feed("provider_started", HOST, {"image_ref": "builtin:keyvalue", "link_name": "other"})
    assert prov.feed("provider_started", HOST, {"image_ref": "builtin:keyvalue", "link_name": "default",
                                                "public_key": "VKV"}) and prov.key == "VKV"
    with pytest.raises(Failed, match="Unknown built-in"):
        ExpectProviderStart(HOST, "builtin:nope", "default").feed(
            "provider_start_failed", HOST, {"provider_ref": "builtin:nope", "link_name": "default",
                                            "error": "Unknown built-in provider builtin:nope"})
    upd = ExpectUpdates(HOST, KEY, 2)
    assert not upd.feed("actor_updated", HOST, {"public_key": KEY})
    with pytest.raises(Failed, match="1 of 2 instances kept the old module: i2: bad"):
        upd.feed("actor_update_failed", HOST, {"public_key": KEY, "instance_id": "i2", "reason": "bad"})


def test_errors_in_the_users_terms() -> None:
    assert explain(NoResponders(f"wasmbus.rpc.blue.{KEY}"), "blue", "wasmbus.ctl.blue").startswith(
        f"actor {KEY} is not running in lattice blue")
    assert explain(NoResponders("wasmbus.ctl.blue.cmd.NBOGUS.scale"), "blue", "wasmbus.ctl.blue").startswith(
        "no host NBOGUS in lattice blue")
    assert explain(NoResponders("wasmbus.ctl.blue.get.NBOGUS.inv"), "blue", "wasmbus.ctl.blue").startswith(
        "no host NBOGUS")
    assert "WASMCLOUD_ALLOW_FILE_LOAD=true" in hint_for("actor file loading is disabled")
    assert hint_for("something else") == "something else"


def test_watch_lines_and_filters() -> None:
    event = {"type": "com.wasmcloud.lattice.actor_started", "source": HOST, "time": "2026-11-29T08:35:19.941234Z",
             "data": {"public_key": KEY, "image_ref": REF, "instance_id": "i1", "claims": {"name": "Echo"},
                      "annotations": {}}}
    line = format_event(event)
    assert line.startswith("08:35:19.941 actor_started") and f"host={HOST} {KEY} image_ref={REF}" in line
    assert "claims" not in line and "instance_id=i1" in line
    assert matches(event, ["actor_*"], []) and matches(event, [], ["NHO"])
    assert not matches(event, ["provider_*"], []) and not matches(event, [], [OTHER])
    beat = {"type": "com.wasmcloud.lattice.host_heartbeat", "source": HOST, "time": "2026-11-29T08:35:19.9Z",
            "data": {"actors": {KEY: 3}, "providers": [{}], "uptime_human": "1 minute", "labels": {"a": "b"}}}
    assert format_event(beat).endswith("actors=3 providers=1 uptime=1 minute")
