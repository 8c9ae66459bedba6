"""What ActorSupervisor knows of each instance and of each start in flight.

These are also its records with HostSupervisor (hostcore/supervision.py `Remember`): a restarted
ActorSupervisor gets them back and adopts or replaces what they describe. Pickled by Thespian.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostcore.actors.placement import HOST
from hostcore.native.claims import ActorClaims
from hostcore.wire import cloudevents

__all__ = ["InstanceRecord", "InstanceTable", "PendingStart"]


@dataclass(slots=True, kw_only=True)
class InstanceRecord:
    instance_id: str
    address: Any
    claims: ActorClaims
    cwasm_path: Path
    image_ref: str
    annotations: dict[str, str]
    node: str = HOST  # or the worker id it was placed on
    # starting → running → stopping; or starting → failed, or starting → cancelled (halted before it
    # was announced: it leaves without an actor_stopped)
    state: str = "starting"
    pid: int = 0
    # forked by a template that died: not a child of ours, the host's subreaper reaps it
    adopted: bool = False

    @property
    def public_key(self) -> str:
        return self.claims.public_key

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running")

    def stopped_event(self) -> cloudevents.Event | None:
        if self.state not in ("running", "stopping"):
            return None  # never announced with actor_started
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


class InstanceTable:
    """ActorSupervisor's instances by id and by actor key, so that nothing done per instance
    (a start, an exit, a count for the metrics) scans every instance of the host."""

    def __init__(self) -> None:
        self._by_id: dict[str, InstanceRecord] = {}
        self._by_key: dict[str, dict[str, InstanceRecord]] = {}

    def add(self, inst: InstanceRecord) -> None:
        self._by_id[inst.instance_id] = inst
        self._by_key.setdefault(inst.public_key, {})[inst.instance_id] = inst

    def remove(self, inst: InstanceRecord) -> None:
        self._by_id.pop(inst.instance_id, None)
        of_key = self._by_key.get(inst.public_key, {})
        of_key.pop(inst.instance_id, None)
        if not of_key:
            self._by_key.pop(inst.public_key, None)

    def get(self, instance_id: str) -> InstanceRecord | None:
        return self._by_id.get(instance_id)

    def of_key(self, public_key: str) -> Iterator[InstanceRecord]:
        return iter(list(self._by_key.get(public_key, {}).values()))

    def values(self) -> Iterator[InstanceRecord]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._by_id
