"""hostcore.actors.instance_process.watch_launcher: an instance process ends with its host's
launcher, including a launcher that was already gone when the instance started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from hostcore import procutil
from hostcore.actors.instance_process import watch_launcher


def _exit_code_with_launcher(launcher: int, kill: subprocess.Popen[bytes] | None = None) -> int:
    """Fork a child that watches `launcher` and runs its loop for 2 s, exiting 0 if it is still
    there after that. `kill`: the launcher's process, killed while the child runs."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            procutil.set_launcher(launcher)
            loop = asyncio.new_event_loop()
            watch_launcher(loop)
            os.write(ready_w, b"x")
            loop.run_until_complete(asyncio.sleep(2))
        finally:
            os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)  # b"" if the child ended first
    os.close(ready_r)
    if kill is not None:
        kill.kill()
        kill.wait()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_an_instance_ends_at_once_when_its_launcher_is_already_gone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert _exit_code_with_launcher(gone.pid) == 1


def test_an_instance_ends_when_its_launcher_dies_and_not_before() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _exit_code_with_launcher(launcher.pid) == 0  # alive throughout: the instance stays
        assert _exit_code_with_launcher(launcher.pid, kill=launcher) == 1
    finally:
        launcher.kill()
        launcher.wait()
