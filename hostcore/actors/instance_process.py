"""An instance process: what the InstanceTemplate's fork runs in the child (`run`, never returns).

The child starts from the template's memory: its StartInstance, the Engine and the deserialized
Module are simply there, shared page for page with the template and every sibling. It leaves the
template's state behind (its sockets and pidfds closed, signals reset), builds its
InstanceCore, connects to NATS and subscribes, then says `Hello` on the template's socket
(hostcore/actors/channel.py). From then on its main thread runs one asyncio loop: RPC calls, the
template's messages, and SIGTERM, which drains the subscription (in-flight calls finish), says
`Stopped` and ends the process.

It outlives its template once it has said `Hello`: if the template dies (its socket closes), it
says `Hello` to the successor, and stops by itself if none comes within ORPHAN_GRACE_S. Until then
it dies with the template (PDEATHSIG, armed by the fork), as it would be of no use to anyone.
The launcher's death ends it at once, as every process of the host.

A spare (`run(..., spare=True)`) does all of that ahead of time except the RPC subscription,
under a placeholder id, and waits: when the template gives it an id (channel.Assign), it takes
that id, subscribes and says `Hello` as that instance, so a replacement costs no start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import stat
import threading
import time
import urllib.parse
from typing import Any, NoReturn

import setproctitle
import uvloop
import wasmtime
from nats.aio.client import Client as NatsClient

from hostcore.actors.channel import Assign, FrameReader, Hello, Stopped, frame, rendezvous
from hostcore.actors.instance_core import InstanceCore
from hostcore.native.wasm import ModuleImports
from hostcore.natsconn import flush_in_order
from hostcore.procutil import close_fds, default_signal_actions, launcher_pid, pid_alive, set_pdeathsig
from hostcore.supervision import ORPHAN_GRACE_S, pidfd_open
from hostcore.telemetry.logcontext import install_log_context
from hostcore.tree.bridge import connect_nats, drain_nats
from hostcore.tree.messages import LatticeSnapshot, ModuleSwapped, StartInstance, SwapModule

__all__ = ["TITLES", "rehearse", "run", "watch_launcher"]

log = logging.getLogger(__name__)

# How tools (and the tests, benchmarks and the host's reaper) tell an instance or a spare: by the
# start of its process title.
INSTANCE_TITLE, SPARE_TITLE = "ActorModule ", "ActorSpare "
TITLES = (INSTANCE_TITLE, SPARE_TITLE)
_RECONNECT_EVERY_S = 0.02
_STOP_DEADLINE_S = 10
_THREAD_EXIT_S = 1.0  # for the rehearsal's threads to be gone from the kernel's list


def run(start: StartInstance, engine: wasmtime.Engine, module: wasmtime.Module, imports: ModuleImports | None,
        template_fds: tuple[int, ...], *, spare: bool = False) -> NoReturn:
    """In the child of the template's fork. Never returns: the template's frames below must not
    run again here. `imports`: the module's, defined by the template. `template_fds`: the
    template's own descriptors (two per instance). `spare`: `start.instance_id` is a placeholder;
    the instance waits for its id (channel.Assign)."""
    code = 1
    try:
        _leave_template(start, template_fds, spare)
        # No asyncio.Runner: its close() waits for every task and executor thread, and the
        # process ends right after `serve` anyway.
        code = uvloop.new_event_loop().run_until_complete(_Instance(start, spare).serve(engine, module, imports))
    except BaseException:  # noqa: BLE001 -- the process ends here either way; say why
        with contextlib.suppress(Exception):
            log.exception("instance process failed", extra={"instance_id": start.instance_id})
    finally:
        logging.shutdown()
        os._exit(code)


def rehearse(start: StartInstance, engine: wasmtime.Engine, module: wasmtime.Module,
             imports: ModuleImports | None) -> None:
    """In the template, once, before its first fork: an instance's start (runtime, telemetry,
    NATS connection, subscription) run through here, then undone.

    A forked child's first run of a code path writes to pages it shares with the template: the
    interpreter specialises the bytecode it runs, caches fill, allocators walk their free lists,
    and each write copies a page. Run once here, that is done for every child. Measured (50 echo
    instances forked from a process that imports what the template does): 6.68-6.77 → 6.04-6.07 MB
    of private memory each.

    Skipped where it would leave a thread in the template, which forks: with tracing on (OTLP
    exports on a thread), or a NATS server given by name (uvloop resolves names on libuv's thread
    pool). A name is resolved here instead, on this thread: the C library loads its resolver's
    modules and reads its files once, for every child (50 instances forked from a process that
    imports what the template does, the server named `localhost`: 8.2-8.3 → 6.9-7.0 MB of private
    memory and 4-7 ms less CPU each). A rehearsal that fails is only logged: instances start
    without it."""
    cfg = start.config
    servers = [urllib.parse.urlsplit(s if "://" in s else f"nats://{s}") for s in cfg.rpc.servers]
    named = [url for url in servers if url.hostname and not _ip_literal(url.hostname)]
    for url in named:
        with contextlib.suppress(OSError):  # each instance meets the failure itself
            socket.getaddrinfo(url.hostname, url.port, type=socket.SOCK_STREAM)
    if cfg.telemetry.tracing or not servers or named:
        return
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_rehearsal(dataclasses.replace(start, instance_id="rehearsal"), engine, module,
                                           imports))
    except Exception as err:  # noqa: BLE001 -- an optimisation, never a reason not to start
        log.info("instance rehearsal failed", extra={"error": str(err)})
    finally:
        loop.close()
        install_log_context(host_id=cfg.host_id, lattice=cfg.lattice_prefix)  # the template's again
    if not _single_threaded(_THREAD_EXIT_S):
        log.warning("instance rehearsal left a thread in the template")


def _single_threaded(within_s: float) -> bool:
    """True once this process runs one thread, waiting up to `within_s`: a thread that was
    joined may still be listed by the kernel for a few milliseconds (21 of 2,000 joins here, for
    up to 4 ms), and the template must not fork while it is."""
    deadline = time.monotonic() + within_s
    while threading.active_count() > 1 or len(os.listdir("/proc/self/task")) > 1:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


async def _rehearsal(start: StartInstance, engine: wasmtime.Engine, module: wasmtime.Module,
                     imports: ModuleImports | None) -> None:
    core = InstanceCore(start, engine=engine, module=module, imports=imports)
    nc: NatsClient | None = None
    try:
        nc = await connect_nats(start.config.rpc, name=core.connection_name)
        await core.prepare(nc)
        await core.subscribe(nc.new_inbox())
        await flush_in_order(nc)
    finally:
        if nc is not None:
            await drain_nats(nc)
        core.close()  # joins its ticker thread


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _leave_template(start: StartInstance, template_fds: tuple[int, ...], spare: bool) -> None:
    """Close what belongs to the template (its sockets, pidfds and poller: a socket left open here
    would keep a dead template's address alive) and restore default signal handling. Logging is
    the template's, configured as an instance needs it (stderr, the host's level and format).
    Files stay open: wasmtime maps each instance's initial memory from the module's memfd."""
    close_fds(template_fds)  # known, so not inspected one by one: there are hundreds
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode) or os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:"):
                os.close(fd)
    default_signal_actions(sig for sig in signal.valid_signals() if sig not in (signal.SIGKILL, signal.SIGSTOP))
    # Python's own defaults: a write to a closed socket is an error, not death by SIGPIPE.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the host stops us in order
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # held by the template across the fork
    _title(start.claims.public_key if spare else start.instance_id, spare)


def _title(name: str, spare: bool = False) -> None:
    setproctitle.setproctitle((SPARE_TITLE if spare else INSTANCE_TITLE) + name)


def _exit_in_idle_time() -> None:
    """Reported stopped: what is left is the kernel returning this process's memory, a few
    milliseconds of CPU per forked process (unmapping every page it shares with the template).
    Nothing waits for that any more, so it waits for CPU time nothing else wants: a scale to zero
    is over when the last instance has drained, not when the last one is unmapped."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def watch_launcher(loop: asyncio.AbstractEventLoop) -> None:
    """End this process as soon as the launcher is gone: the host is gone, and so must we be.
    Already gone counts too: it may have died while we were forked, and then the template we
    are about to say Hello to dies next, leaving us waiting for a successor that never comes."""
    pid = launcher_pid()
    if not pid:
        return
    fd = pidfd_open(pid)
    if fd is not None:
        loop.add_reader(fd, os._exit, 1)
    elif not pid_alive(pid):
        os._exit(1)


class _Instance:
    def __init__(self, start: StartInstance, spare: bool) -> None:
        self.start = start
        self.instance_id = start.instance_id
        self.spare = spare
        self.assigned: asyncio.Future[str]
        self.core: InstanceCore | None = None
        self.control: socket.socket | None = None
        self.reader = FrameReader()
        self.stopping: asyncio.Event
        self.rejoining: asyncio.Task[None] | None = None

    async def serve(self, engine: wasmtime.Engine, module: wasmtime.Module, imports: ModuleImports | None) -> int:
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._halt)
        watch_launcher(loop)
        self.assigned = loop.create_future()
        nc: NatsClient | None = None
        try:
            self.core = InstanceCore(self.start, engine=engine, module=module, imports=imports)
            nc = await connect_nats(self.start.config.rpc, name=self.core.connection_name)
            await self.core.prepare(nc)
            if self.spare and not await self._take_id():
                return await self._end(nc)
            await self.core.subscribe()
            await flush_in_order(nc)  # serving before it says Hello, so before actor_started
        except Exception as err:  # noqa: BLE001 -- reported to the supervisor as actor_start_failed
            log.exception("instance failed to start", extra={"actor_key": self.start.claims.public_key})
            if not self.spare:  # a spare that fails is simply not there: nobody waits for it
                await self._hello(str(getattr(err, "wire", err)))
            return await self._end(nc)
        if self.control is not None:  # a spare says Hello again, as the instance, where it said it first
            self._send(self._hello_message())
        elif not await self._hello():
            return await self._end(nc)
        set_pdeathsig(0)  # announced: from now on the template's death is ours to handle
        self.core.telemetry.start(loop)
        await self.stopping.wait()
        return await self._end(nc)

    async def _take_id(self) -> bool:
        """A spare: say it is ready, wait for an id and become that instance. False if it was
        halted first. (Nothing to flush yet: the subscription, once it has an id, is flushed with
        everything before it.)"""
        assert self.core is not None
        if not await self._hello():
            return False
        stopped = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait((self.assigned, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not self.assigned.done() or self.stopping.is_set():  # halted, maybe as soon as it was given an id
            return False
        self.instance_id = self.assigned.result()
        self.core.rename(self.instance_id)
        _title(self.instance_id)
        self.spare = False
        return True

    async def _end(self, nc: NatsClient | None) -> int:
        if nc is not None:
            await drain_nats(nc)
        if self.core is not None:
            self.core.close(wait=False)  # the process ends next
        if self.stopping.is_set() and not self.spare and self.control is not None:
            self._send(Stopped(self.instance_id))
            _exit_in_idle_time()
        return 0

    def _halt(self) -> None:
        # Draining is bounded (drain_nats); should anything else hang, SIGALRM's default action
        # ends the process: a halted instance must never outlive the request.
        signal.alarm(_STOP_DEADLINE_S)
        self.stopping.set()

    async def _hello(self, error: str = "") -> bool:
        """Connect to the template (this one, or its successor) and say Hello; False if none
        answered within ORPHAN_GRACE_S, or we were asked to stop meanwhile."""
        deadline = time.monotonic() + ORPHAN_GRACE_S
        address = rendezvous(self.start.config.host_id)
        hello = frame(self._hello_message(error))
        while not self.stopping.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(address)
                sock.sendall(hello)
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    log.warning("no instance template to report to; stopping", extra={"grace_s": ORPHAN_GRACE_S})
                    return False
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), _RECONNECT_EVERY_S)
                continue
            sock.setblocking(False)
            self.control, self.reader = sock, FrameReader()
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
            return True
        return False

    def _hello_message(self, error: str = "") -> Hello:
        return Hello(instance_id=self.instance_id, pid=os.getpid(), error=error, spare=self.spare,
                     api_version=self.core.api_version if self.core is not None and not error else 0)

    def _readable(self) -> None:
        assert self.control is not None
        try:
            data = self.control.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the template is gone: find its successor, serving meanwhile
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            self.control.close()
            self.control = None
            if self.stopping.is_set():  # we are ending (the template lets go of us once we said Stopped)
                return
            if self.spare:  # serving nothing, and its successor does not know it
                self.stopping.set()
                return
            log.warning("instance template gone; waiting for its successor", extra={"grace_s": ORPHAN_GRACE_S})
            self.rejoining = asyncio.get_running_loop().create_task(self._rejoin())  # held: tasks are weak
            return
        for message in self.reader.feed(data):
            self._handle(message)

    async def _rejoin(self) -> None:
        if not await self._hello():
            self.stopping.set()

    def _handle(self, message: Any) -> None:
        assert self.core is not None
        if isinstance(message, LatticeSnapshot):
            self.core.update_snapshot(message)
        elif isinstance(message, SwapModule):
            self._swap(message)
        elif isinstance(message, Assign) and not self.assigned.done():
            self.assigned.set_result(message.instance_id)

    def _swap(self, msg: SwapModule) -> None:
        """Live update, between two calls (this is the loop they run on). On failure the old
        module stays."""
        assert self.core is not None
        try:
            self.core.swap(self.core.build_runtime(msg.claims, msg.cwasm_path), msg.claims)
            reply = ModuleSwapped(instance_id=self.instance_id)
        except Exception as err:  # noqa: BLE001 -- reported as actor_update_failed
            reply = ModuleSwapped(instance_id=self.instance_id, error=str(getattr(err, "wire", err)))
        self._send(reply)

    def _send(self, message: Any) -> None:
        if self.control is None:
            return  # the template died: the successor's supervisor fails what waited on us
        self.control.setblocking(True)
        try:
            self.control.sendall(frame(message))
        except OSError:
            pass  # its end closed: `_readable` sees it
        finally:
            self.control.setblocking(False)
