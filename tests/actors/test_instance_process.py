"""hostcore.actors.instance_process: an instance process ends with its host's launcher, including
a launcher that was already gone when the instance started; and the template's end of the channel
closing means different things to a running instance and to one that is ending."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hostcore import procutil
from hostcore.actors.instance_process import _Instance, watch_launcher


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


async def _template_closes(stopping: bool) -> _Instance:
    """An instance whose template's end of the channel closes, while it runs or once it is ending
    (the template lets go of an instance that said Stopped)."""
    instance = _Instance(SimpleNamespace(instance_id="i-1"), spare=False)  # type: ignore[arg-type]
    instance.stopping = asyncio.Event()
    if stopping:
        instance.stopping.set()
    instance._rejoin = asyncio.Event().wait  # type: ignore[method-assign]  # no successor to look for here
    ours, template = socket.socketpair()
    ours.setblocking(False)
    instance.control = ours
    asyncio.get_running_loop().add_reader(ours.fileno(), instance._readable)
    template.close()
    while instance.control is not None:
        await asyncio.sleep(0.01)
    return instance


async def test_an_ending_instance_takes_the_closed_channel_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hostcore.actors.instance_process"):
        instance = await _template_closes(stopping=True)
    assert instance.rejoining is None
    assert not caplog.records


async def test_a_running_instance_looks_for_the_next_template(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hostcore.actors.instance_process"):
        instance = await _template_closes(stopping=False)
    assert instance.rejoining is not None
    instance.rejoining.cancel()
    assert [r.getMessage() for r in caplog.records] == ["instance template gone; waiting for its successor"]



_THREADS = """
import threading
from hostcore.actors.instance_process import _single_threaded
release = threading.Event()
waiting = threading.Thread(target=release.wait)
waiting.start()
print(_single_threaded(0.05))  # a thread that stays: never single-threaded
release.set()
waiting.join()
print(_single_threaded(1.0))
# A joined thread may still be listed by the kernel for a few ms (about 1 in 100 here): the check
# must wait for it, or the template would warn, and fork, while it is there.
for _ in range(300):
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    if not _single_threaded(1.0):
        print("a joined thread stayed")
"""


def test_the_template_waits_for_a_joined_thread_to_be_gone_before_it_forks() -> None:
    out = subprocess.run([sys.executable, "-c", _THREADS], capture_output=True, text=True, check=True, timeout=60,
                         cwd=Path(__file__).parents[2])  # this checkout's hostcore
    assert out.stdout.split() == ["False", "True"], out.stdout
