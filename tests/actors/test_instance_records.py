"""ActorSupervisor's record keeping (hostcore/actors/records.py)."""

from __future__ import annotations

from pathlib import Path

from hostcore.actors.records import InstanceRecord, InstanceTable


class Claims:
    def __init__(self, public_key: str) -> None:
        self.public_key = public_key


def record(instance_id: str, key: str, state: str = "starting") -> InstanceRecord:
    return InstanceRecord(instance_id=instance_id, address=None, claims=Claims(key), cwasm_path=Path("m.cwasm"),  # type: ignore[arg-type]
                          image_ref="ref", annotations={}, state=state)


def test_the_table_finds_instances_by_id_and_by_key() -> None:
    table = InstanceTable()
    a1, a2, b1 = record("a1", "MA"), record("a2", "MA", "running"), record("b1", "MB")
    for inst in (a1, a2, b1):
        table.add(inst)
    assert len(table) == 3 and "a2" in table and table.get("b1") is b1
    assert [i.instance_id for i in table.of_key("MA")] == ["a1", "a2"]
    table.remove(a1)
    assert table.get("a1") is None and [i.instance_id for i in table.of_key("MA")] == ["a2"]
    table.remove(a2)
    assert list(table.of_key("MA")) == [] and [i.instance_id for i in table.values()] == ["b1"]
    table.remove(a2)  # twice: nothing happens


def test_only_an_announced_instance_has_a_stopped_event() -> None:
    assert record("i", "MA", "running").stopped_event() is not None
    assert record("i", "MA", "stopping").stopped_event() is not None
    for never_announced in ("starting", "cancelled", "failed"):
        assert record("i", "MA", never_announced).stopped_event() is None
