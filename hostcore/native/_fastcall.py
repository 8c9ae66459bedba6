"""Fast paths into wasmtime-py internals for the guest-call hot path (architecture.md "Fast wasm calls").

wasmtime-py's public API converts every value through `Val` and re-reads the function type on each
call (measured here, 2 cores: `Func.__call__` of a no-op ~50 µs against ~3 µs unchecked; a
`Linker.define_func` host function ~6 µs per call against ~0.6 µs; `enter_wasm` alone ~3 µs). Here the signature is checked once and calls go straight to the C API:
`wasmtime_func_call_unchecked` with a preallocated raw buffer for the guest's exports and
`wasmtime_linker_define_func_unchecked` callbacks for the host imports. Guest memory is
reached through a raw `wasmtime_memory_data` pointer and `ctypes.memmove`.

These are private names of wasmtime-py, so the version is pinned (`wasmtime>=50,<51`, setup.cfg) and
tests/native/test_wasm.py exercises both paths. `AVAILABLE` is decided once, at import, by looking the
internals up; when it is False (`MISSING` says why) every helper here falls back to the public API,
slower but equivalent.

Not thread-safe: each object here belongs to one Store, used by one thread.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from ctypes import memmove, string_at
from typing import Any

import wasmtime

log = logging.getLogger(__name__)

__all__ = [
    "AVAILABLE",
    "MISSING",
    "GuestFault",
    "I32Call",
    "MemoryBounds",
    "define_host_func",
    "guest_func",
    "memory_bounds",
    "read_guest",
    "write_guest",
]

HostFunc = Callable[..., int | None]
I32Call = Callable[..., int | None]
# Returns (base address, size in bytes) of a guest memory, read fresh on each call.
MemoryBounds = Callable[[], tuple[int, int]]

try:  # Feature check, once: every private name the fast path uses.
    from wasmtime import _bindings as _b
    from wasmtime._ffi import dll as _dll

    _VAL_RAW = _b.wasmtime_val_raw_t
    _TRAP_P = ctypes.POINTER(_b.wasm_trap_t)
    _ERROR_P = ctypes.POINTER(_b.wasmtime_error_t)
    _CALLBACK_T = _b.wasmtime_func_unchecked_callback_t
    _define_unchecked = _b._wasmtime_linker_define_func_unchecked
    _trap_new = _b._wasmtime_trap_new
    # Our own prototypes of the per-call C functions, taking plain addresses (c_void_p built once)
    # and returning ints: the bindings' POINTER argtypes and results cost ~0.5 µs more per call.
    _vp, _sz = ctypes.c_void_p, ctypes.c_size_t
    _call_unchecked = ctypes.CFUNCTYPE(_vp, _vp, _vp, _vp, _sz, _vp)(("wasmtime_func_call_unchecked", _dll))
    _set_deadline = ctypes.CFUNCTYPE(None, _vp, ctypes.c_uint64)(("wasmtime_context_set_epoch_deadline", _dll))
    _memory_data = ctypes.CFUNCTYPE(_vp, _vp, _vp)(("wasmtime_memory_data", _dll))
    _memory_size = ctypes.CFUNCTYPE(_sz, _vp, _vp)(("wasmtime_memory_data_size", _dll))
    _NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
    if ctypes.sizeof(_VAL_RAW) != 16 or not callable(wasmtime.Store._context):
        raise AttributeError("unexpected wasmtime_val_raw_t / Store layout")
    AVAILABLE = True
    MISSING = ""
except (ImportError, AttributeError) as exc:  # pragma: no cover - the pinned version has them
    AVAILABLE = False
    MISSING = f"{type(exc).__name__}: {exc}"


_I32 = wasmtime.ValType.i32()


def _addr(obj: Any) -> ctypes.c_void_p:
    """The address a ctypes pointer holds, as a reusable c_void_p argument."""
    return ctypes.c_void_p(ctypes.cast(obj, ctypes.c_void_p).value)


class GuestFault(Exception):
    """A guest handed the host a pointer/length outside its linear memory; the call traps."""


class _FastI32Func:
    """A guest function of i32s called through `wasmtime_func_call_unchecked`.

    The signature is checked once (guest_func); a call sets the epoch deadline and fills the raw
    buffer. Traps are raised as `wasmtime.Trap`, other failures (WASI exit, a host function's trap)
    as `wasmtime.WasmtimeError`, as `Func.__call__` does. `enter_wasm` is inlined: it costs ~3 µs
    per call and only serves wasmtime-py's Python host functions, which the fast path does not use.
    """

    __slots__ = ("_buf", "_bufp", "_ctx", "_func", "_funcp", "_nbuf", "_has_result", "_trap",
                 "_trapp", "_store", "_ticks")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, deadline_ticks: int) -> None:
        ty = func.type(store)
        self._nbuf = max(1, len(ty.params), len(ty.results))
        self._buf = (_VAL_RAW * self._nbuf)()
        self._has_result = bool(ty.results)
        self._store, self._func = store, func  # keep what the addresses below point into alive
        self._ctx = _addr(store._context())
        self._funcp = ctypes.c_void_p(ctypes.addressof(func._func))
        self._bufp = ctypes.c_void_p(ctypes.addressof(self._buf))
        self._trap = ctypes.c_void_p()  # the wasm_trap_t* out-parameter
        self._trapp = ctypes.c_void_p(ctypes.addressof(self._trap))
        self._ticks = deadline_ticks

    def __call__(self, *args: int) -> int | None:
        buf = self._buf
        for i, arg in enumerate(args):
            buf[i].i32 = arg
        _set_deadline(self._ctx, self._ticks)
        err = _call_unchecked(self._ctx, self._funcp, self._bufp, self._nbuf, self._trapp)
        if err:
            raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, _ERROR_P))
        if self._trap.value:
            trap = wasmtime.Trap._from_ptr(ctypes.cast(self._trap.value, _TRAP_P))  # owns it now
            self._trap.value = None
            raise trap
        return buf[0].i32 if self._has_result else None


def _check_i32(ty: wasmtime.FuncType, nparams: int, nresults: int) -> bool:
    return (len(ty.params), len(ty.results)) == (nparams, nresults) and all(
        t == _I32 for t in (*ty.params, *ty.results)
    )


def guest_func(store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int, *,
               deadline_ticks: int, fast: bool) -> I32Call:
    """A callable `(*i32) -> int | None` calling `func`, fast when `fast` and the internals exist.

    Each call first sets the store's epoch deadline to `deadline_ticks` ticks from now. Raises
    TypeError when `func` is not of type (i32 × nparams) -> (i32 × nresults). The callable borrows
    `store`: it must not be used after the store is closed.
    """
    if not _check_i32(func.type(store), nparams, nresults):
        raise TypeError(f"expected a function of {nparams} i32 -> {nresults} i32")
    if fast and AVAILABLE:
        return _FastI32Func(store, func, deadline_ticks)

    def call(*args: int) -> int | None:
        store.set_epoch_deadline(deadline_ticks)
        result: int | None = func(store, *args)
        return result

    return call


def memory_bounds(store: wasmtime.Store, memory: wasmtime.Memory, *, fast: bool) -> MemoryBounds:
    """A callable returning the memory's current (base address, byte size).

    Call it again after anything that may grow the memory (any guest code): the base may move.
    Borrows `store` like guest_func.
    """
    if fast and AVAILABLE:
        ctx, ref = _addr(store._context()), ctypes.c_void_p(ctypes.addressof(memory._memory))

        # `_keep` holds what ctx and ref point into.
        def bounds(_keep: object = (store, memory)) -> tuple[int, int]:
            return _memory_data(ctx, ref) or 0, _memory_size(ctx, ref)

        return bounds
    return lambda: (_addr(memory.data_ptr(store)).value or 0, memory.data_len(store))


def read_guest(bounds: tuple[int, int], ptr: int, n: int) -> bytes:
    """Copy `n` bytes at guest offset `ptr` out of a memory with `bounds` (see memory_bounds).
    Raises GuestFault when the range is outside the memory."""
    base, size = bounds
    ptr, n = ptr & 0xFFFFFFFF, n & 0xFFFFFFFF  # the ABI's i32 are unsigned offsets/lengths
    if ptr + n > size:
        raise GuestFault(f"guest memory access out of bounds: {ptr}+{n} > {size}")
    return string_at(base + ptr, n)


def write_guest(bounds: tuple[int, int], ptr: int, data: bytes) -> None:
    """Copy `data` to guest offset `ptr` (ctypes.memmove, not Memory.write: one copy, no checks
    beyond ours). Raises GuestFault when the range is outside the memory."""
    base, size = bounds
    ptr = ptr & 0xFFFFFFFF
    if ptr + len(data) > size:
        raise GuestFault(f"guest memory access out of bounds: {ptr}+{len(data)} > {size}")
    memmove(base + ptr, data, len(data))


def _trap_for(exc: BaseException, on_exception: Callable[[BaseException], None]) -> int:
    """Report `exc` and make the wasm_trap_t* a host callback returns (wasmtime takes ownership)."""
    on_exception(exc)
    msg = str(exc).encode("utf-8", "replace") or type(exc).__name__.encode()
    return ctypes.cast(_trap_new(msg, len(msg)), ctypes.c_void_p).value or 0


def _raw_callback(fn: HostFunc, nparams: int, nresults: int,
                  on_exception: Callable[[BaseException], None]) -> Callable[..., int]:
    # One adapter per ABI shape (protocol.md §6.1): indexing `raw` directly is ~0.4 µs faster
    # per host call than a generic argument list. A C callback must not raise: the guest traps.
    if (nparams, nresults) == (2, 0):
        def cb(_env: Any, _caller: Any, raw: Any, _n: int) -> int:
            try:
                fn(raw[0].i32, raw[1].i32)
                return 0
            except BaseException as exc:
                return _trap_for(exc, on_exception)
    elif (nparams, nresults) == (1, 0):
        def cb(_env: Any, _caller: Any, raw: Any, _n: int) -> int:
            try:
                fn(raw[0].i32)
                return 0
            except BaseException as exc:
                return _trap_for(exc, on_exception)
    elif (nparams, nresults) == (0, 1):
        def cb(_env: Any, _caller: Any, raw: Any, _n: int) -> int:
            try:
                raw[0].i32 = fn()
                return 0
            except BaseException as exc:
                return _trap_for(exc, on_exception)
    else:
        idx = tuple(range(nparams))

        def cb(_env: Any, _caller: Any, raw: Any, _n: int) -> int:
            try:
                result = fn(*[raw[i].i32 for i in idx])
                if nresults:
                    raw[0].i32 = result
                return 0
            except BaseException as exc:
                return _trap_for(exc, on_exception)
    return cb


def define_host_func(linker: wasmtime.Linker, module: str, name: str, fn: HostFunc,
                     nparams: int, nresults: int, on_exception: Callable[[BaseException], None],
                     *, fast: bool) -> object:
    """Define `module.name` in `linker` as `fn(*i32) -> int | None` (all params/results i32).

    Fast path: if `fn` raises, `on_exception(exc)` is called and the guest traps with `str(exc)`;
    the caller of the guest then decides what to raise. Public path: wasmtime-py re-raises `fn`'s
    exception itself from the guest call. Returns an object that must be kept alive as long as
    `linker` and every Store instantiated from it (it owns the C callback).
    """
    ty = wasmtime.FuncType([_I32] * nparams, [_I32] * nresults)
    if not (fast and AVAILABLE):
        linker.define_func(module, name, ty, fn)
        return fn
    thunk = _CALLBACK_T(_raw_callback(fn, nparams, nresults, on_exception))
    m, n = module.encode(), name.encode()
    err = _define_unchecked(linker.ptr(), m, len(m), n, len(n), ty.ptr(), thunk, None, _NO_FINALIZER)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
    return thunk
