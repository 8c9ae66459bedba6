"""LatticeView.apply (hostcore/control/lattice.py): the in-memory lattice data built from the KV
bucket's entries (protocol.md §12.2), with real claims records and link definitions."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import LOOPING_WAT, signed_wat_actor

from hostcore.control.lattice import LatticeView
from hostcore.wire.linkdefs import LinkDefinition
from hostcore.native.claims import extract_claims

PROVIDER = "VAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE"


def claims_record(alias: str | None = None) -> dict[str, str | None]:
    module, _ = signed_wat_actor(LOOPING_WAT, "actor", call_alias=alias)
    return extract_claims(module).to_cache_record()


def put_claims(view: LatticeView, record: dict[str, str | None]) -> bool:
    return view.apply(f"CLAIMS_{record['sub']}", json.dumps(record).encode(), False)


def a_link(actor: str = "MACTOR", name: str = "default") -> LinkDefinition:
    return LinkDefinition(actor_id=actor, provider_id=PROVIDER, link_name=name, contract_id="wasmcloud:keyvalue",
                          values={"URL": "redis://127.0.0.1/"})


def test_links_are_added_replaced_and_deleted() -> None:
    view = LatticeView()
    link = a_link()
    assert view.apply(f"LINKDEF_{link.id}", link.to_json(), False) is True
    assert view.links == {link.id: link}
    changed = dataclasses.replace(link, values={"URL": "redis://other/"})
    assert view.apply(f"LINKDEF_{link.id}", changed.to_json(), False) is True
    assert view.links[link.id].values == {"URL": "redis://other/"}
    assert view.snapshot().links == (changed,)
    assert view.apply(f"LINKDEF_{link.id}", b"", True) is True
    assert view.links == {}
    assert view.apply(f"LINKDEF_{link.id}", b"", True) is False  # deleting what is not there changes nothing


@pytest.mark.parametrize("value", [b"not json", b"[]", b"{}", json.dumps({"actor_id": "MACTOR"}).encode()])
def test_a_malformed_link_record_is_ignored_and_logged(value: bytes, caplog: pytest.LogCaptureFixture) -> None:
    view = LatticeView()
    link = a_link()
    view.apply(f"LINKDEF_{link.id}", link.to_json(), False)
    assert view.apply("LINKDEF_broken", value, False) is False
    assert view.links == {link.id: link}  # the rest of the view is untouched
    assert [r.getMessage() for r in caplog.records] == ["ignoring a malformed link record"]


def test_an_alias_belongs_to_its_first_writer() -> None:
    view = LatticeView()
    first, second = claims_record("tests/callee"), claims_record("tests/callee")
    assert put_claims(view, first) is True
    assert put_claims(view, second) is False  # the alias is taken: instances need not hear of it
    assert view.aliases == {"tests/callee": first["sub"]}
    assert set(view.claims) == {first["sub"], second["sub"]}
    assert put_claims(view, first) is False  # the same record again: nothing new
    assert view.snapshot().aliases == {"tests/callee": first["sub"]}


@pytest.mark.parametrize("alias", [None, "x"])
def test_empty_and_one_character_aliases_are_not_registered(alias: str | None) -> None:
    view = LatticeView()
    assert put_claims(view, claims_record(alias)) is False
    assert view.aliases == {}


def test_claims_matter_only_when_policy_needs_them() -> None:
    plain, policy = LatticeView(), LatticeView(claims_matter=True)
    record = claims_record()
    assert put_claims(plain, record) is False
    assert put_claims(policy, record) is True
    assert plain.snapshot().claims == {}
    assert policy.snapshot().claims == {record["sub"]: record}


def test_deleted_claims_leave_the_view_and_change_no_route() -> None:
    view = LatticeView(claims_matter=True)
    record = claims_record()
    put_claims(view, record)
    assert view.apply(f"CLAIMS_{record['sub']}", b"", True) is False
    assert view.claims == {}


def test_a_claims_record_that_is_not_json_is_ignored() -> None:
    view = LatticeView(claims_matter=True)
    assert view.apply("CLAIMS_MBROKEN", b"{not json", False) is False
    assert view.claims == {}


@pytest.mark.parametrize("value", [b"[1]", b"null", b"{not json", json.dumps({"call_alias": 5}).encode()])
def test_a_claims_value_that_is_not_a_record_is_ignored(value: bytes) -> None:
    # Another host's bad write must not take down the LatticeCache (it would crash again on replay).
    view = LatticeView()
    assert view.apply("CLAIMS_MBROKEN", value, False) is False
    assert view.claims == {} and view.aliases == {}


def test_refmaps_are_kept_and_malformed_ones_ignored() -> None:
    view = LatticeView()
    entry = {"oci_url": "localhost:5000/echo:0.3.4", "public_key": "MECHO"}
    assert view.apply("REFMAP_abc", json.dumps(entry).encode(), False) is False  # instances do not route by refs
    for bad in (b"not json", b"[]", json.dumps({"oci_url": "x"}).encode()):
        assert view.apply("REFMAP_bad", bad, False) is False
    assert view.refmaps == {"localhost:5000/echo:0.3.4": "MECHO"}


def test_unknown_keys_change_nothing() -> None:
    view = LatticeView(claims_matter=True)
    assert view.apply("SOMETHING_else", b"{}", False) is False
    assert (view.links, view.claims, view.aliases, view.refmaps) == ({}, {}, {}, {})
