"""The floor of bench/scale.py: what one OS process per actor instance costs at least.

    python bench/_floor.py parent CWASM NATS_URL SUBJECT STARTED_SUBJECT
    python bench/_floor.py responder NATS_URL SUBJECT

`parent` imports wasmtime and nats-py once, freezes its heap (gc.freeze), then forks one child per
instance. Each child builds
an Engine on the host's Config (hostcore.native.wasm.engine_config), loads the host's cached
.cwasm with `Module.deserialize_file`, instantiates it (stub imports), connects to NATS,
queue-subscribes to SUBJECT (echoing requests) and publishes its pid on STARTED_SUBJECT. No
Thespian, no epoch ticker, no second connection, no telemetry.

The parent reads one command per line on stdin and answers one line on stdout:
  scale N   fork or SIGTERM children up to N: "ok" once forked / asked to stop;
            after a scale-down, "stopped" once the last of them was reaped
  pids      the children's pids, space separated
  quit      SIGTERM every child, reap them, exit
A child that dies without being asked is replaced at once (the supervisor's restart).

`responder` answers every request on SUBJECT with its payload: the floor for the latency of a
control request (ping, inventory) on a machine busy starting instances.
"""

from __future__ import annotations

import asyncio
import gc
import os
import select
import signal
import sys
from pathlib import Path

import nats  # noqa: F401 -- imported before forking, as a template process would
import wasmtime
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostcore.native.wasm import engine_config  # noqa: E402
from hostcore.procutil import set_pdeathsig  # noqa: E402


def _stub(results: int):  # type: ignore[no-untyped-def]
    def stub(*_args: object) -> object:
        return 0 if results == 1 else None
    return stub


def load_instance(cwasm: str) -> tuple[wasmtime.Store, wasmtime.Instance]:
    engine = wasmtime.Engine(engine_config())
    module = wasmtime.Module.deserialize_file(engine, cwasm)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1 << 40)  # the Config has epoch interruption on; nothing ticks here
    linker = wasmtime.Linker(engine)
    seen: set[tuple[str, str]] = set()
    wasi = False
    for imp in module.imports:
        if "wasi" in imp.module:
            wasi = True
        elif isinstance(imp.type, wasmtime.FuncType) and (imp.module, imp.name) not in seen:
            seen.add((imp.module, imp.name or ""))
            linker.define_func(imp.module, imp.name or "", imp.type, _stub(len(imp.type.results)))
    if wasi:
        linker.define_wasi()
        store.set_wasi(wasmtime.WasiConfig())
    return store, linker.instantiate(store, module)


async def serve(url: str, subject: str, queue: str, announce: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    nc = await nats.connect(url, name=f"floor-{os.getpid()}")

    async def echo(msg: Msg) -> None:
        if msg.reply:
            await nc.publish(msg.reply, msg.data)

    await nc.subscribe(subject, queue=queue, cb=echo, pending_msgs_limit=65536)
    await nc.flush()
    if announce:
        await nc.publish(announce, str(os.getpid()).encode())
        await nc.flush()
    await stop.wait()
    await nc.drain()


def child(cwasm: str, url: str, subject: str, announce: str) -> None:
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        set_pdeathsig()
        store, instance = load_instance(cwasm)  # noqa: F841 -- held while serving
        asyncio.run(serve(url, subject, subject, announce))
    except BaseException as err:  # noqa: BLE001 -- a child never returns into the parent's loop
        print(f"floor child {os.getpid()} failed: {err!r}", file=sys.stderr, flush=True)
        code = 1
    os._exit(code)


def parent(cwasm: str, url: str, subject: str, announce: str) -> None:
    # What every instance process inherits stays shared: without this, the first full collection
    # in a child writes to every page holding a tracked object (about 9 MB here).
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    stopping: set[int] = set()
    report_stopped = False
    quitting = False
    buf = b""

    def say(line: str) -> None:
        os.write(1, (line + "\n").encode())

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            child(cwasm, url, subject, announce)
        children.add(pid)

    def reap() -> None:
        nonlocal report_stopped
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in stopping:
                stopping.discard(pid)
                if not stopping and report_stopped:
                    report_stopped = False
                    say("stopped")
            elif pid in children:
                children.discard(pid)
                if not quitting:
                    fork()  # died unasked: replace it

    def command(line: str) -> bool:
        nonlocal report_stopped, quitting
        words = line.split()
        if not words:
            return True
        if words[0] == "scale":
            want = int(words[1])
            while len(children) < want:
                fork()
            victims = sorted(children)[want:]
            for pid in victims:
                children.discard(pid)
                stopping.add(pid)
                os.kill(pid, signal.SIGTERM)
            report_stopped = bool(victims)
            say("ok")
        elif words[0] == "pids":
            say(" ".join(map(str, sorted(children))))
        elif words[0] == "quit":
            quitting = True
            for pid in children:
                os.kill(pid, signal.SIGTERM)
            return False
        return True

    running = True
    while running:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            reap()
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                running = command("quit")
                break
            buf += data
            while b"\n" in buf and running:
                line, buf = buf.split(b"\n", 1)
                running = command(line.decode())
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def responder(url: str, subject: str) -> None:
    asyncio.run(serve(url, subject, subject, None))


if __name__ == "__main__":
    if sys.argv[1] == "parent":
        set_pdeathsig()
        parent(*sys.argv[2:6])
    elif sys.argv[1] == "responder":
        set_pdeathsig()
        responder(*sys.argv[2:4])
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}")
