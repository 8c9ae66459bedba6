"""InstanceTemplate: the process that forks this host's actor instances.

Each instance is its own OS process, and forking is how it gets one. Forked from the
ActorSupervisor, every instance paid for the supervisor's heap: the fork copied its page tables,
the supervisor was busy forking instead of answering, and the child's first garbage collection
wrote the header of every object it had inherited, which copied ~10 MB of pages per instance.
The template is forked once from the supervisor while it is still small; it freezes its heap
(`gc.freeze()`, so no child's collector ever touches those objects) and holds the Engine and each
module deserialized, so a forked instance shares all of that and only pays for its own state
(hostcore/actors/inheritance.py). It runs no thread and compiles nothing, so forking it is safe.

The template is each local instance's Thespian parent: it hears their starts and exits and passes
them on to the ActorSupervisor, which keeps every record and decides everything else. Instances
on workers are not forked here (ActorSupervisor creates them where placement says).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import gc
import logging
import os
import resource
import signal
from pathlib import Path
from typing import Any

import wasmtime
from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from hostcore.actors.inheritance import Inheritance, bequeath
from hostcore.actors.instance import ActorModule
from hostcore.config import HostConfig
from hostcore.errors import HostcoreError
from hostcore.native.wasm import load_module, new_engine
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import pidfd_open
from hostcore.tree.messages import (
    ForkInstances,
    InstanceSpec,
    InitTemplate,
    InstancesExited,
    InstanceFailed,
    InstanceStarted,
    LatticeSnapshot,
    ModuleSwapped,
    StartForked,
    StartInstance,
    ToInstances,
)

__all__ = ["InstanceTemplate"]

log = logging.getLogger(__name__)

# Instances starting at once: one per core. Measured with bench/scale.py at N = 100 on 2 cores,
# one per core started them fastest and with the least CPU (twice and four times that: +10 % time).
STARTING_WINDOW = os.cpu_count() or 1
_NOW = dt.timedelta(0)


class InstanceTemplate(ActorTypeDispatcher):  # type: ignore[misc]
    """Forks ActorModules on ActorSupervisor's ForkInstances, at most STARTING_WINDOW starting at a
    time; passes their starts and (batched) exits on; delivers ToInstances."""

    def __init__(self) -> None:
        super().__init__()
        self.supervisor: Any = None
        self.config: HostConfig | None = None
        self.snapshot = LatticeSnapshot()
        self.engine: wasmtime.Engine | None = None
        self.modules: dict[Path, wasmtime.Module] = {}
        # Thespian addresses are not hashable. A child's address is known by its string once it
        # has reported (the address it sends from is the one its exit names); until then it is
        # only the placeholder createActor returned, found by comparison among the few starting.
        self.starting: dict[str, Any] = {}  # instance id → createActor's address
        self.running: dict[str, tuple[str, Any]] = {}  # str(address) → (instance id, address)
        self.backlog: collections.deque[tuple[InstanceSpec, str]] = collections.deque()  # still to fork
        self.mail: dict[str, list[Any]] = {}  # messages for instances still in the backlog
        self.exited: list[str] = []  # not yet reported
        self.pidfds: dict[str, int] = {}  # of the running instances, to halt them by signal

    def receiveMsg_InitTemplate(self, msg: InitTemplate, sender: Any) -> None:
        set_pdeathsig()
        # A socket or two and a pidfd per instance: hundreds of instances pass a 1024 soft limit.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.supervisor, self.config, self.snapshot = sender, msg.config, msg.snapshot
        self.engine = new_engine()
        gc.freeze()

    def receiveMsg_LatticeSnapshot(self, msg: LatticeSnapshot, sender: Any) -> None:
        self.snapshot = msg
        for address in self._children():
            self.send(address, msg)

    def receiveMsg_ForkInstances(self, msg: ForkInstances, sender: Any) -> None:
        self.backlog.extend((msg.spec, instance_id) for instance_id in msg.instance_ids)
        self._fork_more()

    def _fork_more(self) -> None:
        """Fork while fewer than STARTING_WINDOW are starting. All at once, every start would share
        the cores with all the others and none would be done before the last; this way they finish
        in order, the first within one start's time, and the total is no longer."""
        while self.backlog and len(self.starting) < STARTING_WINDOW:
            spec, instance_id = self.backlog.popleft()
            self._fork(spec, instance_id)

    def _fork(self, spec: InstanceSpec, instance_id: str) -> None:
        assert self.config is not None and self.engine is not None
        try:
            module = self._module(spec.cwasm_path)
        except HostcoreError as err:
            self.send(self.supervisor, InstanceFailed(instance_id=instance_id, error=err.wire))
            self._exited(instance_id)
            return
        # Whatever this process allocated since the last fork is shared with the child too.
        gc.freeze()
        bequeath(Inheritance(StartInstance(
            config=self.config, claims=spec.claims, cwasm_path=spec.cwasm_path, image_ref=spec.image_ref,
            instance_id=instance_id, annotations=spec.annotations, snapshot=self.snapshot),
            self.engine, module))
        address = self.createActor(ActorModule)  # forks here, with the inheritance in place
        bequeath(None)
        self.starting[instance_id] = address
        self.send(address, StartForked(instance_id=instance_id))
        for message in self.mail.pop(instance_id, ()):
            self.send(address, message)

    def _module(self, cwasm_path: Path) -> wasmtime.Module:
        module = self.modules.get(cwasm_path)
        if module is None:
            assert self.engine is not None
            module = self.modules[cwasm_path] = load_module(self.engine, cwasm_path)
        return module

    def receiveMsg_InstanceStarted(self, msg: InstanceStarted, sender: Any) -> None:
        if self.starting.pop(msg.instance_id, None) is not None:
            self.running[str(sender)] = (msg.instance_id, sender)
            fd = pidfd_open(msg.pid)
            if fd is not None:
                self.pidfds[msg.instance_id] = fd
        self.send(self.supervisor, dataclasses.replace(msg, address=sender))
        self._fork_more()

    def receiveMsg_InstanceFailed(self, msg: InstanceFailed, sender: Any) -> None:
        if self.starting.pop(msg.instance_id, None) is not None:
            self.running[str(sender)] = (msg.instance_id, sender)  # until it exited
        self.send(self.supervisor, msg)  # the supervisor halts it
        self._fork_more()

    def receiveMsg_ModuleSwapped(self, msg: ModuleSwapped, sender: Any) -> None:
        self.send(self.supervisor, msg)  # the answer to a SwapModule sent through us

    def receiveMsg_ToInstances(self, msg: ToInstances, sender: Any) -> None:
        by_id = {instance_id: address for instance_id, address in self.running.values()}
        waiting = {instance_id for _, instance_id in self.backlog}
        halted = set()
        halt = isinstance(msg.message, ActorExitRequest)
        for instance_id in msg.instance_ids:
            address = by_id.get(instance_id) or self.starting.get(instance_id)
            if halt and instance_id in self.pidfds:
                # Thespian turns SIGTERM into an ActorExitRequest in the instance (it drains as
                # for the message). Hundreds of messages sent at once cost this process O(n²):
                # its transport rescans every unacknowledged send on each turn of its loop.
                signal.pidfd_send_signal(self.pidfds[instance_id], signal.SIGTERM)
            elif address is not None:
                self.send(address, msg.message)
            elif instance_id in waiting and halt:
                halted.add(instance_id)  # never forked: gone at once
                self._exited(instance_id)
            elif instance_id in waiting:
                self.mail.setdefault(instance_id, []).append(msg.message)
        if halted:
            self.backlog = collections.deque(item for item in self.backlog if item[1] not in halted)
            for instance_id in halted:
                self.mail.pop(instance_id, None)

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        found = self.running.pop(str(msg.childAddress), None)
        if found is not None:
            instance_id = found[0]
        elif instance_id := next((i for i, a in self.starting.items() if a == msg.childAddress), ""):
            del self.starting[instance_id]
        else:
            return  # Thespian reports most exits twice: the child's goodbye, then its SIGCHLD
        self._exited(instance_id)
        self._fork_more()

    def _exited(self, instance_id: str) -> None:
        """Reported once the exits that arrived together are handled: many in one message."""
        fd = self.pidfds.pop(instance_id, None)
        if fd is not None:
            os.close(fd)
        if not self.exited:
            self.wakeupAfter(_NOW)
        self.exited.append(instance_id)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if self.exited:
            self.send(self.supervisor, InstancesExited(instance_ids=tuple(self.exited)))
            self.exited.clear()

    def _children(self) -> list[Any]:
        return [*self.starting.values(), *(address for _, address in self.running.values())]

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        log.debug("instance template stopping", extra={"instances": len(self.starting) + len(self.running)})
