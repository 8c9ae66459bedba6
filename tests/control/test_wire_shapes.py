"""The final OTP line's wire (v0.60–v0.63), without a host: golden shapes of the heartbeat, the
ping reply and the provider host data; the legacy-cache fold; the batch events; cosmetic rows of
otp-audit.md (uptime text, host names, provider claims, call-alias text, provider environment)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from hostcore import COMPAT_VERSION
from hostcore.actors.batches import BatchTracker
from hostcore.tree.messages import (
    InstanceInfo,
    Inventory,
    LatticeSnapshot,
    ProviderInfo,
    ProviderInventory,
    StartProviderProcess,
)
from hostcore.actors.outbound import HostCallRouter
from hostcore.config import load_config
from hostcore.control.events import heartbeat_data
from hostcore.control.inventory import JoinedInventory as HostInventory, inventory_reply, nats_host
from hostcore.wire.linkdefs import LinkDefinition, link_id
from hostcore.control.migration import LegacyCache, refmap_key
from hostcore.control.server import ping_reply
from hostcore.errors import HostCallError
from hostcore.native.claims import ActorClaims
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.providers.module import host_data, provider_env
from hostcore.native.par import ProviderClaims
from hostcore.wire.claims_records import provider_record as provider_claims_record

# semver.org's regular expression (core + optional pre-release and build).
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


@pytest.fixture
def config() -> Any:
    return load_config([], {"WASMCLOUD_FRIENDLY_NAME": "quiet-tree", "WASMCLOUD_NATS_URL": "nats://10.1.2.3:4222",
                            "WASMCLOUD_LATTICE_PREFIX": "default", "HOST_zone": "eu"}, config_file=None)


def provider_claims(name: str | None = "HTTP Server") -> ProviderClaims:
    return ProviderClaims(public_key="VAG3QITQQ2ODAOWB5TTQSDJ53XK3SHBEIFNK4AYJ5RKAX2UNSCAPHA5M",
                          issuer="ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XVKYK4BEJWGVAOOQHZMCW", name=name,
                          capid="wasmcloud:httpserver", vendor="wasmCloud", rev=3, ver="0.17.0", issued_at=1,
                          expires=None, target_hashes={}, jwt="x")


def inventory() -> HostInventory:
    inst = [InstanceInfo(public_key=k, instance_id=str(i), image_ref="r", name="", revision=1,
                         annotations={"a": "1"}) for i, k in enumerate(["MA", "MA", "MB"])]
    prov = ProviderInfo(public_key="VP", link_name="default", contract_id="wasmcloud:keyvalue", instance_id="pi",
                        image_ref="ref", name="", revision=2, annotations={})
    return HostInventory(actors=Inventory(request_id="1", instances=tuple(inst)),
                         providers=ProviderInventory(request_id="1", providers=(prov,)))


def shape(obj: Any) -> Any:
    """A value's JSON shape: maps keep their keys, lists their first element, scalars their type."""
    if isinstance(obj, dict):
        return {k: shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shape(obj[0])] if obj else []
    return type(obj).__name__


def test_version_is_the_final_otp_line_in_semver() -> None:
    assert SEMVER.match(COMPAT_VERSION)
    major, minor, _ = (int(p) for p in COMPAT_VERSION.split(".")[:3])
    assert (major, minor) >= (0, 63), "wadm 0.4-0.6 needs a host >= 0.63.0"


def test_heartbeat_golden_shape(config: Any) -> None:
    data = heartbeat_data(config, inventory(), started_at=0)
    assert shape(data) == {
        "actors": {"MA": "int", "MB": "int"},
        "providers": [{"public_key": "str", "link_name": "str", "contract_id": "str"}],
        "labels": shape(config.labels), "friendly_name": "str", "version": "str",
        "uptime_seconds": "int", "uptime_human": "str",
    }
    assert data["actors"] == {"MA": 2, "MB": 1} and data["version"] == COMPAT_VERSION
    assert data["labels"]["zone"] == "eu" and data["friendly_name"] == "quiet-tree"
    # Timex units up to years: more than 50 years up, never "days" only.
    assert data["uptime_human"].split(", ")[0].endswith("years")


def test_inventory_golden_shape_uses_empty_names(config: Any) -> None:
    reply = inventory_reply(config, inventory())
    assert shape(reply) == {
        "host_id": "str", "issuer": "str", "labels": shape(config.labels), "friendly_name": "str",
        "actors": [{"id": "str", "image_ref": "str", "name": "str",
                    "instances": [{"annotations": {"a": "str"}, "instance_id": "str", "revision": "int"}]}],
        "providers": [{"id": "str", "image_ref": "str", "link_name": "str", "name": "str", "instance_id": "str",
                       "annotations": {}, "revision": "int", "contract_id": "str"}],
    }
    assert [a["name"] for a in reply["actors"]] == ["", ""]


def test_ping_reply_reports_host_names(config: Any) -> None:
    reply = ping_reply(config, started_at=0)
    assert reply["ctl_host"] == reply["rpc_host"] == reply["prov_rpc_host"] == "10.1.2.3"
    assert reply["version"] == COMPAT_VERSION
    assert nats_host("nats://a.example:4222,nats://b.example:4222") == "a.example"
    assert nats_host("tls://user:pw@nats.example") == "nats.example"
    assert nats_host("127.0.0.1:4222") == "127.0.0.1"


def test_provider_host_data_golden_shape(config: Any) -> None:
    link = LinkDefinition(actor_id="MA", provider_id="VP", link_name="default", contract_id="wasmcloud:httpserver",
                          values={"PORT": "8080"})
    msg = StartProviderProcess(config=config, claims=provider_claims(), binary=Path("/bin/true"), link_name="default",
                               instance_id="iid", image_ref="ref", annotations={}, config_json="", links=(link,))
    data = host_data(config, msg)
    assert shape(data) == {
        "host_id": "str", "lattice_rpc_prefix": "str", "link_name": "str", "lattice_rpc_user_jwt": "str",
        "lattice_rpc_user_seed": "str", "lattice_rpc_url": "str", "lattice_rpc_tls": "int", "env_values": {},
        "instance_id": "str", "provider_key": "str",
        "link_definitions": [{"id": "str", "actor_id": "str", "provider_id": "str", "link_name": "str",
                              "contract_id": "str", "values": {"PORT": "str"}}],
        "config_json": "str", "default_rpc_timeout_ms": "int", "cluster_issuers": ["str"], "invocation_seed": "str",
        "js_domain": "NoneType", "enable_structured_logging": "bool", "structured_logging": "bool",
    }
    assert data["lattice_rpc_tls"] == 0 and data["lattice_rpc_url"] == "10.1.2.3:4222"


def test_provider_claims_record_has_empty_caps() -> None:
    record = provider_claims_record(provider_claims())
    assert record["caps"] == "" and record["contract_id"] == "wasmcloud:httpserver"
    assert provider_claims_record(provider_claims(name=None))["name"] == ""


def test_provider_inherits_the_whole_environment() -> None:
    environ = {"PATH": "/bin", "HOME": "/home/h", "RUST_LOG": "debug", "HOST_region": "eu",
               "OTEL_TRACES_EXPORTER": "otlp", "HTTPS_PROXY": "http://proxy:3128"}
    assert provider_env(environ) == environ


def test_contract_call_without_a_link_is_a_call_alias_error() -> None:
    claims = ActorClaims(public_key=KeyPair.generate(KeyKind.MODULE).public_key, issuer="A", name="a",
                         call_alias=None, version="1", rev=1, issued_at=1, expires=None, not_before=None, tags=(),
                         caps=("wasmcloud:keyvalue",), module_hash="h", jwt="j", wascap_revision=2, provider=False)
    router = HostCallRouter(claims=claims, lattice_prefix="default", signer=KeyPair.generate(KeyKind.CLUSTER),
                            rpc_timeout_s=1, connection=None)  # type: ignore[arg-type]
    for namespace in ("wasmcloud:keyvalue", "wasmcloud:blobstore", "pinger"):
        with pytest.raises(HostCallError) as err:
            router.resolve("default", namespace)
        assert err.value.wire == f"Call alias not found: {namespace} on default"
    router.update(LatticeSnapshot(links=(LinkDefinition(actor_id="MX", provider_id="VP", link_name="default",
                                                        contract_id="wasmcloud:blobstore"),), aliases={}))
    with pytest.raises(HostCallError):  # another actor's link is not ours
        router.resolve("default", "wasmcloud:blobstore")


# --- legacy cache fold (v0.59 LATTICECACHE records) ------------------------------------------------

def legacy_link(actor: str, link_uuid: str, **extra: Any) -> bytes:
    return json.dumps({"id": link_uuid, "actor_id": actor, "provider_id": "VP", "link_name": "default",
                       "contract_id": "wasmcloud:keyvalue", "values": {"URL": "redis://x"}, **extra}).encode()


def test_legacy_fold_keeps_live_links_claims_and_refmaps() -> None:
    cache = LegacyCache("lat")
    claims = {"call_alias": "", "iss": "A", "name": "n", "caps": "wasmcloud:keyvalue", "rev": "1", "tags": "",
              "version": "1", "sub": "MA"}
    cache.add("lc.lat.claims.MA", json.dumps(claims).encode())
    cache.add("lc.lat.linkdefs.uuid-1", legacy_link("MA", "uuid-1"))
    cache.add("lc.lat.linkdefs.uuid-2", legacy_link("MB", "uuid-2"))
    cache.add("lc.lat.linkdefs.uuid-3", legacy_link("MB", "uuid-2", deleted=True))  # removed later
    cache.add("lc.lat.linkdefs.uuid-4", legacy_link("MC", "uuid-4", deleted=True))
    cache.add("lc.lat.linkdefs.uuid-5", legacy_link("MC", "uuid-5"))  # put again after its removal
    cache.add("lc.lat.refmap.abc", json.dumps({"oci_url": "ghcr.io/x:1", "public_key": "MA"}).encode())
    cache.add("lc.lat.linkdefs.bad", b"{not json")
    cache.add("lc.lat.other.x", b"{}")
    entries = cache.entries()
    assert json.loads(entries["CLAIMS_MA"]) == claims
    link_keys = sorted(k for k in entries if k.startswith("LINKDEF_"))
    assert link_keys == sorted(f"LINKDEF_{link_id(a, 'wasmcloud:keyvalue', 'default')}" for a in ("MA", "MC"))
    migrated = LinkDefinition.from_map(json.loads(entries[link_keys[0]]))
    assert migrated.values == {"URL": "redis://x"} and json.loads(entries[link_keys[0]])["id"] == migrated.id
    assert json.loads(entries[refmap_key("ghcr.io/x:1")]) == {"oci_url": "ghcr.io/x:1", "public_key": "MA"}
    assert cache.skipped == 2


# --- batch events ----------------------------------------------------------------------------------

class Published(list[tuple[str, dict[str, Any]]]):
    def __call__(self, event: Any) -> None:
        self.append((event.type, event.data))


def test_start_batch_is_published_once_all_instances_answered() -> None:
    out = Published()
    batches = BatchTracker(out)
    batches.host_id = "NH"
    batches.starting(["i1", "i2"], "MA", "ref", {"k": "v"}, {"name": "a"})
    batches.instance_started("i1")
    batches.instance_started("restart-not-in-a-batch")
    assert out == []
    batches.instance_started("i2")
    assert out == [("actors_started", {"public_key": "MA", "image_ref": "ref", "annotations": {"k": "v"},
                                       "claims": {"name": "a"}, "count": 2, "host_id": "NH"})]


def test_partly_failed_start_batch_reports_both() -> None:
    out = Published()
    batches = BatchTracker(out)
    batches.starting(["i1", "i2", "i3"], "MA", "ref", {}, {})
    batches.instance_started("i1")
    batches.instance_failed("i2", "boom")
    batches.instance_gone("i3")  # died while starting
    assert [(t, d.get("count"), d.get("error")) for t, d in out] == [("actors_started", 1, None),
                                                                     ("actors_start_failed", None, "boom")]
    batches.start_failed("", "bad", {"x": "y"}, "no such file")
    assert out[-1] == ("actors_start_failed", {"public_key": "", "image_ref": "bad", "annotations": {"x": "y"},
                                               "error": "no such file", "host_id": ""})


def test_stop_batch_waits_for_its_instances() -> None:
    out = Published()
    batches = BatchTracker(out)
    batches.stopping(["i1", "i2"], "MA", 2, 1, {"k": "v"})
    batches.instance_gone("i1")
    assert out == []
    batches.instance_gone("i2")
    assert out == [("actors_stopped", {"public_key": "MA", "count": 2, "remaining": 1, "annotations": {"k": "v"},
                                       "host_id": ""})]
    batches.stopping([], "MB", 3, 0, {})  # nothing matched
    assert out[-1][1]["count"] == 3 and out[-1][1]["remaining"] == 0


def test_instances_halted_while_starting_are_neither_started_nor_failed() -> None:
    out = Published()
    batches = BatchTracker(out)
    batches.starting(["i1", "i2", "i3"], "MA", "ref", {}, {})
    batches.instance_started("i1")
    batches.instance_cancelled("i2")
    batches.instance_cancelled("i3")
    batches.instance_gone("i2")  # its exit, later: not a start failure
    assert [(t, d.get("count")) for t, d in out] == [("actors_started", 1)]
    batches.starting(["j1"], "MA", "ref", {}, {})
    batches.instance_cancelled("j1")  # nothing started, nothing failed: nothing to say
    assert len(out) == 1
