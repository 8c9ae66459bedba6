"""An ActorModule's telemetry: a span and a latency sample per invocation, error counts, and the
tracer its outbound host calls use (hostcore/actors/outbound.py).

The RPC path is the hot one (bench/rpc.py). `wrap_rpc` returns the callback unchanged when both
tracing and metrics are off; with metrics only it adds two clock reads and an InvocationMeter
sample; only with tracing does it read `msg.headers` (one dict lookup) and create spans.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from hostcore.telemetry.process import ProcessTelemetry, open_process
from hostcore.telemetry.tracing import SpanKind, remote_parent

if TYPE_CHECKING:
    from hostcore.config import HostConfig

__all__ = ["InstanceTelemetry"]

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
