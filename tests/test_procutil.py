"""`reap_dead_children`: a subreaper collects the dead children it names, and only those, so a
multiprocessing child's exit is still seen by `Process.is_alive`."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import multiprocessing, os, setproctitle
from hostcore.procutil import reap_dead_children, wait_for

def titled(title):
    pid = os.fork()
    if pid == 0:
        setproctitle.setproctitle(title)
        os._exit(0)
    return pid

def state(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0]
    except OSError:
        return ""

named = [titled("ActorSpare MBCFOPM6"), titled("ActorModule 1234")]
other = titled("InstanceTemplate ActorAddr")
proc = multiprocessing.get_context("fork").Process(target=setproctitle.setproctitle, args=("ActorSupervisor x",))
proc.start()
assert wait_for(lambda: all(state(p) == "Z" for p in [*named, other, proc.pid]), 10), "children did not exit"
print(sorted(reap_dead_children(("ActorSpare ", "ActorModule "))) == sorted(named))
print([state(p) for p in named], state(other))
print(proc.is_alive(), proc.exitcode)
os.waitpid(other, 0)
"""


def test_only_the_named_dead_children_are_reaped() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    reaped_named, states, mp_child = out.stdout.splitlines()
    assert reaped_named == "True"
    assert states == "['', ''] Z"  # the named ones are gone; the other is still a zombie
    assert mp_child == "False 0"  # multiprocessing still saw its child's exit
