from hostcore.actors.placement import (
    HOST,
    WorkerNode,
    capability_check,
    choose_node,
    requirements_for,
    worker_from_capabilities,
)
from hostcore.config import Placement


def workers(*ids: str, draining: tuple[str, ...] = ()) -> list[WorkerNode]:
    return [WorkerNode(worker_id=i, admin_address=None, labels={}, draining=i in draining) for i in ids]


def test_local_always_picks_the_host() -> None:
    assert choose_node(Placement.LOCAL, workers("a"), {}, {}) == HOST


def test_workers_picks_the_least_loaded_worker_and_falls_back_to_the_host() -> None:
    assert choose_node(Placement.WORKERS, workers("b", "a"), {}, {}) == "a"  # ties: lowest id
    assert choose_node(Placement.WORKERS, workers("a", "b"), {"a": 1}, {"a": 1}) == "b"
    # This actor's count decides first, the node's total second.
    assert choose_node(Placement.WORKERS, workers("a", "b"), {"a": 5, "b": 1}, {"b": 1}) == "a"
    assert choose_node(Placement.WORKERS, workers("a", "b"), {"a": 5, "b": 1}, {}) == "b"
    assert choose_node(Placement.WORKERS, workers("a", draining=("a",)), {}, {}) == HOST
    assert choose_node(Placement.WORKERS, [], {HOST: 9}, {HOST: 9}) == HOST


def test_spread_counts_the_host_as_a_node() -> None:
    assert choose_node(Placement.SPREAD, workers("a"), {}, {}) == HOST  # ties: the host first
    assert choose_node(Placement.SPREAD, workers("a"), {HOST: 1}, {HOST: 1}) == "a"
    assert choose_node(Placement.SPREAD, workers("a", draining=("a",)), {HOST: 3}, {HOST: 3}) == HOST


def test_requirements_pin_an_instance_to_one_worker() -> None:
    assert requirements_for(HOST) is None
    reqs = requirements_for("w1")
    assert capability_check({"hostcore.worker_id": "w1"}, reqs)
    assert not capability_check({"hostcore.worker_id": "w2"}, reqs)
    assert not capability_check({"hostcore.host": True}, reqs)
    assert capability_check({"hostcore.host": True}, None) and capability_check({}, {})


def test_only_worker_admins_are_workers() -> None:
    caps = {"hostcore.worker": True, "hostcore.worker_id": "w1", "hostcore.labels": {"zone": "a"}}
    worker = worker_from_capabilities("addr", caps)
    assert worker is not None and worker.worker_id == "w1" and worker.labels == {"zone": "a"}
    assert worker_from_capabilities("addr", {"hostcore.host": True, "hostcore.host_id": "N"}) is None
    assert worker_from_capabilities("addr", {"hostcore.worker": True}) is None
