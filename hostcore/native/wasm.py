"""Wasm execution: the one engine Config, the .cwasm compile cache, and `ActorRuntime`, one guest
instance speaking the waPC / wasmbus ABI (protocol.md §6).

Process rules (architecture.md): compile once per content in the native worker (`compile_to_cache`),
`load_module` the .cwasm everywhere else; a process that forks may hold an Engine and modules
(the InstanceTemplate does) but never compiles nor runs a ticker. Each guest call has a time limit
(epoch interruption, driven by one `EpochTicker` per engine, hostcore/native/epoch.py) and each
Store a memory limit. A trap discards the Store: the next call runs on a fresh instance.

Routing of the guest's host calls (protocol.md §4.10) is not done here: the owner of an
`ActorRuntime` supplies `host_call`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import wasmtime

from hostcore.errors import (
    GuestError,
    GuestTimeout,
    GuestTrap,
    HostCallError,
    HostcoreError,
    InstantiationFailed,
    ModuleCompileFailed,
    NotWasm,
)
from hostcore.native import _fastcall
from hostcore.native._fastcall import GuestFault, read_guest, write_guest
from hostcore.native.epoch import EPOCH_TICK_S, EpochTicker

log = logging.getLogger(__name__)

__all__ = [
    "FAST_PATH",
    "ActorRuntime",
    "HostCall",
    "ModuleImports",
    "compile_to_cache",
    "engine_config",
    "load_module",
    "new_engine",
]

# True when the wasmtime-py internals used by the hot path exist (see _fastcall); else public API.
FAST_PATH: bool = _fastcall.AVAILABLE

HostCall = Callable[[str, str, str, bytes], bytes]

_WASM_MAGIC = b"\0asm"
_CACHE_TAG = f"wasmtime{importlib.metadata.version('wasmtime')}"
# protocol.md §6.1: the same import set is served under both module names.
_ABI_MODULES = frozenset({"wasmbus", "wapc"})
# import name -> (i32 params, i32 results), protocol.md §6.1
_HOST_IMPORTS: dict[str, tuple[int, int]] = {
    "__host_call": (8, 1),
    "__host_response_len": (0, 1),
    "__host_response": (1, 0),
    "__host_error_len": (0, 1),
    "__host_error": (1, 0),
    "__guest_request": (2, 0),
    "__guest_response": (2, 0),
    "__guest_error": (2, 0),
    "__console_log": (2, 0),
}
# protocol.md §6.2: called once, in this order, each if exported.
_INIT_EXPORTS = ("start", "wapc_init", "_start")


def engine_config() -> wasmtime.Config:
    """The one Config for compiling and running actors; a .cwasm only loads into an engine built
    from the same Config. A new object each call (an Engine consumes its Config)."""
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True  # call time limits (ActorRuntime)
    cfg.cranelift_opt_level = "speed"
    cfg.consume_fuel = False
    # No wasmtime cache dir (off by default and cannot be set to False): our own .cwasm cache.
    return cfg


def new_engine() -> wasmtime.Engine:
    """A new Engine on `engine_config()`. An Engine starts no thread (compiling does): a process
    may fork with one, as long as it compiles nothing and runs no EpochTicker."""
    return wasmtime.Engine(engine_config())


def compile_to_cache(engine: wasmtime.Engine, module_bytes: bytes, cache_dir: Path) -> Path:
    """Compile `module_bytes` once per content into `{cache_dir}/{SHA256}-{wasmtime tag}.cwasm`.

    Returns the path; when the file exists it is returned without compiling. The file is written
    atomically (temporary file + os.replace), so concurrent compiles of one module are harmless.
    `cache_dir` must be private to the host: `load_module` trusts what it finds there.
    Raises NotWasm when the bytes are not a wasm binary, ModuleCompileFailed when wasmtime rejects them.
    """
    if not bytes(module_bytes[:4]) == _WASM_MAGIC:
        raise NotWasm()  # wasmtime-py would otherwise try to parse the bytes as WAT text
    key = hashlib.sha256(module_bytes).hexdigest().upper()  # protocol.md §6.2 cache key
    path = Path(cache_dir) / f"{key}-{_CACHE_TAG}.cwasm"
    if path.exists():
        return path
    try:
        serialized = wasmtime.Module(engine, module_bytes).serialize()
    except wasmtime.WasmtimeError as exc:
        raise ModuleCompileFailed(str(exc)) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(serialized)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    log.info("module compiled", extra={"module_hash": key, "size": len(module_bytes)})
    return path


def load_module(engine: wasmtime.Engine, cwasm_path: Path) -> wasmtime.Module:
    """Load a .cwasm written by `compile_to_cache` with an engine on the same Config (~0.5 ms).
    Raises ModuleCompileFailed when the file is missing or was made by another wasmtime/Config."""
    try:
        return wasmtime.Module.deserialize_file(engine, str(cwasm_path))
    except wasmtime.WasmtimeError as exc:
        raise ModuleCompileFailed(str(exc)) from exc


class ModuleImports:
    """A module's waPC / wasmbus imports (protocol.md §6.1), defined once in a wasmtime Linker for
    every ActorRuntime of that module in this process.

    Definitions in a Linker belong to no Store, so a process that forks (the InstanceTemplate)
    defines them before the fork and every child instantiates from them: an echo ActorRuntime
    built in a forked child took 4.3-4.8 ms of CPU defining its own, 3.2-3.5 ms without (medians
    of 30), and 0.27 MB less of each instance's memory is its own. Its host functions serve
    `runtime`, the ActorRuntime that runs guest code on it, which puts itself there before any
    guest code runs. One thread at a time.

    Raises InstantiationFailed (unknown import, wrong signature). `close()` is idempotent.
    """

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, *, fast_path: bool = FAST_PATH) -> None:
        self.module = module
        self.fast_path = fast_path and FAST_PATH
        self.runtime: ActorRuntime | None = None
        self.wasi = False
        self.linker = wasmtime.Linker(engine)
        self._keepalive: list[object] = []  # C callbacks: must outlive the linker and its stores
        try:
            self._define()
        except BaseException:
            self.close()
            raise

    def _serving(self) -> ActorRuntime:
        runtime = self.runtime
        if runtime is None:  # guest code runs only inside an ActorRuntime, which sets itself first
            raise RuntimeError("no ActorRuntime runs guest code on these imports")
        return runtime

    def _define(self) -> None:
        rt = self._serving
        handlers: dict[str, Callable[..., int | None]] = {
            "__host_call": lambda *args: rt()._h_host_call(*args),
            "__host_response_len": lambda: len(rt()._host_response or b""),
            "__host_response": lambda ptr: (r := rt())._h_write(ptr, r._host_response),
            "__host_error_len": lambda: len(rt()._host_error or b""),
            "__host_error": lambda ptr: (r := rt())._h_write(ptr, r._host_error),
            "__guest_request": lambda op_ptr, ptr: rt()._h_guest_request(op_ptr, ptr),
            "__guest_response": lambda ptr, n: rt()._h_guest_response(ptr, n),
            "__guest_error": lambda ptr, n: rt()._h_guest_error(ptr, n),
            "__console_log": lambda ptr, n: rt()._h_console_log(ptr, n),
        }
        defined: set[tuple[str, str]] = set()
        for imp in self.module.imports:
            mod, name = imp.module, imp.name or ""
            if "wasi" in mod:
                self.wasi = True
                continue
            if mod not in _ABI_MODULES or name not in _HOST_IMPORTS:
                raise InstantiationFailed(f"unknown import {mod}.{name}")
            nparams, nresults = _HOST_IMPORTS[name]
            ty = imp.type
            if not (isinstance(ty, wasmtime.FuncType) and len(ty.params) == nparams
                    and len(ty.results) == nresults
                    and all(t == wasmtime.ValType.i32() for t in (*ty.params, *ty.results))):
                raise InstantiationFailed(f"import {mod}.{name} has the wrong type")
            if (mod, name) not in defined:
                defined.add((mod, name))
                self._keepalive.append(_fastcall.define_host_func(
                    self.linker, mod, name, handlers[name], nparams, nresults,
                    lambda exc: rt()._record_host_exc(exc), fast=self.fast_path))
        if self.wasi:
            self.linker.define_wasi()

    def close(self) -> None:
        self.runtime = None
        self.linker.close()
        self._keepalive.clear()


class ActorRuntime:
    """One guest instance of `module` in its own Store, called by one thread (not thread-safe).

    Serves the waPC/wasmbus imports the module asks for (protocol.md §6.1) under `wasmbus` and `wapc`,
    and WASI preview1 (no args, env, preopens or stdio) when an import module name contains "wasi".
    `host_call(binding, namespace, operation, payload) -> bytes` answers the guest's host calls: a
    HostCallError's `wire` goes back to the guest as host error, any other Exception is logged and
    the guest gets a generic error. `console_log(text)` receives `__console_log` lines.

    Each call is limited to `call_timeout_s` (measured in `epoch_tick_s` ticks of the engine's
    EpochTicker, which must be running; pass it as `ticker` when it ticks on demand) and the
    Store's memory to `max_memory_bytes`. `fast_path`
    (default FAST_PATH) selects the wasmtime-internals hot path; False forces the public API.

    `imports`: the module's ModuleImports, when built already (before a fork); else the runtime
    defines its own, and frees them with itself.

    Raises InstantiationFailed (unknown import, wrong signature, missing `memory`/`__guest_call`,
    memory limit, trap in an init export). The owner calls `close()` (idempotent) or uses `with`.
    """

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, *, host_call: HostCall,
                 console_log: Callable[[str], None], call_timeout_s: float, max_memory_bytes: int,
                 epoch_tick_s: float = EPOCH_TICK_S, fast_path: bool = FAST_PATH,
                 ticker: EpochTicker | None = None, imports: ModuleImports | None = None) -> None:
        self._engine, self._module, self._ticker = engine, module, ticker
        self._host_call, self._console_log = host_call, console_log
        self.call_timeout_s = call_timeout_s
        self._deadline_ticks = max(1, math.ceil(call_timeout_s / epoch_tick_s))
        self._max_memory_bytes = max_memory_bytes
        if imports is not None and imports.module is not module:
            raise ValueError("imports were defined for another module")
        self._owns_imports = imports is None
        self._imports = imports if imports is not None else ModuleImports(engine, module, fast_path=fast_path)
        self.fast_path = self._imports.fast_path
        self.api_version = 0
        self._closed = self._busy = False
        self._store: wasmtime.Store | None = None
        self._guest_call: _fastcall.I32Call | None = None
        self._bounds: _fastcall.MemoryBounds = lambda: (0, 0)
        # Per-call state (protocol.md §6.3 step 1); bytes, so lengths are byte lengths.
        self._op = self._payload = b""
        self._guest_response: bytes | None = None
        self._guest_error: bytes | None = None
        self._host_response: bytes | None = None
        self._host_error: bytes | None = None
        self._host_exc: BaseException | None = None  # raised inside a fast-path host function
        try:
            self._instantiate()
        except BaseException:
            self._release_imports()
            raise

    # --- instantiation ---------------------------------------------------------------------------

    def _record_host_exc(self, exc: BaseException) -> None:
        self._host_exc = exc

    def _instantiate(self) -> None:
        """Create a fresh Store + instance and run the init exports (protocol.md §6.2)."""
        self._imports.runtime = self  # init exports may call host functions
        if self._ticker is not None:
            self._ticker.enter()  # init exports run guest code: their time limit needs ticks
        try:
            self._instantiate_store()
        finally:
            if self._ticker is not None:
                self._ticker.leave()

    def _instantiate_store(self) -> None:
        self._host_exc = None
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=self._max_memory_bytes)
        if self._imports.wasi:
            store.set_wasi(wasmtime.WasiConfig())  # no args/env/preopens; stdio not inherited
        store.set_epoch_deadline(self._deadline_ticks)  # a wasm start section counts too
        try:
            exports = self._imports.linker.instantiate(store, self._module).exports(store)
            memory, guest_call = exports.get("memory"), exports.get("__guest_call")
            if not isinstance(memory, wasmtime.Memory):
                raise InstantiationFailed("module exports no memory")
            if not isinstance(guest_call, wasmtime.Func):
                raise InstantiationFailed("module exports no __guest_call")
            try:
                call = _fastcall.guest_func(store, guest_call, 2, 1, fast=self.fast_path,
                                            deadline_ticks=self._deadline_ticks)
            except TypeError as exc:
                raise InstantiationFailed(f"__guest_call: {exc}") from exc
            self._store, self._guest_call = store, call
            self._bounds = _fastcall.memory_bounds(store, memory, fast=self.fast_path)
            version = exports.get("__wasmbus_rpc_version")
            if isinstance(version, wasmtime.Func):
                store.set_epoch_deadline(self._deadline_ticks)
                result = version(store)
                self.api_version = result if isinstance(result, int) else 0
            for name in _INIT_EXPORTS:
                func = exports.get(name)
                if isinstance(func, wasmtime.Func):
                    store.set_epoch_deadline(self._deadline_ticks)
                    try:
                        func(store)
                    except wasmtime.ExitTrap as exc:
                        if exc.code != 0:  # TinyGo's _start ends with proc_exit(0): not a failure
                            raise
        except (wasmtime.WasmtimeError, wasmtime.Trap, GuestFault) as exc:
            self._drop_store(store)
            cause, self._host_exc = self._host_exc, None
            if cause is not None and not isinstance(cause, Exception):
                raise cause from None  # KeyboardInterrupt & co. inside a fast-path host function
            raise InstantiationFailed(_first_line(cause or exc)) from exc
        except BaseException:
            self._drop_store(store)
            raise

    def _drop_store(self, store: wasmtime.Store | None = None) -> None:
        if store is None:
            store = self._store
        self._store, self._guest_call = None, None
        self._bounds = lambda: (0, 0)
        if store is not None:
            store.close()

    # --- guest call ------------------------------------------------------------------------------

    def call(self, operation: str, payload: bytes) -> bytes:
        """Invoke the guest's `operation` with `payload` (protocol.md §6.3); returns its response.

        Raises GuestError(guest's text) when the guest returns failure, GuestTimeout when the call
        exceeds `call_timeout_s`, GuestTrap on any other trap; after a trap the Store is replaced,
        so the next call runs on a fresh instance (InstantiationFailed if that cannot be built).
        KeyboardInterrupt & co. raised inside host functions propagate unchanged.
        """
        if self._closed:
            raise ValueError("ActorRuntime already closed")
        if self._busy:  # a host_call re-entering its own runtime would clobber the call state
            raise RuntimeError("ActorRuntime.call is not reentrant")
        if self._store is None:
            self._instantiate()
        op = operation.encode()
        self._op, self._payload = op, payload
        self._guest_response = self._guest_error = self._host_response = self._host_error = None
        self._host_exc = None
        self._busy = True
        self._imports.runtime = self
        ticker = self._ticker
        if ticker is not None:
            ticker.enter()
        try:
            ok = self._guest_call(len(op), len(payload))  # type: ignore[misc]
        except BaseException as exc:
            cause = self._host_exc or exc
            self._replace_store()
            if not isinstance(cause, Exception):
                raise cause from None
            raise self._trap_error(cause) from exc
        finally:
            if ticker is not None:
                ticker.leave()
            self._op = self._payload = b""
            self._busy = False
        if ok == 1:
            return self._guest_response or b""
        text = (self._guest_error or b"").decode("utf-8", "replace")
        raise GuestError(text or f"Guest call failed for method {operation}")

    def _trap_error(self, exc: Exception) -> GuestTrap:
        if isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.INTERRUPT:
            return GuestTimeout(f"Guest call exceeded its time limit of {self.call_timeout_s} s")
        if isinstance(exc, (wasmtime.Trap, wasmtime.WasmtimeError, GuestFault)):
            return GuestTrap(_first_line(exc))
        log.error("host function failed", exc_info=exc)  # our bug, not the guest's
        return GuestTrap(HostcoreError.wire)

    def _replace_store(self) -> None:
        # A trapped instance's memory can't be trusted (OTP issue #501): start over.
        self._drop_store()
        try:
            self._instantiate()
        except InstantiationFailed:
            log.warning("re-instantiation after trap failed; retrying on next call", exc_info=True)

    # --- host functions (protocol.md §6.1); ints are the guest's raw i32 --------------------------

    def _h_write(self, ptr: int, data: bytes | None) -> None:
        if data:
            write_guest(self._bounds(), ptr, data)

    def _h_guest_request(self, op_ptr: int, ptr: int) -> None:
        bounds = self._bounds()
        write_guest(bounds, op_ptr, self._op)
        write_guest(bounds, ptr, self._payload)

    def _h_guest_response(self, ptr: int, n: int) -> None:
        self._guest_response = read_guest(self._bounds(), ptr, n)

    def _h_guest_error(self, ptr: int, n: int) -> None:
        self._guest_error = read_guest(self._bounds(), ptr, n)

    def _h_console_log(self, ptr: int, n: int) -> None:
        text = read_guest(self._bounds(), ptr, n).decode("utf-8", "replace")
        try:
            self._console_log(text)
        except Exception:
            log.exception("console_log callback failed")

    def _h_host_call(self, bd_ptr: int, bd_len: int, ns_ptr: int, ns_len: int, op_ptr: int,
                     op_len: int, ptr: int, n: int) -> int:
        bounds = self._bounds()
        binding = read_guest(bounds, bd_ptr, bd_len).decode("utf-8", "replace")
        namespace = read_guest(bounds, ns_ptr, ns_len).decode("utf-8", "replace")
        operation = read_guest(bounds, op_ptr, op_len).decode("utf-8", "replace")
        payload = read_guest(bounds, ptr, n)
        # QUIRK: OTP clears host_response/host_error only per guest call (protocol.md §6.4), so a
        # guest reading the response after a log call saw the previous one; we clear per host call.
        self._host_response = self._host_error = None
        try:
            self._host_response = self._host_call(binding, namespace, operation, payload) or b""
            return 1
        except HostCallError as err:
            self._host_error = err.wire.encode()
        except Exception:
            log.exception("host call failed", extra={"namespace": namespace, "operation": operation})
            self._host_error = HostcoreError.wire.encode()
        return 0

    # --- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the Store and linker; idempotent. Later calls raise ValueError."""
        if self._closed:
            return
        self._closed = True
        self._drop_store()
        self._release_imports()

    def _release_imports(self) -> None:
        if self._owns_imports:
            self._imports.close()
        elif self._imports.runtime is self:
            self._imports.runtime = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    # wasmtime traps read "error while executing at wasm backtrace: …  Caused by: <reason>";
    # keep the reason, on one line.
    text = str(exc).rsplit("Caused by:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
