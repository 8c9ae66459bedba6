"""Typed control replies: a failure ack or an unreadable reply is a typed error, never a KeyError."""

from __future__ import annotations

import pytest

from hostcore.errors import ControlReplyInvalid, ControlRequestRefused
from hostcore.wire.control import (
    Ack,
    claims_reply,
    failure_ack,
    links_reply,
    parse_claims_reply,
    parse_links_reply,
    success_ack,
)
from hostcore.wire.linkdefs import LinkDefinition


def test_an_accepted_ack_passes_and_a_refused_one_raises_with_its_text() -> None:
    assert Ack.from_wire(success_ack()).raise_if_refused() == Ack(accepted=True)
    with pytest.raises(ControlRequestRefused) as err:
        Ack.from_wire(failure_ack("Host is busy")).raise_if_refused()
    assert err.value.error == "Host is busy" and err.value.wire == "Host is busy"


def test_claims_and_links_replies_round_trip() -> None:
    record = {"sub": "MA", "iss": "AI", "name": "echo", "caps": "", "rev": "1", "tags": "", "version": "0.1",
              "call_alias": ""}
    assert claims_reply([record]).startswith(b'{"claims":[{"sub":"MA"')
    assert parse_claims_reply(claims_reply([record, "junk"])) == [record]  # type: ignore[list-item]
    link = LinkDefinition(actor_id="MA", provider_id="VP", link_name="default", contract_id="c", values={"k": "v"})
    assert parse_links_reply(links_reply([link.to_map()])) == [link]


@pytest.mark.parametrize("parse", [parse_claims_reply, parse_links_reply])
def test_a_failure_ack_or_garbage_is_a_typed_error(parse: object) -> None:
    with pytest.raises(ControlRequestRefused) as err:
        parse(failure_ack("nope"), "wasmbus.ctl.x.get.links")  # type: ignore[operator]
    assert err.value.error == "nope"
    for garbage in (b"", b"[]", b'{"claims": 1, "links": 1}', b"\xff"):
        with pytest.raises(ControlReplyInvalid) as bad:
            parse(garbage, "wasmbus.ctl.x.get.links")  # type: ignore[operator]
        assert bad.value.subject == "wasmbus.ctl.x.get.links"


def test_a_links_entry_that_is_not_a_link_is_invalid() -> None:
    with pytest.raises(ControlReplyInvalid):
        parse_links_reply(b'{"links": [{"provider_id": "VP"}]}')
