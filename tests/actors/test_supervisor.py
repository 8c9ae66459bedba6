"""The pure decisions of the ActorSupervisor (hostcore/actors/supervisor.py): which instances a
stop request with annotations selects (protocol.md §11.3), and what a scale request does."""

from __future__ import annotations

import pytest

from hostcore.actors.supervisor import matches_annotations, scale_diff

MANAGED = {"wasmcloud.dev/appspec": "echo", "wasmcloud.dev/managed-by": "wadm"}


@pytest.mark.parametrize(("wanted", "have", "matches"), [
    ({}, {}, True),  # an empty request matches every instance ...
    ({}, MANAGED, True),  # ... annotated or not
    ({"wasmcloud.dev/appspec": "echo"}, MANAGED, True),  # a subset is enough
    (MANAGED, MANAGED, True),
    ({"wasmcloud.dev/appspec": "other"}, MANAGED, False),  # same key, other value
    ({**MANAGED, "extra": "x"}, MANAGED, False),  # more than the instance has
    ({"wasmcloud.dev/appspec": "echo"}, {}, False),  # an unannotated instance is not selected
    ({"k": ""}, {}, False),  # an empty value is still a value to match, not "any"
    ({"k": ""}, {"k": ""}, True),
])
def test_requested_annotations_must_be_a_subset_of_the_instances(
        wanted: dict[str, str], have: dict[str, str], matches: bool) -> None:
    assert matches_annotations(wanted, have) is matches


def test_selecting_instances_by_annotations() -> None:
    instances = {"a": MANAGED, "b": {}, "c": {"wasmcloud.dev/appspec": "echo"}, "d": {"wasmcloud.dev/appspec": "x"}}
    select = lambda wanted: sorted(i for i, have in instances.items() if matches_annotations(wanted, have))  # noqa: E731
    assert select({}) == ["a", "b", "c", "d"]
    assert select({"wasmcloud.dev/appspec": "echo"}) == ["a", "c"]
    assert select(MANAGED) == ["a"]


@pytest.mark.parametrize(("current", "desired", "diff"), [
    (0, 0, 0), (3, 3, 0),  # nothing to do
    (3, 1, 2), (2, 0, 2),  # positive: stop that many (scale to 0 stops all)
    (0, 2, -2), (1, 4, -3),  # negative: start that many
])
def test_scale_diff_says_how_many_to_stop_or_start(current: int, desired: int, diff: int) -> None:
    assert scale_diff(current, desired) == diff
