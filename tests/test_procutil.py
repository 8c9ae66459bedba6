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

# A name longer than the kernel keeps (15 characters) still matches.
named = [titled("ActorSpare MBCFOPM6"), titled("ActorModule 1234"), titled("InstanceTemplate 42")]
other = titled("LatticeCache ActorAddr")
proc = multiprocessing.get_context("fork").Process(target=setproctitle.setproctitle, args=("ActorSupervisor x",))
proc.start()
assert wait_for(lambda: all(state(p) == "Z" for p in [*named, other, proc.pid]), 10), "children did not exit"
print(sorted(reap_dead_children(("ActorSpare ", "ActorModule ", "InstanceTemplate "))) == sorted(named))
print([state(p) for p in named], state(other))
print(proc.is_alive(), proc.exitcode)
os.waitpid(other, 0)
"""


def test_only_the_named_dead_children_are_reaped() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    reaped_named, states, mp_child = out.stdout.splitlines()
    assert reaped_named == "True"
    assert states == "['', '', ''] Z"  # the named ones are gone; the other is still a zombie
    assert mp_child == "False 0"  # multiprocessing still saw its child's exit


def test_close_fds_closes_exactly_the_given_descriptors() -> None:
    import os

    from hostcore.procutil import close_fds

    pipes = [os.pipe() for _ in range(6)]
    fds = [fd for pair in pipes for fd in pair]
    doomed = fds[0:5] + fds[7:9] + fds[11:]  # runs of consecutive numbers, with gaps between them
    close_fds([*doomed, doomed[0]])  # a duplicate, and closing twice, are harmless
    try:
        for fd in fds:
            try:
                os.fstat(fd)
                still_open = True
            except OSError:
                still_open = False
            assert still_open == (fd not in doomed), fd
    finally:
        close_fds(fds)


KILL_SCRIPT = """
import os, signal, sys
from hostcore.procutil import default_signal_actions
heard = []
signal.signal(signal.SIGUSR1, lambda *a: heard.append("usr1"))
signal.signal(signal.SIGUSR2, lambda *a: heard.append("usr2"))
pid = os.fork()
if pid == 0:
    default_signal_actions([signal.SIGUSR1])
    os.kill(os.getpid(), signal.SIGUSR2)  # still its Python handler
    if heard != ["usr2"]:
        os._exit(3)
    os.kill(os.getpid(), signal.SIGUSR1)  # the default action: the child ends here
    os._exit(4)
_, status = os.waitpid(pid, 0)
print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGUSR1, os.WEXITSTATUS(status) if os.WIFEXITED(status) else "")
"""


def test_default_signal_actions_gives_the_kernel_default_back() -> None:
    out = subprocess.run([sys.executable, "-c", KILL_SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True"], out.stdout + out.stderr
