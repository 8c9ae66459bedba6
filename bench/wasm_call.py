"""µs per echo guest call: ActorRuntime on the fast path vs the public wasmtime-py API.

Baseline, taken in the same run: the echo actor driven directly through wasmtime-py's public API
(`Linker.define_func` host functions, `Memory.read/write`, `Func.__call__`), i.e. what ActorRuntime
would cost without hostcore/native/_fastcall.py. One thread, one instance, 1 call in flight (an
ActorRuntime is single-threaded; concurrency comes from more instances, see the rpc benches).

    python bench/wasm_call.py [N]
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import wasmtime

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hostcore.native.epoch import EpochTicker  # noqa: E402
from hostcore.native.wasm import ActorRuntime, new_engine  # noqa: E402

ECHO = REPO.parent / "shared" / "fixtures" / "actors" / "echo.wasm"
OP = "HttpServer.HandleRequest"
REQ = msgpack.packb({"method": "GET", "path": "/foo", "queryString": "a=1", "header": {}, "body": b"hi"})
WARMUP = 1000


def measure(call: Callable[[], object], n: int) -> tuple[float, float, float]:
    """(mean, p50, p99) in µs over n calls, after WARMUP calls."""
    for _ in range(WARMUP):
        call()
    samples = []
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(n):
        t = clock()
        call()
        samples.append(clock() - t)
    mean = (clock() - start) / n / 1000
    samples.sort()
    return mean, samples[n // 2] / 1000, samples[int(n * 0.99)] / 1000


def public_api_echo(engine: wasmtime.Engine, module: wasmtime.Module) -> Callable[[], bytes]:
    """The echo actor through wasmtime-py's public API only (the baseline)."""
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    i32 = wasmtime.ValType.i32()
    ty = wasmtime.FuncType([i32, i32], [])
    op = OP.encode()
    state: dict[str, bytes] = {}

    def guest_request(caller: wasmtime.Caller, op_ptr: int, ptr: int) -> None:
        mem = caller["memory"]
        mem.write(caller, op, op_ptr)  # type: ignore[union-attr]
        mem.write(caller, REQ, ptr)  # type: ignore[union-attr]

    def guest_response(caller: wasmtime.Caller, ptr: int, n: int) -> None:
        state["response"] = bytes(caller["memory"].read(caller, ptr, ptr + n))  # type: ignore[union-attr]

    linker.define_func("wasmbus", "__guest_request", ty, guest_request, access_caller=True)
    linker.define_func("wasmbus", "__guest_response", ty, guest_response, access_caller=True)
    linker.define_func("wasmbus", "__guest_error", ty, guest_response, access_caller=True)
    guest_call = linker.instantiate(store, module).exports(store)["__guest_call"]

    def call() -> bytes:
        store.set_epoch_deadline(1000)
        assert guest_call(store, len(op), len(REQ)) == 1  # type: ignore[operator]
        return state["response"]

    return call


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    engine = new_engine()
    module = wasmtime.Module.from_file(engine, str(ECHO))
    with EpochTicker(engine):
        runs: dict[str, Callable[[], object]] = {"public wasmtime-py API (baseline)": public_api_echo(engine, module)}
        for fast in (False, True):
            rt = ActorRuntime(engine, module, host_call=lambda *a: b"", console_log=print,
                              call_timeout_s=2.0, max_memory_bytes=64 << 20, fast_path=fast)
            assert msgpack.unpackb(rt.call(OP, REQ))["statusCode"] == 200
            runs[f"ActorRuntime fast_path={fast}"] = functools.partial(rt.call, OP, REQ)
        results = {name: measure(call, n) for name, call in runs.items()}
    base = results["public wasmtime-py API (baseline)"][0]
    print(f"echo.wasm {OP}, N={n}, warm-up={WARMUP}, 1 in flight")
    for name, (mean, p50, p99) in results.items():
        print(f"  {name:36} mean {mean:6.1f} µs  p50 {p50:6.1f}  p99 {p99:6.1f}  = {base / mean:4.2f}x baseline")


if __name__ == "__main__":
    main()
