"""InstanceTemplate: the process that forks this host's actor instances, and their owner.

Each instance is its own OS process, and forking is how it gets one. The template is started by
exec (hostcore/actors/template_link.py, the ActorSupervisor's end), so it holds only what an
instance needs: the interpreter with the instance's modules imported, the Engine and each module
deserialized. It freezes its heap (`gc.freeze()`, so no child's collector ever touches those
objects), and a forked instance shares all of that and only pays for its own state. It runs no
thread and compiles nothing, so forking it is safe.

An instance is a plain process (hostcore/actors/instance_process.py), not a Thespian actor: it
reports on the template's socket (hostcore/actors/channel.py), is halted by SIGTERM and seen
dying through a pidfd (a halted one is reported gone when it says `Stopped`, its process reaped
later). The template passes its starts and (batched) exits on to the ActorSupervisor, which keeps
every record and decides everything else. One epoll set holds the supervisor's socket and every
instance's socket and pidfd: the loop costs the same at 5 instances as at 500. Instances on
workers are not forked here (ActorSupervisor creates them where placement says).

For an actor that runs many instances here, the template keeps a spare (SPARE_FROM): the next
start of that actor takes it over (channel.Assign) instead of forking. Spares are the template's
alone: the supervisor never hears of one that was not assigned, and they die with the template.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import resource
import select
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime
from thespian.actors import ActorExitRequest

from hostcore.actors import instance_process
from hostcore.actors.channel import Assign, FrameReader, Hello, Stopped, frame, listen, peer_uid, rendezvous
from hostcore.actors.template_exits import InstanceExits, terminate
from hostcore.config import HostConfig
from hostcore.errors import HostcoreError
from hostcore.logs import configure_root
from hostcore.native.wasm import ModuleImports, load_module, new_engine
from hostcore.supervision import pidfd_open
from hostcore.telemetry import process as telemetry
from hostcore.telemetry.logcontext import install_log_context
from hostcore.tree.messages import (
    ForkInstances,
    InitTemplate,
    InstanceFailed,
    InstanceReports,
    InstanceReturned,
    InstanceSpec,
    InstanceStarted,
    LatticeSnapshot,
    ModuleSwapped,
    StartInstance,
    TemplateReady,
    ToInstances,
)

__all__ = ["InstanceTemplate"]

log = logging.getLogger(__name__)

# Instances starting at once. A scale starts with one per core, so that the first is announced
# within about one start's time; each announcement widens the window by one, up to four per core:
# forks then come in bursts, and the template (every fork write-protects its pages again, so its
# own work between two forks costs page copies) and the supervisor handle several starts per turn.
# Measured at N = 100 on 2 cores (0 -> N / first started): a fixed window of 2: 2.40 s / 81 ms;
# of 8: 1.91 s / 237 ms; of 16: 1.89 s / 463 ms.
FIRST_WINDOW = os.cpu_count() or 1
WIDEST_WINDOW = 4 * FIRST_WINDOW
# An actor with at least this many instances here keeps a spare: one more instance, forked, built
# and connected ahead of time, which the next start of that actor (a crash's replacement, a scale
# up) takes over instead of forking, so it costs no start (~15 ms of the ~45 of a replacement).
# It costs one instance's memory, a tenth or less of what the actor already uses here.
SPARE_FROM = 10
# An instance that does not take a message within this long is cut off (it rejoins and is sent
# the latest snapshot again); the template must not hang on one.
_SEND_TIMEOUT_S = 2.0


@dataclass(slots=True, eq=False)
class _Child:
    """An instance process this template answers for: forked here, or returned to it."""

    instance_id: str
    pid: int
    pidfd: int
    forked: bool
    sock: socket.socket | None = None
    reader: FrameReader = field(default_factory=FrameReader)
    announced: bool = False  # its start was reported to the supervisor
    spare: bool = False  # forked ahead of time; `instance_id` is a placeholder until it is assigned
    halted: bool = False  # asked to stop (else its exit is a crash, and a replacement follows)
    stopped: bool = False  # said Stopped, and was reported gone then: only its reaping is left
    spec: InstanceSpec | None = None  # what it runs, when forked here
    snapshot: LatticeSnapshot | None = None  # the last one it was given
    mail: list[Any] = field(default_factory=list)  # until it connects


class InstanceTemplate(InstanceExits):
    """Forks instances on ActorSupervisor's ForkInstances, a widening window of them starting at a
    time; passes their starts and (batched) exits on; delivers ToInstances."""

    def __init__(self, supervisor: socket.socket) -> None:
        self.supervisor = supervisor  # non-blocking: the template never waits for the supervisor
        self.inbox = FrameReader()
        self.outbox = bytearray()  # framed reports the supervisor's socket has not taken yet
        self.awaiting_room = False  # the poller waits for the supervisor's socket to take more
        self.running = True
        self.config: HostConfig | None = None
        self.snapshot = LatticeSnapshot()
        self.engine: wasmtime.Engine | None = None
        self.modules: dict[Path, wasmtime.Module] = {}
        self.imports: dict[Path, ModuleImports | None] = {}  # defined once, shared by every fork
        self.children: dict[str, _Child] = {}
        self.starting: set[str] = set()  # forked, not reported yet
        self.ramp = 0  # instances announced since the backlog was last empty
        self.backlog: collections.deque[tuple[InstanceSpec, str]] = collections.deque()  # still to fork
        self.mail: dict[str, list[Any]] = {}  # messages for instances still in the backlog
        self.reports: list[Any] = []  # for the supervisor, at the end of this turn of the loop
        self.poller = select.epoll()
        self.listener: socket.socket | None = None
        self.by_fd: dict[int, _Child] = {}  # pidfds and sockets of children
        self.watched: set[int] = set()  # every descriptor in the poller: a forked child closes them
        self.unclaimed: dict[int, tuple[socket.socket, FrameReader]] = {}  # connected, no Hello yet
        self.live: collections.Counter[str] = collections.Counter()  # announced instances per actor key
        self.specs: dict[str, InstanceSpec] = {}  # per actor key, the last one forked
        self.spares: dict[str, _Child] = {}  # per actor key, not assigned yet
        self.placeholders: dict[str, _Child] = {}  # spares by placeholder id, until their first Hello
        self.replenish = False  # nothing is starting: fork the spares that are missing, after this turn
        self.rehearsed = False  # an instance's start was run through here, or is not to be (InitTemplate)
        supervisor.setblocking(False)
        self._watch(supervisor.fileno())

    def serve(self) -> None:
        """The loop: what the supervisor and the instances say, then this turn's reports."""
        while self.running:
            for fd, events in self.poller.poll():
                if fd == self.supervisor.fileno():
                    if events & select.EPOLLOUT:
                        self._send_reports()
                    if events & ~select.EPOLLOUT:
                        self._from_supervisor()
                else:
                    self._from_instances(fd)
                if not self.running:
                    break
            # Whatever this turn heard goes out as one message.
            self._flush()
            if self.replenish:  # after the reports: a fork takes ~3 ms the replacement need not wait
                self.replenish = False
                self._replenish()

    def _from_supervisor(self) -> None:
        messages = self._receive(self.supervisor, self.inbox)
        if messages is None:  # the supervisor is gone (its death ends us too): announced instances live on
            self.running = False
            return
        for message in messages:
            self._handle(message)

    def _handle(self, message: Any) -> None:
        if isinstance(message, ForkInstances):
            self._fork_instances(message)
        elif isinstance(message, ToInstances):
            self._to_instances(message)
        elif isinstance(message, LatticeSnapshot):
            self._new_snapshot(message)
        elif isinstance(message, InitTemplate):
            self._init(message)
        elif isinstance(message, ActorExitRequest):
            self._stop()
        else:
            log.warning("instance template ignored a message", extra={"type": type(message).__name__})

    def _init(self, msg: InitTemplate) -> None:
        configure_root(msg.config.log_level, msg.config.structured_logging)
        install_log_context(host_id=msg.config.host_id, lattice=msg.config.lattice_prefix)
        telemetry.preload(msg.config.telemetry)
        # A socket and a pidfd per instance: hundreds of instances pass a 1024 soft limit.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.config, self.snapshot, self.rehearsed = msg.config, msg.snapshot, not msg.rehearse
        self.engine = new_engine()
        self.listener = listen(rendezvous(msg.config.host_id))
        self._watch(self.listener.fileno())
        self.reports.append(TemplateReady())
        gc.freeze()

    def _new_snapshot(self, msg: LatticeSnapshot) -> None:
        self.snapshot = msg
        data = frame(msg)
        for child in list(self.children.values()):
            if child.sock is not None:
                child.snapshot = msg
                self._send_bytes(child, data)

    # --- forking -------------------------------------------------------------------------------

    def _fork_instances(self, msg: ForkInstances) -> None:
        ids = msg.instance_ids
        spare = self.spares.pop(msg.spec.claims.public_key, None)
        if spare is not None and ids and spare.spec is not None and spare.spec.cwasm_path == msg.spec.cwasm_path:
            self._assign(spare, ids[0])
            ids = ids[1:]
        elif spare is not None:  # the actor was updated since: that module is not wanted any more
            terminate(spare)
        self.backlog.extend((msg.spec, instance_id) for instance_id in ids)
        self._fork_more()

    def _assign(self, spare: _Child, instance_id: str) -> None:
        del self.children[spare.instance_id]
        spare.instance_id, spare.spare = instance_id, False
        self.children[instance_id] = spare
        self.starting.add(instance_id)
        if spare.sock is not None:
            self._send_bytes(spare, frame(Assign(instance_id)))
        else:  # given to it with its first Hello
            spare.mail.append(Assign(instance_id))

    def _replenish(self) -> None:
        """With nothing else starting: a spare for each actor that runs enough instances here."""
        for key, count in self.live.items():
            if count >= SPARE_FROM and key not in self.spares:
                spec = self.specs[key]
                self._fork(spec, f"spare-{key[:8]}-{os.urandom(4).hex()}", spare=True)

    def _fork_more(self) -> None:
        """Fork while fewer than the window are starting. All at once, every start would share the
        cores with all the others and none would be done before the last; this way they finish
        in order, the first within one start's time."""
        if not self.backlog and not self.starting:
            self.ramp = 0  # the next scale starts narrow again
        while self.backlog and len(self.starting) < min(WIDEST_WINDOW, FIRST_WINDOW + self.ramp):
            spec, instance_id = self.backlog.popleft()
            self._fork(spec, instance_id)
        if not self.backlog and not self.starting:
            self.replenish = True

    def _fork(self, spec: InstanceSpec, instance_id: str, *, spare: bool = False) -> None:
        assert self.config is not None and self.engine is not None
        try:
            module = self._module(spec.cwasm_path)
            imports = self.imports[spec.cwasm_path]
        except HostcoreError as err:
            if spare:
                return
            self.reports.append(InstanceFailed(instance_id=instance_id, error=err.wire))
            self._exited(instance_id)
            return
        start = StartInstance(config=self.config, claims=spec.claims, cwasm_path=spec.cwasm_path,
                              image_ref=spec.image_ref, instance_id=instance_id, annotations=spec.annotations,
                              snapshot=self.snapshot)
        if not self.rehearsed:  # once: what it warms up is the same for every module
            self.rehearsed = True
            instance_process.rehearse(start, self.engine, module, imports)
        # A halt can come as soon as the child exists: held until the child has dropped the
        # template's signal handlers (they would swallow it), then its own.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = os.fork()  # the heap is frozen first (procutil.guard_forks), so the child shares it
        if pid == 0:
            instance_process.run(start, self.engine, module, imports, (*self.watched, self.poller.fileno()),
                                 spare=spare)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        pidfd = os.pidfd_open(pid)
        child = _Child(instance_id=instance_id, pid=pid, pidfd=pidfd, forked=True, snapshot=self.snapshot,
                       mail=self.mail.pop(instance_id, []), spare=spare, spec=spec)
        self.children[instance_id] = child
        self.by_fd[pidfd] = child
        self._watch(pidfd)
        if spare:
            self.spares[spec.claims.public_key] = self.placeholders[instance_id] = child
        else:
            self.specs[spec.claims.public_key] = spec
            self.starting.add(instance_id)

    def _module(self, cwasm_path: Path) -> wasmtime.Module:
        module = self.modules.get(cwasm_path)
        if module is None:
            assert self.engine is not None
            module = self.modules[cwasm_path] = load_module(self.engine, cwasm_path)
            try:
                self.imports[cwasm_path] = ModuleImports(self.engine, module)
            except (HostcoreError, wasmtime.WasmtimeError):  # each instance meets it again, and
                self.imports[cwasm_path] = None  # reports it as the start failure it is
        return module

    def _watch(self, fd: int) -> None:
        self.poller.register(fd, select.EPOLLIN)
        self.watched.add(fd)

    def _unwatch(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            self.poller.unregister(fd)
        self.watched.discard(fd)

    # --- what the instances say ----------------------------------------------------------------

    def _from_instances(self, fd: int) -> None:
        if self.listener is not None and fd == self.listener.fileno():
            self._accept()
        elif fd in self.unclaimed:
            self._read_unclaimed(fd)
        elif (child := self.by_fd.get(fd)) is not None:
            if fd == child.pidfd:
                self._gone(child)
            else:
                self._read(child)

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            if peer_uid(sock) != os.getuid():
                sock.close()  # not one of ours
                continue
            sock.settimeout(_SEND_TIMEOUT_S)
            self.unclaimed[sock.fileno()] = (sock, FrameReader())
            self._watch(sock.fileno())

    def _receive(self, sock: socket.socket, reader: FrameReader) -> list[Any] | None:
        """The messages that arrived on `sock`; None once it closed."""
        try:
            data = sock.recv(1 << 16)
        except (BlockingIOError, TimeoutError):
            return []
        except OSError:
            data = b""
        return reader.feed(data) if data else None

    def _read_unclaimed(self, fd: int) -> None:
        sock, reader = self.unclaimed[fd]
        messages = self._receive(sock, reader)
        if not messages:
            if messages is None:
                self._drop(fd)
            return
        hello = messages[0]
        del self.unclaimed[fd]
        if not isinstance(hello, Hello) or not self._claim(hello, sock, reader):
            self._unwatch(fd)
            sock.close()

    def _claim(self, hello: Hello, sock: socket.socket, reader: FrameReader) -> bool:
        # A spare says its placeholder first, even when it has been assigned an id meanwhile.
        child = self.placeholders.pop(hello.instance_id, None) if hello.spare else self.children.get(hello.instance_id)
        if child is None:
            child = self._returned(hello)
            if child is None:
                return False
        elif child.pid != hello.pid or child.sock is not None:
            return False
        child.sock, child.reader = sock, reader
        self.by_fd[sock.fileno()] = child
        self._heard(child, hello)
        if child.snapshot is not self.snapshot:
            child.snapshot = self.snapshot
            self._send_bytes(child, frame(self.snapshot))
        for message in child.mail:
            self._send_bytes(child, frame(message))
        child.mail.clear()
        self._fork_more()
        return True

    def _heard(self, child: _Child, hello: Hello) -> None:
        """`child` says it runs, or could not start (a spare only that it is ready)."""
        if hello.spare:
            return
        if hello.error:
            self.starting.discard(child.instance_id)
            self.reports.append(InstanceFailed(instance_id=hello.instance_id, error=hello.error))
        elif not child.announced:
            child.announced = True
            self.ramp += 1
            self.starting.discard(child.instance_id)
            if child.forked:
                assert child.spec is not None
                self.live[child.spec.claims.public_key] += 1
                self.reports.append(InstanceStarted(instance_id=hello.instance_id,
                                                    api_version=hello.api_version, pid=hello.pid))
            else:
                self.reports.append(InstanceReturned(instance_id=hello.instance_id, pid=hello.pid,
                                                     api_version=hello.api_version))

    def _returned(self, hello: Hello) -> _Child | None:
        """An instance a predecessor forked, which outlived it."""
        if hello.error or hello.spare:  # a predecessor's spare never outlives it
            return None
        pidfd = pidfd_open(hello.pid)
        if pidfd is None:
            return None
        child = _Child(instance_id=hello.instance_id, pid=hello.pid, pidfd=pidfd, forked=False)
        self.children[hello.instance_id] = child
        self.by_fd[pidfd] = child
        self._watch(pidfd)
        return child

    def _read(self, child: _Child) -> None:
        assert child.sock is not None
        messages = self._receive(child.sock, child.reader)
        if messages is None:  # it is stopping, or rejoins; its pidfd says which
            self._disconnect(child)
            return
        for message in messages:
            if isinstance(message, ModuleSwapped):
                self.reports.append(message)  # the answer to a SwapModule sent through us
            elif isinstance(message, Hello) and message.instance_id == child.instance_id:
                self._heard(child, message)  # a spare, started as the instance it was assigned
                self._fork_more()
            elif isinstance(message, Stopped) and message.instance_id == child.instance_id:
                self._stopped(child)

    def _send_bytes(self, child: _Child, data: bytes) -> None:
        if child.sock is None:
            return
        try:
            child.sock.sendall(data)
        except OSError as err:
            log.warning("instance not taking messages; cut off", extra={"instance_id": child.instance_id,
                                                                         "error": str(err)})
            self._disconnect(child)

    def _disconnect(self, child: _Child) -> None:
        if child.sock is not None:
            self.by_fd.pop(child.sock.fileno(), None)
            self._drop(child.sock.fileno(), child.sock)
            child.sock = None

    def _drop(self, fd: int, sock: socket.socket | None = None) -> None:
        entry = self.unclaimed.pop(fd, None)
        sock = sock if sock is not None else entry[0] if entry is not None else None
        self._unwatch(fd)
        if sock is not None:
            sock.close()

    # --- exits (halts, reports and reaping: hostcore/actors/template_exits.py) -----------------

    def _forget_spare(self, child: _Child) -> None:
        """`child` is gone: if it was a spare, it is no more; if it was halted, its actor may not
        need one any more (a crashed one's replacement is what the spare is for)."""
        if child.spec is None:
            return
        key = child.spec.claims.public_key
        if child.spare:
            self.placeholders.pop(child.instance_id, None)
            if self.spares.get(key) is child:
                del self.spares[key]
        elif child.announced:
            self.live[key] -= 1
            if self.live[key] <= 0:
                del self.live[key]
            if child.halted and self.live[key] < SPARE_FROM and (spare := self.spares.pop(key, None)) is not None:
                terminate(spare)

    def _flush(self) -> None:
        if self.reports:
            reports, self.reports = tuple(self.reports), []
            self.outbox += frame(reports[0] if len(reports) == 1 else InstanceReports(reports=reports))
            self._send_reports()

    def _send_reports(self) -> None:
        """As much of the outbox as the supervisor's socket takes now; the rest when it says it
        has room (EPOLLOUT). The supervisor may itself be blocked sending to us: never wait."""
        try:
            while self.outbox:
                del self.outbox[:self.supervisor.send(self.outbox)]
        except BlockingIOError:
            pass
        except OSError:
            self.outbox.clear()  # the supervisor is gone: its end reads as closed next
        if bool(self.outbox) != self.awaiting_room:  # only when that changes: a syscall per turn otherwise
            self.awaiting_room = bool(self.outbox)
            events = select.EPOLLIN | (select.EPOLLOUT if self.outbox else 0)
            with contextlib.suppress(OSError):
                self.poller.modify(self.supervisor.fileno(), events)
