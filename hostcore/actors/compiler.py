"""Compiling a module into the .cwasm cache in a short-lived process of its own.

Why a process: cranelift keeps what it allocated for a compile (and its compile threads) for the
life of the process that compiled; measured in the NativeWorker, 16 → 34 MB PSS after one echo
compile, of which malloc_trim gives back only ~6 MB. A child that exits gives all of it back, for
~0.3 s of interpreter start per compile (an echo compile itself takes 1-3 s).

The child is `python -m hostcore.actors.compiler CACHE_DIR` with the module on stdin; it runs
`compile_to_cache` (same engine Config, same cache rules) and answers one JSON line on stdout.
`subprocess` starts it with fork + exec and no Python code in between, so the NativeWorker's
threads are no hazard.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hostcore.errors import HostcoreError, ModuleCompileFailed, NotWasm

__all__ = ["CompileChildFailed", "compile_in_child"]


class CompileChildFailed(Exception):
    """The compile failed for a reason other than the module (the child died, or an error such
    as a full disk; the text is the error's own)."""


def compile_in_child(module_bytes: bytes, cache_dir: Path) -> Path:
    """`compile_to_cache(new_engine(), module_bytes, cache_dir)`, run in a child process.

    Raises what `compile_to_cache` raises (NotWasm, ModuleCompileFailed, with the same texts), or
    CompileChildFailed when the child did not answer.
    """
    proc = subprocess.run([sys.executable, "-m", __name__, str(cache_dir)], input=module_bytes,
                          capture_output=True, check=False)
    try:
        answer = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise CompileChildFailed(f"compile process failed: {detail[0]}") from None
    match answer:
        case {"path": str(path)}:
            return Path(path)
        case {"not_wasm": True}:
            raise NotWasm()
        case {"compile_failed": str(detail)}:
            raise ModuleCompileFailed(detail)
        case {"error": str(wire)}:
            raise HostcoreError(wire)
        case {"failed": str(text)}:
            raise CompileChildFailed(text)
    raise CompileChildFailed(f"compile process answered {answer!r}")


def _main(cache_dir: str) -> int:
    from hostcore.native.wasm import compile_to_cache, new_engine
    from hostcore.procutil import set_pdeathsig

    set_pdeathsig()  # a compile nobody waits for is wasted
    answer: dict[str, object]
    try:
        answer = {"path": str(compile_to_cache(new_engine(), sys.stdin.buffer.read(), Path(cache_dir)))}
    except NotWasm:
        answer = {"not_wasm": True}
    except ModuleCompileFailed as err:
        answer = {"compile_failed": err.detail}
    except HostcoreError as err:
        answer = {"error": err.wire}
    except Exception as err:  # noqa: BLE001 -- the parent reports it as it would its own failure
        answer = {"failed": str(err)}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
