"""Helpers shared by the bench scripts: a lean request/reply load generator over one nats-py
client, per-request latency and throughput, CPU accounting per process group, and the
environment-marker scan that finds processes a benchmark left behind."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from _host import MARK_VAR, BenchFailed, machine_busy_s, marked_pids, median, proc_cpu_s

__all__ = [
    "MARK_VAR",
    "BenchFailed",
    "CpuMeter",
    "Requester",
    "Result",
    "kill_leftovers",
    "marked_pids",
    "median",
    "run_load",
]

# --- processes ----------------------------------------------------------------------------------


class CpuMeter:
    """CPU time of named process groups and of the whole machine, for per-request CPU cost and
    for the load of everything else on the machine (other sessions, the idle targets)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def snapshot(self) -> dict[str, float]:
        snap = {name: sum(proc_cpu_s(p) for p in pids) for name, pids in self.groups.items()}
        snap["machine"] = machine_busy_s()
        snap["wall"] = time.monotonic()
        return snap

    @staticmethod
    def usage(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
        """µs of CPU per request for each group, and `other_pct`: the rest of the machine's busy
        time as a percentage of one core."""
        delta = {k: after[k] - before[k] for k in before}
        out = {f"{k}_us_per_req": delta[k] / max(requests, 1) * 1e6 for k in before if k not in ("machine", "wall")}
        ours = sum(v for k, v in delta.items() if k not in ("machine", "wall"))
        out["other_pct"] = max(0.0, delta["machine"] - ours) / delta["wall"] * 100
        return out


def kill_leftovers(mark: str, grace_s: float = 5.0) -> list[int]:
    """Wait up to `grace_s` for the processes carrying `mark` to go, then SIGKILL the rest.
    Returns the pids that had to be killed."""
    left = marked_pids(mark)
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = marked_pids(mark)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


# --- load generation ----------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """One measurement: `rps` counts completions inside the window, latencies (ms) are those of the
    N requests started in it; `cpu` is `CpuMeter.usage` over the window."""

    target: str
    concurrency: int
    warmup_s: float
    window_s: float
    n: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    round: int = 0


class Requester:
    """Request/reply for the load generator: one wildcard inbox subscription, a future per request
    and one watchdog for timeouts (nats-py's `request` adds `asyncio.wait_for` and token work per
    call, which made the load generator the bottleneck at 32 in flight). Owns its subscription
    and watchdog task: use it as an async context manager."""

    def __init__(self, nc: NatsClient, timeout_s: float) -> None:
        self.nc, self.timeout_s = nc, timeout_s
        self.prefix = nc.new_inbox()
        self.pending: dict[str, tuple[asyncio.Future[bytes], float]] = {}
        self.seq = 0

    async def __aenter__(self) -> Requester:
        self.sub = await self.nc.subscribe(self.prefix + ".*", cb=self._on_reply, pending_msgs_limit=65536)
        await self.nc.flush()
        self.watchdog = asyncio.get_running_loop().create_task(self._expire())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.watchdog
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()

    async def _on_reply(self, msg: Msg) -> None:
        item = self.pending.pop(msg.subject, None)
        if item is not None and not item[0].done():
            item[0].set_result(msg.data)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.perf_counter()
            for reply, (fut, started) in list(self.pending.items()):
                if now - started > self.timeout_s:
                    del self.pending[reply]
                    if not fut.done():
                        fut.set_exception(TimeoutError(f"no reply within {self.timeout_s:g} s"))

    async def request(self, subject: str, data: bytes) -> bytes:
        self.seq += 1
        reply = f"{self.prefix}.{self.seq}"
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[reply] = (fut, time.perf_counter())
        await self.nc.publish(subject, data, reply=reply)
        return await fut


def _pct(sorted_s: list[float], q: float) -> float:
    return sorted_s[min(len(sorted_s) - 1, int(len(sorted_s) * q))] * 1000


async def run_load(send: Callable[[str, bytes], Awaitable[bytes]], target: str, subject: str, pool: list[bytes],
                   concurrency: int, warmup_s: float, seconds: float, requests: int | None,
                   check: Callable[[bytes, bytes], str | None], *, label: str = "", timeout_s: float = 5.0,
                   meter: CpuMeter | None = None) -> Result:
    """Keep `concurrency` requests in flight (`send` each, cycling through `pool`) for `warmup_s`,
    then measure for `seconds`, or until `requests` measured requests completed. Checks the last
    reply of every in-flight lane with `check` (None = right, else what is wrong).

    Raises:
        BenchFailed: a checked reply is wrong, or no measured request completed.
    """
    label = label or target
    clock = time.perf_counter
    t_start = clock()
    t_measure = t_start + warmup_s
    t_end = t_measure + seconds if requests is None else float("inf")
    hard_end = t_measure + (seconds if requests is None else 600.0) + timeout_s
    samples: list[tuple[float, float]] = []  # (started, finished) of measured requests
    errors: list[str] = []
    last: list[tuple[bytes, bytes] | None] = [None] * concurrency
    issued = 0
    cpu_before: dict[str, float] = {}

    async def sample_at_start() -> None:
        await asyncio.sleep(max(0.0, t_measure - clock()))
        if meter is not None:
            cpu_before.update(meter.snapshot())

    async def lane(i: int) -> None:
        nonlocal issued
        k = i
        while True:
            t0 = clock()
            if t0 >= t_end or t0 >= hard_end:
                return
            measured = t0 >= t_measure
            if measured and requests is not None:
                if issued >= requests:
                    return
                issued += 1
            data = pool[k % len(pool)]
            k += concurrency
            try:
                reply = await send(subject, data)
            except Exception as err:  # noqa: BLE001 -- counted and reported as a failure
                errors.append(f"{type(err).__name__}: {err}")
                if len(errors) > 20:
                    return
                continue
            t1 = clock()
            if measured:
                samples.append((t0, t1))
            last[i] = (data, reply)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(sample_at_start())
        for i in range(concurrency):
            tg.create_task(lane(i))
    cpu_after = meter.snapshot() if meter is not None else {}
    for item in last:
        if item is not None and (problem := check(*item)) is not None:
            raise BenchFailed(f"{label}: wrong reply during the run: {problem}")
    if not samples:
        raise BenchFailed(f"{label}: no request completed; errors: {errors[:3]}")
    if requests is None:
        window = seconds
        done = sum(1 for _, t1 in samples if t1 <= t_end)
    else:
        window = max(t1 for _, t1 in samples) - t_measure
        done = len(samples)
    lat = sorted(t1 - t0 for t0, t1 in samples)
    return Result(target=target, concurrency=concurrency, warmup_s=warmup_s, window_s=window, n=len(lat),
                  rps=done / window, p50_ms=_pct(lat, 0.5), p99_ms=_pct(lat, 0.99),
                  mean_ms=sum(lat) / len(lat) * 1000, errors=len(errors),
                  cpu=CpuMeter.usage(cpu_before, cpu_after, len(samples)) if cpu_before and cpu_after else {})
