"""What an instance forked by the InstanceTemplate inherits instead of receiving it pickled.

Thespian's `createActor` forks the calling process there and then, so whatever the template puts
here just before it is in the child's memory as the child starts: its StartInstance, the Engine
and the deserialized Module. The child pays neither a 2 KB unpickle (HostConfig re-derives two key
pairs) nor a module load, and the module's pages stay shared with the template.
"""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from hostcore.tree.messages import StartInstance

__all__ = ["Inheritance", "bequeath", "inherit"]


@dataclass(frozen=True, slots=True)
class Inheritance:
    start: StartInstance
    engine: wasmtime.Engine
    module: wasmtime.Module


_slot: Inheritance | None = None


def bequeath(inheritance: Inheritance | None) -> None:
    """In the template, right before it forks the instance `inheritance.start` describes."""
    global _slot
    _slot = inheritance


def inherit(instance_id: str) -> Inheritance:
    """In the forked instance. Raises LookupError if this process was not forked for `instance_id`."""
    if _slot is None or _slot.start.instance_id != instance_id:
        raise LookupError(f"this process was not forked to run instance {instance_id}")
    return _slot
