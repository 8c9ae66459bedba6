"""Thespian's per-hop message descriptions (hostcore/thespian_fanout.py): a hostcore message is
described by its type, never rendered whole."""

from __future__ import annotations

from dataclasses import dataclass

from thespian.system.transport import ReceiveEnvelope, TransmitIntent

from hostcore.thespian_fanout import prepare_for_fanout
from hostcore.tree.messages import InstanceInfo, Inventory


@dataclass(frozen=True)
class _Counted:
    rendered = [0]

    def __repr__(self) -> str:
        self.rendered[0] += 1
        return "_Counted()"


def test_hostcore_messages_are_described_by_type_on_every_hop() -> None:
    prepare_for_fanout()
    big = Inventory(request_id="r", instances=tuple(
        InstanceInfo(public_key="MA", instance_id=str(i), image_ref="ref", name="n", revision=0,
                     annotations={"x": "y" * 100}) for i in range(500)))
    assert "<Inventory>" in ReceiveEnvelope("sender", big).identify()
    assert "<Inventory>" in TransmitIntent("target", big).identify()
    _Counted.__module__ = "hostcore.tests"  # what makes it one of ours
    ReceiveEnvelope("sender", _Counted()).identify()
    TransmitIntent("target", _Counted()).identify()
    assert _Counted.rendered == [0]


def test_other_messages_keep_their_short_text() -> None:
    prepare_for_fanout()
    assert "hello" in ReceiveEnvelope("sender", "hello").identify()
    assert ("x" * 150 + "...") in TransmitIntent("target", "x" * 400).identify()
