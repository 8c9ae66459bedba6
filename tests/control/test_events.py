import datetime as dt
import json

from hostcore.tree.messages import InstanceInfo, Inventory, ProviderInfo, ProviderInventory
from hostcore.config import load_config
from hostcore.control.events import heartbeat_data
from hostcore.wire.cloudevents import cloud_event, humanize_seconds
from hostcore.control.inventory import InventoryJoin


def test_cloud_event_envelope() -> None:
    when = dt.datetime(2022, 11, 28, 18, 32, 29, 123456, tzinfo=dt.timezone.utc)
    event = json.loads(cloud_event("actor_started", {"a": 1}, "NHOST", now=when))
    assert event["specversion"] == "1.0" and event["type"] == "com.wasmcloud.lattice.actor_started"
    assert event["source"] == "NHOST" and event["datacontenttype"] == "application/json"
    assert event["time"] == "2022-11-28T18:32:29.123456Z" and event["data"] == {"a": 1}
    assert len(event["id"]) == 36


def test_humanize() -> None:
    assert humanize_seconds(0) == "0 microseconds"  # Timex 3.7's text for an empty duration
    assert humanize_seconds(3723) == "1 hour, 2 minutes, 3 seconds"
    assert humanize_seconds(8 * 86400) == "1 week, 1 day"
    assert humanize_seconds(400 * 86400 + 1) == "1 year, 1 month, 5 days, 1 second"
    assert humanize_seconds(2 * 365 * 86400 + 2 * 30 * 86400 + 14 * 86400) == "2 years, 2 months, 2 weeks"


def test_heartbeat_counts_instances_per_actor() -> None:
    cfg = load_config([], {"WASMCLOUD_FRIENDLY_NAME": "x"}, config_file=None)
    inst = [InstanceInfo(public_key=k, instance_id=str(i), image_ref="", name="", revision=0, annotations={})
            for i, k in enumerate(["MA", "MA", "MB"])]
    prov = ProviderInfo(public_key="VP", link_name="default", contract_id="wasmcloud:keyvalue", instance_id="i",
                        image_ref="r", name="p", revision=1, annotations={})
    join = InventoryJoin()
    assert join.add(Inventory(request_id="1", instances=tuple(inst))) is None
    whole = join.add(ProviderInventory(request_id="1", providers=(prov,)))
    assert whole is not None and join.parts == {}
    data = heartbeat_data(cfg, whole, started_at=0)
    assert data["actors"] == {"MA": 2, "MB": 1} and data["friendly_name"] == "x"
    assert data["providers"] == [{"public_key": "VP", "link_name": "default", "contract_id": "wasmcloud:keyvalue"}]
    assert data["uptime_seconds"] > 0 and data["version"]
