"""Forks below `guard_forks` share their parent's heap: what the parent held at the fork is
frozen (gc.freeze), so a child's collections never write to it (and never copy its pages)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, os, sys, weakref
from hostcore.procutil import guard_forks

class Marker:
    pass

guard_forks()
inherited = [Marker() for _ in range(1000)]  # tracked objects the parent holds at the fork
garbage = Marker()
garbage.me = garbage  # a cycle: collected before the freeze, not frozen for good
dead = weakref.ref(garbage)
del garbage
child = os.fork()
if child == 0:
    gc.collect()
    seen = sum(isinstance(o, Marker) for o in gc.get_objects())
    os.write(1, f"{seen} {gc.get_freeze_count()}\\n".encode())
    os._exit(0)
os.waitpid(child, 0)
print(dead() is None, flush=True)
"""


def test_a_guarded_fork_leaves_the_inherited_heap_out_of_its_collections() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    child_line, parent_line = out.stdout.splitlines()
    seen_in_child, frozen = map(int, child_line.split())
    assert seen_in_child == 0  # the child's collector does not walk (or write) the inherited objects
    assert frozen >= 1000
    assert parent_line == "True"  # the parent's cyclic garbage was collected, not frozen
