"""The InstanceTemplate's process, as TemplateLink starts it (hostcore/actors/template_link.py):
`python -c ... SOCKET_FD SUPERVISOR_PID LAUNCHER_PID`. It sets up what a process of the host's tree
inherits when it is forked (dying with its parent, the launcher to watch, the fork guard), then
runs the template until the supervisor says ActorExitRequest or goes away."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from typing import NoReturn

import setproctitle

from hostcore.actors.template import InstanceTemplate
from hostcore.actors.template_link import TEMPLATE_TITLE
from hostcore.procutil import guard_forks, set_launcher, set_pdeathsig

__all__ = ["main"]

log = logging.getLogger(__name__)


def main() -> NoReturn:
    fd, supervisor, launcher = (int(arg) for arg in sys.argv[1:4])
    set_pdeathsig()  # dies with the supervisor, as any process of the tree with its parent
    if os.getppid() != supervisor:
        os._exit(1)  # it died while we were starting
    set_launcher(launcher)
    guard_forks()  # each instance dies with us until it has said Hello; our heap frozen before each fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the host stops us in order
    setproctitle.setproctitle(f"{TEMPLATE_TITLE}{supervisor}")
    code = 1
    try:
        InstanceTemplate(socket.socket(fileno=fd)).serve()
        code = 0
    except BaseException:  # noqa: BLE001 -- the process ends here either way; say why
        with contextlib.suppress(Exception):
            log.exception("instance template failed")
    finally:
        logging.shutdown()
        os._exit(code)
