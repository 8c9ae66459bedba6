"""Messages that cross processes pickle to what they were."""

from __future__ import annotations

import pickle

from hostcore.tree.messages import InstanceInfo, Inventory


def test_an_inventory_pickles_to_the_same_instances() -> None:
    inv = Inventory(request_id="r-1", instances=tuple(
        InstanceInfo(public_key=f"M{i % 3}", instance_id=f"id-{i}", image_ref="ref", name="echo", revision=i,
                     annotations={"team": str(i)} if i % 2 else {})
        for i in range(50)))
    back = pickle.loads(pickle.dumps(inv, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == inv
    assert all(type(i) is InstanceInfo for i in back.instances)
    assert back.instances[7].annotations == {"team": "7"} and back.instances[7].revision == 7
    assert pickle.loads(pickle.dumps(Inventory(request_id="", instances=()))) == Inventory(request_id="", instances=())
