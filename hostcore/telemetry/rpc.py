"""An ActorModule's telemetry: a span and a latency sample per invocation, error counts, the
tracer its outbound host calls use (hostcore/actors/outbound.py), and its rpcevt events.

The RPC path is the hot one (bench/rpc.py). `wrap_rpc` returns the callback unchanged when both
tracing and metrics are off; with metrics only it adds two clock reads and an InvocationMeter
sample; only with tracing does it read `msg.headers` (one dict lookup) and create spans.
"""

from __future__ import annotations

import asyncio
import json
import time
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from hostcore.telemetry.logcontext import install_log_context
from hostcore.telemetry.process import ProcessTelemetry, open_process
from hostcore.telemetry.tracing import SpanKind, remote_parent
from hostcore.wire import cloudevents

if TYPE_CHECKING:
    from hostcore.config import HostConfig

__all__ = ["InstanceTelemetry", "RpcEvents"]

RpcCallback = Callable[[Any], Awaitable[None]]
ResultSink = Callable[[bool, Any, Any, str, int], None]


class InstanceTelemetry:
    """Owned by one ActorModule. `start(loop)` once the NATS loop runs; `close()` after it stopped."""

    def __init__(self, process: ProcessTelemetry, *, actor_key: str, instance_id: str, lattice: str) -> None:
        self.process = process
        self.tracer = process.tracer
        self.meter = process.metrics.invocation_meter(actor_key) if process.metrics is not None else None
        self.attributes = {"actor_key": actor_key, "instance_id": instance_id, "lattice": lattice}

    @classmethod
    def open(cls, config: HostConfig, *, actor_key: str, instance_id: str) -> InstanceTelemetry:
        process = open_process(config, role="actor", actor_key=actor_key, instance_id=instance_id)
        return cls(process, actor_key=actor_key, instance_id=instance_id, lattice=config.lattice_prefix)

    def rename(self, config: HostConfig, instance_id: str) -> None:
        """A spare became instance `instance_id`: its spans and log records say so from now on."""
        self.attributes["instance_id"] = instance_id
        install_log_context(host_id=config.host_id, lattice=config.lattice_prefix,
                            actor_key=self.attributes["actor_key"], instance_id=instance_id)

    def wrap_rpc(self, serve: RpcCallback) -> RpcCallback:
        """The subscription callback to register instead of `serve`."""
        meter, tracer, perf = self.meter, self.tracer, time.perf_counter
        if tracer is None:
            if meter is None:
                return serve

            async def metered(msg: Any) -> None:
                began = perf()
                await serve(msg)
                meter.observe(perf() - began)
            return metered

        attributes, root = self.attributes, remote_parent(None)

        async def traced(msg: Any) -> None:
            headers = msg.headers
            with tracer.start_as_current_span("handle_invocation", context=remote_parent(headers) if headers else root,
                                              kind=SpanKind.SERVER, attributes=attributes):
                began = perf()
                await serve(msg)
                if meter is not None:
                    meter.observe(perf() - began)
        return traced

    def wrap_result(self, sink: ResultSink) -> ResultSink:
        """The InvocationHandler's result sink: counts errors, names the span's operation."""
        meter, tracer = self.meter, self.tracer
        if meter is None and tracer is None:
            return sink

        def on_result(ok: bool, source: Any, dest: Any, operation: str, size: int) -> None:
            if not ok and meter is not None:
                meter.error()
            if tracer is not None:
                span = trace.get_current_span()
                span.set_attributes({"operation": operation, "origin": source.public_key, "bytes": size})
                if not ok:
                    span.set_status(Status(StatusCode.ERROR, "invocation failed"))
            sink(ok, source, dest, operation, size)
        return on_result

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.meter is not None:
            self.meter.start(loop, self.process.settings.metrics_flush_s)

    def close(self) -> None:
        """Final metrics flush and span export. Idempotent."""
        if self.meter is not None:
            self.meter.stop()
        self.process.flush()


_EVENT_CACHE_SIZE = 1024  # (outcome, source, dest, operation) keys; cleared when full
_ID_MARK, _TIME_MARK, _SIZE_MARK = "\x00id\x00", "\x00time\x00", 987654321  # never in real events


class RpcEvents:
    """protocol.md §3.5 `invocation_succeeded` / `invocation_failed` on one instance's connection.

    The bytes are `cloudevents.cloud_event(...)` of `cloudevents.invocation(...)`, exactly (golden
    test): that JSON is encoded once per (outcome, source, dest, operation) and cached as the parts
    around the event's id, time and byte count, because building it per call cost more than
    serving an echo. `add` (synchronous: it runs inside the handler's result callback) queues an
    event; the RPC callback awaits `flush` right after its reply, so a call's reply and its event
    leave in one socket write without a task per event. An `add` outside a call is flushed on the
    next turn of the loop. Loop thread only.
    """

    def __init__(self, publish: Callable[[str, bytes], Awaitable[None]], subject: str, host_id: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._publish, self._subject, self._host_id, self._loop = publish, subject, host_id, loop
        self._parts: dict[tuple[Any, ...], tuple[bytes, ...]] = {}
        self._queued: list[bytes] = []
        self._second, self._second_text = -1, b""

    def encode(self, ok: bool, source: Any, dest: Any, operation: str, size: int, *, event_id: str,
               time_text: bytes) -> bytes:
        """The event's bytes with the given id and `time` text (`%Y-%m-%dT%H:%M:%S.%fZ`)."""
        key = (ok, source, dest, operation)
        parts = self._parts.get(key)
        if parts is None:
            if len(self._parts) >= _EVENT_CACHE_SIZE:
                self._parts.clear()
            parts = self._parts[key] = self._split(ok, source, dest, operation)
        if not parts:  # a key the split cannot handle: encode it whole
            return self._json(ok, source, dest, operation, size, event_id, time_text.decode()).encode()
        head, middle, tail = parts
        return b"".join((head, event_id.encode(), middle, time_text, tail, b"%d}}" % size))

    def _json(self, ok: bool, source: Any, dest: Any, operation: str, size: int, event_id: str, time_text: str) -> str:
        # The layout of cloudevents.cloud_event: same keys, order and separators.
        event = cloudevents.invocation(source, dest, operation, size, ok=ok)
        return json.dumps({
            "specversion": "1.0", "type": cloudevents.EVENT_TYPE_PREFIX + event.type, "source": self._host_id,
            "id": event_id, "time": time_text, "datacontenttype": "application/json", "data": event.data,
        }, separators=(",", ":"))

    def _split(self, ok: bool, source: Any, dest: Any, operation: str) -> tuple[bytes, ...]:
        """The JSON around id, time and byte count, or () when the markers are not unique in it."""
        text = self._json(ok, source, dest, operation, _SIZE_MARK, _ID_MARK, _TIME_MARK)
        id_mark, time_mark, size_mark = json.dumps(_ID_MARK), json.dumps(_TIME_MARK), f"{_SIZE_MARK}}}}}"
        if text.count(id_mark) != 1 or text.count(time_mark) != 1 or text.count(str(_SIZE_MARK)) != 1:
            return ()
        head, _, rest = text.partition(id_mark)
        middle, _, rest = rest.partition(time_mark)
        if not rest.endswith(size_mark):
            return ()
        return (head + '"').encode(), ('"' + middle + '"').encode(), ('"' + rest[:-len(size_mark)]).encode()

    def now_text(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%06dZ" % (self._second_text, int((now - second) * 1e6))

    def add(self, ok: bool, source: Any, dest: Any, operation: str, size: int) -> None:
        if not self._queued:
            self._loop.call_soon(self._flush_later)
        self._queued.append(self.encode(ok, source, dest, operation, size, event_id=_uuid4_text(),
                                        time_text=self.now_text()))

    @property
    def queued(self) -> bool:
        return bool(self._queued)

    async def flush(self) -> None:
        queued, self._queued = self._queued, []
        for body in queued:
            await self._publish(self._subject, body)

    def _flush_later(self) -> None:
        if self._queued:
            self._loop.create_task(self.flush())


def _uuid4_text() -> str:
    """str(uuid.uuid4()), without building a UUID object (this runs once per call served)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
