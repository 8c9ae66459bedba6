"""InstanceTemplate's side of an instance's end (a mixin): halting the instances the supervisor
names (SIGTERM through the pidfd; an instance drains, then says `Stopped`), reporting each one gone
once (when it said `Stopped`, or when its pidfd says it ended) and reaping what it forked."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING

from thespian.actors import ActorExitRequest

from hostcore.actors.channel import frame
from hostcore.tree.messages import InstancesExited, ToInstances

if TYPE_CHECKING:
    from hostcore.actors.template import InstanceTemplate, _Child

__all__ = ["InstanceExits", "terminate"]

log = logging.getLogger(__name__)


class InstanceExits:
    """Mixin of InstanceTemplate."""

    def _to_instances(self: InstanceTemplate, msg: ToInstances) -> None:
        halt = isinstance(msg.message, ActorExitRequest)
        data = None if halt else frame(msg.message)
        waiting = {instance_id for _, instance_id in self.backlog}
        halted = set()
        for instance_id in msg.instance_ids:
            child = self.children.get(instance_id)
            if child is not None and halt:
                # The instance drains on SIGTERM; one still starting stops before it reports.
                child.halted = True
                terminate(child)
            elif child is not None and child.sock is not None:
                assert data is not None
                self._send_bytes(child, data)
            elif child is not None:
                child.mail.append(msg.message)
            elif instance_id in waiting and halt:
                halted.add(instance_id)  # never forked: gone at once
                self._exited(instance_id)
            elif instance_id in waiting:
                self.mail.setdefault(instance_id, []).append(msg.message)
        if halted:
            self.backlog = collections.deque(item for item in self.backlog if item[1] not in halted)
            for instance_id in halted:
                self.mail.pop(instance_id, None)

    def _stopped(self: InstanceTemplate, child: _Child) -> None:
        """`child` was halted and has let go of everything: reported gone now. Its process, whose
        memory the kernel is still returning, is reaped when its pidfd says it has ended."""
        if child.spare or not child.halted or child.stopped:
            return
        child.stopped = True
        self._disconnect(child)
        self._forget(child)

    def _gone(self: InstanceTemplate, child: _Child) -> None:
        self._disconnect(child)
        self.by_fd.pop(child.pidfd, None)
        self._unwatch(child.pidfd)
        os.close(child.pidfd)
        if child.forked:  # a returned one is reaped by the host's subreaper
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(child.pid, 0)
                if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
                    log.warning("instance did not stop in time; it was ended",
                                extra={"instance_id": child.instance_id})
        if not child.stopped:
            self._forget(child)

    def _forget(self: InstanceTemplate, child: _Child) -> None:
        """`child` is no instance of ours any more; the supervisor hears it at the end of this turn."""
        self.children.pop(child.instance_id, None)
        self._forget_spare(child)
        if child.spare:  # nobody else knows of it
            return
        self.starting.discard(child.instance_id)
        self._exited(child.instance_id)
        self._fork_more()

    def _exited(self: InstanceTemplate, instance_id: str) -> None:
        last = self.reports[-1] if self.reports else None
        if isinstance(last, InstancesExited):
            self.reports[-1] = InstancesExited(instance_ids=(*last.instance_ids, instance_id))
        else:
            self.reports.append(InstancesExited(instance_ids=(instance_id,)))

    def _stop(self: InstanceTemplate) -> None:
        """The supervisor is stopping (a crash kills us without this): so are its instances.
        They end as orphans of the host's subreaper, which reaps them."""
        log.debug("instance template stopping", extra={"instances": len(self.children)})
        for child in self.children.values():
            terminate(child)
        if self.listener is not None:
            self.listener.close()
        self.running = False


def terminate(child: _Child) -> None:
    try:
        signal.pidfd_send_signal(child.pidfd, signal.SIGTERM)
    except ProcessLookupError:
        pass  # gone already: its pidfd says so
    except OSError as err:
        log.error("could not halt instance", extra={"instance_id": child.instance_id, "error": str(err)})
