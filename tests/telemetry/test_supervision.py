"""start_actor_from_oci across the supervisor's messages, and the supervisor's metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from telemetry_support import metrics, samples, spans, tracer  # noqa: F401 (fixtures)

from hostcore.telemetry import supervision
from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics
from hostcore.telemetry.process import ProcessTelemetry
from hostcore.telemetry.settings import TelemetrySettings
from hostcore.telemetry.supervision import SupervisorTelemetry
from hostcore.telemetry.tracing import extract

KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Claims:
    public_key: str = KEY
    issuer: str = "ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XVKYK4BEJWGVAOOQHZMCW"
    revision: int = 4


def telemetry(tracer: Tracer | None, metrics: HostMetrics | None = None, *, policy: bool = False) -> SupervisorTelemetry:
    process = ProcessTelemetry(settings=TelemetrySettings(), pid=os.getpid(), tracer=tracer, metrics=metrics)
    return SupervisorTelemetry(process, policy=policy)


def events(span: object) -> list[str]:
    return [e.name for e in span.events]  # type: ignore[attr-defined]


def test_a_start_gathers_its_events_until_the_last_instance(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    sup = telemetry(tracer)
    with sup.span("scale_actor", {"traceparent": PARENT}, actor_key=KEY, count=2):
        carrier = sup.start_from_oci("r1", "registry/echo:0.3.4")
    sup.prepared("r1", "registry/echo:0.3.4", 1820240, Claims())
    with sup.instances_of("r1"):
        sup.instance_starting("i1")
        sup.instance_starting("i2")
    sup.instance_starting("stray")  # outside a start (a restart): belongs to nothing
    sup.instance_started("i1", 101)
    assert [s.name for s in spans.get_finished_spans()] == ["scale_actor"]
    sup.instance_started("i2", 102)
    scale, start = spans.get_finished_spans()
    assert start.name == "start_actor_from_oci" and start.parent.span_id == scale.context.span_id  # type: ignore[union-attr]
    assert carrier["traceparent"].split("-")[2] == f"{start.context.span_id:016x}"
    assert events(start) == ["OCI image fetched", "claims verified", "policy decision", "instance started",
                             "instance started"]
    assert start.events[0].attributes["byte_size"] == 1820240  # type: ignore[index]
    assert start.attributes["actor_key"] == KEY and start.status.status_code.name == "UNSET"
    assert sup.starts == {} and sup.by_instance == {}


def test_policy_denial_and_fetch_failure_end_the_span_failed(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    sup = telemetry(tracer, policy=True)
    sup.start_from_oci("r1", "ref")
    sup.prepared("r1", "ref", 10, Claims())
    sup.policy_decision("r1", False, "pinger is not welcome")
    sup.start_from_oci("r2", "ref2")
    sup.start_failed("r2", "Failed to fetch OCI bytes")
    sup.start_failed("r2", "again")  # already ended: ignored
    denied, failed = spans.get_finished_spans()
    assert events(denied) == ["OCI image fetched", "claims verified", "policy decision"]
    assert denied.status.description == "pinger is not welcome"
    assert failed.status.description == "Failed to fetch OCI bytes"


def test_refused_start_and_failed_instance(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    sup = telemetry(tracer)
    sup.start_from_oci("r1", "ref")
    with pytest.raises(ValueError):
        with sup.instances_of("r1"):
            raise ValueError("Actor is already running from another ref")
    sup.start_from_oci("r2", "ref")
    with sup.instances_of("r2"):
        sup.instance_starting("i1")
    sup.instance_failed("i1", "Failed to instantiate")
    refused, failed = spans.get_finished_spans()
    assert refused.status.description == "Actor is already running from another ref"
    assert events(failed)[-1] == "instance failed" and failed.status.description == "Failed to instantiate"


def test_stale_starts_are_closed(tracer: Tracer, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    sup = telemetry(tracer)
    sup.start_from_oci("r1", "ref")
    with sup.instances_of("r1"):
        sup.instance_starting("i1")  # dies before it reports
    monkeypatch.setattr(supervision, "_STALE_S", 0.0)
    sup.start_from_oci("r2", "ref")
    [stale] = spans.get_finished_spans()
    assert stale.status.description == "instances did not report in time" and "r1" not in sup.starts


def test_off_returns_empty_carriers(spans: InMemorySpanExporter) -> None:
    sup = SupervisorTelemetry()
    assert sup.start_from_oci("r1", "ref") == {} and sup.carrier() == {}
    sup.prepared("r1", "ref", 1, Claims())
    with sup.instances_of("r1"):
        sup.instance_starting("i1")
    sup.instance_started("i1", 1)
    sup.instance_count(KEY, 1)
    sup.restarted(KEY)
    with sup.span("scale_actor", {"traceparent": PARENT}) as span:
        assert span.otel is None and extract({}) is None


def test_instance_counts_and_restarts(metrics: HostMetrics) -> None:
    sup = telemetry(None, metrics)
    sup.instance_count(KEY, 3)
    sup.instance_count(KEY, 2)
    sup.restarted(KEY)
    got = samples(Path(os.environ[MULTIPROC_ENV]))
    assert got[("hostcore_actor_instances", (("actor_key", KEY),))] == 2
    assert got[("hostcore_actor_restarts_total", (("actor_key", KEY),))] == 1
