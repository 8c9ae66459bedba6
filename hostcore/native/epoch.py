"""EpochTicker: the clock behind guest call time limits (wasmtime epoch interruption).

Each guest call gets a deadline in epochs; a thread advancing the engine's epoch makes it fire.
"""

from __future__ import annotations

import threading
import time
from typing import Self

import wasmtime

__all__ = ["EPOCH_TICK_S", "EpochTicker"]

# Epoch tick of EpochTicker; the granularity of call time limits.
EPOCH_TICK_S = 0.01

_IDLE_TICKS = 20  # an on-demand ticker keeps ticking this many ticks after the last call


class EpochTicker:
    """Advances an engine's epoch every `tick_s` on a daemon thread, so call time limits fire.

    One per engine. Not started at construction: whoever calls `start()` owns the thread and stops
    it with `close()` (idempotent; joins the thread). Never start one in a process that will fork.
    Without a running ticker, ActorRuntime calls have no time limit.

    `on_demand`: tick only while an ActorRuntime given this ticker runs guest code (it calls
    `enter`/`leave`); idle, the thread sleeps without waking. A thread waking every 10 ms costs
    ~2 % of a core: across hundreds of idle instance processes, that was the whole machine.
    """

    def __init__(self, engine: wasmtime.Engine, tick_s: float = EPOCH_TICK_S, *, on_demand: bool = False) -> None:
        self.engine, self.tick_s, self.on_demand = engine, tick_s, on_demand
        self._stop = threading.Event()
        self._wanted = threading.Event()  # on demand: set while guest code may run
        self._inside = 0  # guest calls in progress (changed by the calling thread only)
        self._entered = 0  # guest calls started so far (same)
        self._thread: threading.Thread | None = None
        if not on_demand:
            self._wanted.set()

    def start(self) -> None:
        """Start ticking; idempotent. Raises ValueError after close()."""
        if self._stop.is_set():
            raise ValueError("EpochTicker already closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
            self._thread.start()

    def enter(self) -> None:
        """Guest code starts running: ticks are needed. Cheap when the thread already ticks."""
        self._inside += 1
        self._entered += 1
        if not self._wanted.is_set():
            self._wanted.set()

    def leave(self) -> None:
        self._inside -= 1

    @property
    def idle(self) -> bool:
        """True while the thread sleeps without ticking (on demand, no guest code running)."""
        return not self._wanted.is_set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stop.is_set():
                return
            # The epoch follows the clock, not the number of wake-ups: on a busy machine a thread
            # sleeping 10 ms wakes late, and counting wake-ups stretched a 1.8 s limit past 2 s.
            began, ticked = time.monotonic(), 0
            seen, quiet = self._entered, 0
            while not self._stop.wait(self.tick_s):
                due = int((time.monotonic() - began) / self.tick_s)
                for _ in range(due - ticked):
                    self.engine.increment_epoch()
                ticked = max(ticked, due)
                if self.on_demand and not self._inside:
                    # Sleep only after _IDLE_TICKS ticks without a call: waking this thread for
                    # each call of a busy instance cost a GIL hand-off and two context switches.
                    if self._entered != seen:
                        seen, quiet = self._entered, 0
                        continue
                    quiet += 1
                    if quiet < _IDLE_TICKS:
                        continue
                    self._wanted.clear()
                    if not self._inside and self._entered == seen:  # no `enter` since the check
                        break
                    self._wanted.set()
            else:
                return

    def close(self, *, wait: bool = True) -> None:
        """Stop ticking. `wait=False` does not join the thread: for a process about to end, whose
        exit ends the thread too (a join waits for the thread to be scheduled: ~10 ms on a busy
        machine)."""
        self._stop.set()
        self._wanted.set()  # wake an idle thread so it sees the stop
        if self._thread is not None and wait:
            self._thread.join()
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
