import json

import pytest

from hostcore.wire.control import (
    Ack,
    LaunchActorRequest,
    ScaleRequest,
    StopActorRequest,
    StopHostRequest,
    failure_ack,
    success_ack,
)
from hostcore.errors import ControlRequestError


def test_acks_have_the_wire_shape() -> None:
    assert json.loads(success_ack()) == {"accepted": True, "error": ""}
    assert json.loads(failure_ack("nope")) == {"accepted": False, "error": "nope"}
    assert Ack.from_wire(failure_ack("x")) == Ack(accepted=False, error="x")


def test_scale_requires_fields_but_allows_an_empty_ref() -> None:
    req = ScaleRequest.from_wire(b'{"actor_id": "M1", "actor_ref": "", "count": 0}')
    assert (req.actor_id, req.actor_ref, req.count) == ("M1", "", 0)
    assert ScaleRequest.from_wire(req.to_wire()) == req
    for bad in (b"{", b"[]", b'{"actor_id": "M1", "count": 1}', b'{"actor_id": "M1", "actor_ref": null, "count": 1}',
                b'{"actor_id": "M1", "actor_ref": "", "count": "3"}', b'{"actor_id": false, "actor_ref": "", "count": 1}'):
        with pytest.raises(ControlRequestError) as err:
            ScaleRequest.from_wire(bad)
        assert err.value.wire == "Invalid scale actor JSON request"


def test_launch_defaults_count_and_checks_annotations() -> None:
    req = LaunchActorRequest.from_wire(b'{"actor_ref": "r", "annotations": null}')
    assert req.count == 1 and req.annotations == {}
    with pytest.raises(ControlRequestError, match="Invalid launch actor JSON request"):
        LaunchActorRequest.from_wire(b'{"actor_ref": "r", "annotations": {"a": 1}}')


def test_stop_actor_accepts_count_zero() -> None:
    assert StopActorRequest.from_wire(b'{"actor_ref": "M1", "count": 0}').count == 0
    with pytest.raises(ControlRequestError, match="Invalid request to stop actor"):
        StopActorRequest.from_wire(b'{"actor_ref": "M1"}')


def test_stop_host_tolerates_an_empty_body_but_not_garbage() -> None:
    assert StopHostRequest.from_wire(b"").host_id == ""
    with pytest.raises(ControlRequestError, match="Unable to parse stop host command"):
        StopHostRequest.from_wire(b"{oops")
