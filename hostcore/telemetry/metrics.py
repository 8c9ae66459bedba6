"""Prometheus metrics in prometheus_client's multiprocess mode, and the `/metrics` text.

Every process of a host writes its own values into per-pid files under the host's metrics
directory (`metrics_dir(config)`, exported as PROMETHEUS_MULTIPROC_DIR by the launcher before the
ActorSystem forks anything, and emptied at each start). `render_metrics` merges the files, so a
kill -9'd instance's counts stay in the totals, and folds dead processes' files into one per type
(hostcore/telemetry/deadfiles.py). Serve it with `MetricsApp` (ASGI: mount it at `/metrics` on
the dashboard) or, from the launcher, `MetricsServer` (HOSTCORE_METRICS_PORT).

Hot path: an instance does not touch prometheus_client per call. A Counter.inc plus a
Histogram.observe on mmap'd values measured ~4.3 µs per call here (a hostcore echo call costs
~40–70 µs of host CPU); `InvocationMeter` keeps plain integers on the instance's loop thread
(~0.4 µs) and pushes them into the files every `metrics_flush_s`.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import shutil
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hostcore.telemetry.deadfiles import FoldingCollector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from hostcore.config import HostConfig

__all__ = [
    "LATENCY_BUCKETS",
    "MULTIPROC_ENV",
    "PULL_BUCKETS",
    "HostMetrics",
    "InvocationMeter",
    "MetricsApp",
    "MetricsServer",
    "metrics_dir",
    "preload_client",
    "prepare_metrics_dir",
    "render_metrics",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# RPC latencies are tens of µs to seconds (the default buckets start at 5 ms).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
PULL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def metrics_dir(config: HostConfig) -> Path:
    """The host's multiprocess directory: one per host id under its data dir (as the embedded
    nats-server's), so two hosts sharing a data dir never empty each other's."""
    return config.data_dir / "metrics" / config.host_id[:16]


def prepare_metrics_dir(directory: Path, environ: MutableMapping[str, str]) -> None:
    """Empty (or create) `directory` and export it as PROMETHEUS_MULTIPROC_DIR in `environ`.

    The launcher calls this once, before the ActorSystem starts: every process of the tree is
    forked afterwards and inherits the variable. Values left by a previous run would otherwise
    be added to this run's.
    """
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    environ[MULTIPROC_ENV] = str(directory)


def preload_client() -> None:
    """Import the parts of prometheus_client that `HostMetrics` uses. The launcher calls this
    before the ActorSystem forks: every process of the tree then shares one copy of the library
    instead of importing its own after the fork (~4 MB of private memory in each process)."""
    import prometheus_client.values  # noqa: F401


_MAKING = threading.Lock()  # a process's NATS thread and its actor thread both record metrics


class _Metric:
    """A metric of HostMetrics, made on first use: a process makes only the ones it uses, an idle
    instance none. Making one writes to pages a forked process shares with its parent: all nine
    made at an echo instance's start cost it 0.25 MB of private memory (6.31 → 6.06 MB)."""

    def __init__(self, kind: Literal["Counter", "Gauge", "Histogram"], name: str, documentation: str,
                 labels: list[str], **options: Any) -> None:
        self.kind, self.name, self.documentation, self.labels, self.options = kind, name, documentation, labels, options
        self.attribute = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, metrics: HostMetrics | None, owner: type | None = None) -> Any:
        if metrics is None:
            return self
        import prometheus_client

        with _MAKING:  # two objects for one series would each count from their own copy
            made = metrics.__dict__.get(self.attribute)
            if made is None:
                metrics._use_values()
                made = getattr(prometheus_client, self.kind)(self.name, self.documentation, self.labels,
                                                              registry=None, **self.options)
                metrics.__dict__[self.attribute] = made  # found there from now on, before this descriptor
        return made



class HostMetrics:
    """The metric objects of one process. Create at most one per process (two objects for the
    same series in one process would overwrite each other's file entry): ProcessTelemetry does.

    Writes into `directory` (an existing directory; exported as PROMETHEUS_MULTIPROC_DIR, which
    prometheus_client reads when it opens a value file).
    """

    invocations = _Metric("Counter", "hostcore_actor_invocations", "RPC invocations served by actor instances",
                          ["actor_key"])
    invocation_errors = _Metric("Counter", "hostcore_actor_invocation_errors",
                                "RPC invocations answered with an error", ["actor_key"])
    invocation_seconds = _Metric("Histogram", "hostcore_actor_invocation_duration_seconds",
                                 "Time from receiving an invocation to publishing its response", ["actor_key"],
                                 buckets=LATENCY_BUCKETS)
    instances = _Metric("Gauge", "hostcore_actor_instances", "Running instances per actor", ["actor_key"],
                        multiprocess_mode="mostrecent")
    restarts = _Metric("Counter", "hostcore_actor_restarts", "Actor instances restarted after they died", ["actor_key"])
    pull_bytes = _Metric("Counter", "hostcore_oci_pull_bytes", "Bytes of actor and provider artifacts fetched",
                         ["scheme"])
    pull_seconds = _Metric("Histogram", "hostcore_oci_pull_duration_seconds", "Time to fetch an artifact",
                           ["scheme", "result"], buckets=PULL_BUCKETS)
    control_requests = _Metric("Counter", "hostcore_control_requests", "Control-interface requests handled",
                               ["command", "result"])
    nats_reconnects = _Metric("Counter", "hostcore_nats_reconnects", "NATS connections re-established", ["connection"])

    def __init__(self, directory: Path) -> None:
        if os.environ.get(MULTIPROC_ENV) != str(directory):  # as a rule inherited from the launcher
            os.environ[MULTIPROC_ENV] = str(directory)
        self._values: Any = None

    def _use_values(self) -> None:
        """Before making a metric: this object's value class in prometheus_client's hands."""
        from prometheus_client import values

        if self._values is None:
            # prometheus_client picks its value class when it is first imported, which may have
            # been before the variable was set, and that class caches its open files. A fresh one
            # per HostMetrics writes where this object was told to, and knows nothing of the metric
            # objects a forked parent left in memory (no stray zero series in our files).
            self._values = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        values.ValueClass = self._values

    def close(self) -> None:
        """Close this object's value files (the values stay in them). Idempotent; the metric
        objects must not be used afterwards."""
        close = getattr(self._values, "close_all_files", None)
        if close is not None:
            close()

    def invocation_meter(self, actor_key: str) -> InvocationMeter:
        return InvocationMeter(lambda: (self.invocations.labels(actor_key), self.invocation_errors.labels(actor_key),
                                        self.invocation_seconds.labels(actor_key)))

    def oci_pull(self, scheme: str, ok: bool, byte_size: int, seconds: float) -> None:
        if ok:
            self.pull_bytes.labels(scheme).inc(byte_size)
        self.pull_seconds.labels(scheme, "ok" if ok else "error").observe(seconds)

    def control_request(self, command: str, result: str) -> None:
        self.control_requests.labels(command, result).inc()

    def nats_reconnect(self, connection: str) -> None:
        self.nats_reconnects.labels(connection).inc()


class InvocationMeter:
    """Invocation tallies of one actor instance, kept as plain numbers by the thread that serves
    calls and pushed into the multiprocess files by `flush` (same thread, or after it stopped).

    `flush` writes histogram buckets through prometheus_client's per-bucket values (`_buckets`,
    `_sum`): there is no public "observe n times"; tests/telemetry/test_metrics.py pins it.

    The labelled values are made by `children` at the first flush with something to write: each
    one is a value in a memory-mapped file, ~20 for a histogram, and an instance that is never
    called (or not yet) would pay for them at its start.
    """

    __slots__ = ("_children", "_calls", "_errors", "_latency", "calls", "errors", "total", "buckets", "_timer")

    def __init__(self, children: Callable[[], tuple[Any, Any, Any]]) -> None:
        self._children = children
        self._calls: Any = None
        self._errors: Any = None
        self._latency: Any = None
        self.calls = 0
        self.errors = 0
        self.total = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, seconds: float) -> None:
        """One served call (hot path: no locks, no I/O)."""
        self.calls += 1
        self.total += seconds
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def error(self) -> None:
        self.errors += 1

    def flush(self) -> None:
        calls, errors, total, buckets = self.calls, self.errors, self.total, self.buckets
        if not (calls or errors):
            return
        self.calls, self.errors, self.total = 0, 0, 0.0
        self.buckets = [0] * len(buckets)
        if self._calls is None:
            self._calls, self._errors, self._latency = self._children()
        if calls:
            self._calls.inc(calls)
            for value, n in zip(self._latency._buckets, buckets):
                if n:
                    value.inc(n)
            self._latency._sum.inc(total)
        if errors:
            self._errors.inc(errors)

    def start(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        """Flush every `interval_s` on `loop` (the thread that calls `observe`). Thread-safe."""
        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(interval_s, tick)

        loop.call_soon_threadsafe(tick)

    def stop(self) -> None:
        """Final flush; call once the serving loop has stopped. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()


def render_metrics(directory: Path) -> tuple[bytes, str]:
    """The Prometheus text exposition of every process's values in `directory`, and its
    content type; dead processes' files are folded first (hostcore/telemetry/deadfiles.py).
    Reads files: call it off the event loop (MetricsApp does)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    FoldingCollector(directory, registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsApp:
    """ASGI app answering every GET with `render_metrics(directory)`. Mount it on the dashboard:
    `Route("/metrics", MetricsApp(metrics_dir(config)))` (an instance, so Starlette treats it as
    an ASGI app). Stateless; safe to share."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET, HEAD")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body, content_type = await asyncio.to_thread(render_metrics, self.directory)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})


class MetricsServer:
    """`/metrics` over HTTP on `host:port` from a daemon thread (prometheus_client's server).

    The launcher owns it: start it only after the ActorSystem exists (the launcher must hold no
    thread when Thespian forks), `close()` it on exit (idempotent). `port` 0 picks a free port.
    """

    def __init__(self, directory: Path, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        FoldingCollector(directory, registry)
        self._server: WSGIServer | None
        self._server, self._thread = start_http_server(port, host, registry=registry)
        self.port = int(self._server.server_port)
        self.url = f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(2.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
