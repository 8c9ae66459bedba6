"""The NativeWorker's fetch measurement: pull metrics and the "OCI image fetched" event."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from telemetry_support import metrics, samples, spans, tracer  # noqa: F401 (fixtures)

from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics
from hostcore.telemetry.native import NativeTelemetry, ref_scheme
from hostcore.telemetry.process import ProcessTelemetry
from hostcore.telemetry.settings import TelemetrySettings
from hostcore.telemetry.tracing import NO_SPAN


def test_ref_schemes() -> None:
    assert [ref_scheme(r) for r in ("file:///a.wasm", "builtin:keyvalue", "127.0.0.1:5000/echo:0.1")] == [
        "file", "builtin", "oci"]


def test_fetch_records_bytes_duration_and_event(tracer: Tracer, spans: InMemorySpanExporter,
                                                metrics: HostMetrics) -> None:
    native = NativeTelemetry(ProcessTelemetry(settings=TelemetrySettings(), pid=os.getpid(), tracer=tracer,
                                              metrics=metrics))
    with native.span("prepare_actor", None, actor_ref="reg/echo:1") as span:
        with native.fetch("reg/echo:1", span) as fetched:
            fetched(1820240)
    with pytest.raises(OSError):
        with native.fetch("reg/missing:1", NO_SPAN):
            raise OSError("unreachable")
    native.close()
    [prepare] = spans.get_finished_spans()
    [event] = prepare.events
    assert event.name == "OCI image fetched" and event.attributes["byte_size"] == 1820240  # type: ignore[index]
    got = samples(Path(os.environ[MULTIPROC_ENV]))
    assert got[("hostcore_oci_pull_bytes_total", (("scheme", "oci"),))] == 1820240
    assert got[("hostcore_oci_pull_duration_seconds_count", (("result", "ok"), ("scheme", "oci")))] == 1
    assert got[("hostcore_oci_pull_duration_seconds_count", (("result", "error"), ("scheme", "oci")))] == 1
