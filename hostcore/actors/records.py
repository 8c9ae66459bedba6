"""What ActorSupervisor knows of each instance and of each start in flight.

These are also its records with HostSupervisor (hostcore/supervision.py `Remember`): a restarted
ActorSupervisor gets them back and adopts or replaces what they describe. Pickled by Thespian.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostcore.actors.placement import HOST
from hostcore.native.claims import ActorClaims
from hostcore.wire import cloudevents

__all__ = ["InstanceRecord", "PendingStart"]


@dataclass(slots=True, kw_only=True)
class InstanceRecord:
    instance_id: str
    address: Any
    claims: ActorClaims
    cwasm_path: Path
    image_ref: str
    annotations: dict[str, str]
    node: str = HOST  # or the worker id it was placed on
    state: str = "starting"  # starting → running → stopping; or failed
    pid: int = 0
    adopted: bool = False  # taken over from a supervisor that died: not our Thespian child

    @property
    def public_key(self) -> str:
        return self.claims.public_key

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running")

    def stopped_event(self) -> cloudevents.Event:
        return cloudevents.actor_stopped(public_key=self.public_key, instance_id=self.instance_id,
                                         annotations=self.annotations)


@dataclass(slots=True, kw_only=True)
class PendingStart:
    """A start waiting for the NativeWorker (or policy): `expect_key` is set for scale."""

    key: str  # the request id to the NativeWorker
    actor_ref: str
    count: int
    annotations: dict[str, str]
    expect_key: str = ""
