"""ControlServer's request spans and counts: answered at once, later, with a failure, or never."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from telemetry_support import metrics, samples, spans, tracer  # noqa: F401 (fixtures)

from hostcore.wire.control import failure_ack, success_ack
from hostcore.wire.subjects import ControlTopic
from hostcore.telemetry.control import ControlTelemetry, command_name
from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics
from hostcore.telemetry.process import ProcessTelemetry
from hostcore.telemetry.settings import TelemetrySettings
from hostcore.telemetry.tracing import child_carrier

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def control(tracer: Tracer, metrics: HostMetrics) -> ControlTelemetry:
    return ControlTelemetry(ProcessTelemetry(settings=TelemetrySettings(), pid=os.getpid(), tracer=tracer,
                                             metrics=metrics))


def counts(_: HostMetrics) -> dict[tuple[str, str], float]:
    got = samples(Path(os.environ[MULTIPROC_ENV]))
    return {(dict(k)["command"], dict(k)["result"]): v for (n, k), v in got.items()
            if n == "hostcore_control_requests_total"}


def test_command_names() -> None:
    assert command_name(ControlTopic(kind="cmd", op="scale", host_id="N")) == "scale"
    assert command_name(ControlTopic(kind="linkdefs", op="put", host_id="")) == "linkdefs.put"
    assert command_name(None) == "unknown"


def test_answered_during_dispatch(control: ControlTelemetry, spans: InMemorySpanExporter, metrics: HostMetrics) -> None:
    with control.request("scale", "_INBOX.1", {"traceparent": PARENT}):
        carrier = control.carrier()
        control.replied("_INBOX.1", success_ack())
    [span] = spans.get_finished_spans()
    assert span.name == "ctl.scale" and span.kind.name == "SERVER" and span.attributes["result"] == "ok"
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"  # type: ignore[union-attr]
    assert carrier["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert counts(metrics) == {("scale", "ok"): 1}


def test_failure_ack_and_exception_are_errors(control: ControlTelemetry, spans: InMemorySpanExporter,
                                              metrics: HostMetrics) -> None:
    with control.request("la", "_INBOX.2", None):
        control.replied("_INBOX.2", failure_ack("Failed to parse actor launch request"))
    with pytest.raises(RuntimeError):
        with control.request("sp", "_INBOX.3", None):
            raise RuntimeError("boom")
    refused, crashed = spans.get_finished_spans()
    assert refused.status.status_code.name == "ERROR" and "Failed to parse" in (refused.status.description or "")
    assert crashed.status.status_code.name == "ERROR"
    assert counts(metrics) == {("la", "error"): 1, ("sp", "error"): 1}


def test_deferred_requests_end_when_answered(control: ControlTelemetry, spans: InMemorySpanExporter,
                                             metrics: HostMetrics) -> None:
    with control.request("sa", "_INBOX.4", None):
        control.defer()
    assert spans.get_finished_spans() == ()
    control.replied("_INBOX.9", success_ack())  # someone else's answer: ignored
    control.replied("_INBOX.4", success_ack())
    [span] = spans.get_finished_spans()
    assert span.name == "ctl.sa" and span.attributes["result"] == "ok"
    assert counts(metrics) == {("sa", "ok"): 1}


def test_unanswered_requests(control: ControlTelemetry, metrics: HostMetrics) -> None:
    with control.request("auction.actor", "_INBOX.5", None):
        pass  # labels did not match: no bid
    with control.request("registries.put", "", None):
        pass  # published without a reply subject
    with control.request("auction.provider", "_INBOX.6", None):
        control.defer()
    control.close()
    control.close()
    assert counts(metrics) == {("auction.actor", "no_reply"): 1, ("registries.put", "ok"): 1,
                               ("auction.provider", "no_reply"): 1}


def test_off_is_silent() -> None:
    control = ControlTelemetry()
    with control.request("scale", "_INBOX.1", {"traceparent": PARENT}) as span:
        assert control.carrier() == {} and child_carrier() == {}
        control.replied("_INBOX.1", success_ack())
    assert span.otel is None
    control.close()
