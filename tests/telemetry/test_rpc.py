"""An instance's RPC callback wrapping: untouched when off, metered, traced from headers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from telemetry_support import metrics, samples, spans, tracer  # noqa: F401 (fixtures)

from hostcore.native.invocation import WasmCloudEntity
from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics
from hostcore.telemetry.process import ProcessTelemetry
from hostcore.telemetry.rpc import InstanceTelemetry
from hostcore.telemetry.settings import TelemetrySettings

KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Msg:
    data: bytes = b""
    headers: dict[str, str] | None = None


def instance(tracer: Tracer | None, metrics: HostMetrics | None) -> InstanceTelemetry:
    process = ProcessTelemetry(settings=TelemetrySettings(), pid=os.getpid(), tracer=tracer, metrics=metrics)
    return InstanceTelemetry(process, actor_key=KEY, instance_id="i-1", lattice="default")


async def serve(msg: Any) -> None:
    return None


def calls(_: HostMetrics) -> dict[str, float]:
    got = samples(Path(os.environ[MULTIPROC_ENV]))
    return {n: v for (n, labels), v in got.items() if dict(labels).get("actor_key") == KEY and "le" not in dict(labels)}


def test_off_returns_the_callbacks_themselves() -> None:
    telemetry = instance(None, None)
    sink = lambda *a: None  # noqa: E731
    assert telemetry.wrap_rpc(serve) is serve and telemetry.wrap_result(sink) is sink
    telemetry.close()


async def test_metrics_only_counts_calls_and_errors(metrics: HostMetrics, spans: InMemorySpanExporter) -> None:
    telemetry = instance(None, metrics)
    results: list[bool] = []
    on_result = telemetry.wrap_result(lambda ok, *rest: results.append(ok))
    wrapped = telemetry.wrap_rpc(serve)
    for _ in range(3):
        await wrapped(Msg(headers={"traceparent": PARENT}))
    on_result(False, WasmCloudEntity("MCALLER"), WasmCloudEntity(KEY), "Op", 3)
    telemetry.close()
    got = calls(metrics)
    assert got["hostcore_actor_invocations_total"] == 3 and got["hostcore_actor_invocation_errors_total"] == 1
    assert got["hostcore_actor_invocation_duration_seconds_count"] == 3
    assert results == [False] and spans.get_finished_spans() == ()


async def test_traced_calls_join_the_callers_trace(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    telemetry = instance(tracer, None)
    seen: list[trace.Span] = []

    async def body(msg: Any) -> None:
        seen.append(trace.get_current_span())
        on_result(False, WasmCloudEntity("MCALLER"), WasmCloudEntity(KEY), "HttpServer.HandleRequest", 5)

    on_result = telemetry.wrap_result(lambda *a: None)
    wrapped = telemetry.wrap_rpc(body)
    with tracer.start_as_current_span("inherited"):  # a context left over from the fork
        await wrapped(Msg(headers={"traceparent": PARENT}))
        await wrapped(Msg(headers=None))
    joined, fresh, _ = spans.get_finished_spans()
    assert seen[0] is not None and joined.name == "handle_invocation" and joined.kind.name == "SERVER"
    assert f"{joined.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert fresh.parent is None  # no traceparent: a trace of its own
    assert joined.attributes["operation"] == "HttpServer.HandleRequest" and joined.attributes["origin"] == "MCALLER"
    assert joined.attributes["actor_key"] == KEY and joined.status.status_code.name == "ERROR"


async def test_traced_failures_propagate(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    async def broken(msg: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await instance(tracer, None).wrap_rpc(broken)(Msg())
    [span] = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
