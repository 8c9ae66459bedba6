"""W3C propagation, the span helpers and the provider built from settings."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from telemetry_support import spans, tracer  # noqa: F401 (fixtures)

from hostcore.telemetry.fileexport import read_spans
from hostcore.telemetry.settings import TelemetrySettings
from hostcore.telemetry.provider import new_provider
from hostcore.telemetry.tracing import (
    NO_SPAN,
    child_carrier,
    client_span,
    current_ids,
    extract,
    inject,
    remote_parent,
    span,
    trace_headers,
)

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_a_span_nothing_is_injected() -> None:
    assert trace_headers() is None and child_carrier() == {} and inject() == {} and current_ids() is None
    assert extract(None) is None and extract({}) is None and extract({"other": "x"}) is None


def test_headers_round_trip(tracer: Tracer) -> None:
    with tracer.start_as_current_span("caller") as caller:
        headers = trace_headers()
        assert headers is not None and child_carrier() == headers
        ctx = caller.get_span_context()
        assert headers["traceparent"].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
        assert current_ids() == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    parent = trace.get_current_span(extract(headers)).get_span_context()
    assert parent.is_remote and parent.span_id == ctx.span_id


def test_span_takes_its_parent_from_a_carrier(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    with span(tracer, "child", {"traceparent": PARENT}, count=2, ref=None) as handle:
        handle.event("claims verified", public_key="MABC", skipped=None)
        handle.set(result="ok")
    [child] = spans.get_finished_spans()
    assert f"{child.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert child.parent is not None and f"{child.parent.span_id:016x}" == "b7ad6b7169203331"
    assert dict(child.attributes or {}) == {"count": 2, "result": "ok"}
    assert child.events[0].name == "claims verified" and dict(child.events[0].attributes or {}) == {"public_key": "MABC"}


def test_span_records_a_failure(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    try:
        with span(tracer, "boom"):
            raise ValueError("bad")
    except ValueError:
        pass
    with span(tracer, "refused") as handle:
        handle.fail("Scaling actor up without an OCI reference is not currently supported")
    boom, refused = spans.get_finished_spans()
    assert boom.status.status_code.name == "ERROR" and boom.events[0].name == "exception"
    assert refused.status.description == "Scaling actor up without an OCI reference is not currently supported"


def test_remote_parent_ignores_an_inherited_context(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    # As in an instance forked inside the supervisor's start span: serving spans start new traces.
    with tracer.start_as_current_span("inherited"):
        with tracer.start_as_current_span("served", context=remote_parent(None)):
            pass
        with tracer.start_as_current_span("called", context=remote_parent({"traceparent": PARENT})):
            pass
    served, called, _ = spans.get_finished_spans()
    assert served.parent is None
    assert called.parent is not None and f"{called.parent.span_id:016x}" == "b7ad6b7169203331"


def test_off_means_no_span_objects(spans: InMemorySpanExporter) -> None:
    with span(None, "x", {"traceparent": PARENT}) as handle:
        assert handle is NO_SPAN
        handle.event("e")
        handle.fail("f")
        assert handle.carrier() == {}
    with client_span(None, "host_call") as headers:
        assert headers is None


def test_client_span_yields_its_headers(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    with client_span(tracer, "host_call", namespace="MECHO") as headers:
        assert headers is not None
    [call] = spans.get_finished_spans()
    assert headers["traceparent"].split("-")[2] == f"{call.context.span_id:016x}"
    assert call.kind.name == "CLIENT"


def test_carrier_and_current_of_a_held_span(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    held = tracer.start_span("start_actor_from_oci")
    from hostcore.telemetry.tracing import Span
    handle = Span(held)
    assert handle.carrier()["traceparent"].split("-")[2] == f"{held.get_span_context().span_id:016x}"
    with handle.current():
        assert trace.get_current_span() is held
    assert trace.get_current_span() is not held
    handle.end()
    assert [s.name for s in spans.get_finished_spans()] == ["start_actor_from_oci"]
    assert otel_context.get_current() == otel_context.Context()


def test_provider_exports_to_the_file(tmp_path: Path) -> None:
    settings = TelemetrySettings(traces_exporters=("hostcore_file",), traces_file=tmp_path / "s.jsonl")
    provider = new_provider(settings, {"hostcore.role": "control"}, forks=True)
    with provider.get_tracer("t").start_as_current_span("ctl.scale"):
        pass
    provider.shutdown()
    [record] = read_spans(tmp_path / "s.jsonl")
    assert record["name"] == "ctl.scale" and record["resource"]["hostcore.role"] == "control"
    assert record["resource"]["service.name"] == "hostcore"


def test_otlp_exports_to_the_configured_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_EXPORTER=otlp: spans reach an OTLP/HTTP collector (a stand-in on loopback)."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[bytes] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{server.server_port}/v1/traces")
        settings = TelemetrySettings.from_environ({"OTEL_TRACES_EXPORTER": "otlp"})
        provider = new_provider(settings, {"hostcore.role": "actor"}, forks=False)
        with provider.get_tracer("t").start_as_current_span("handle_invocation"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    request = ExportTraceServiceRequest.FromString(received[0])
    [scope] = request.resource_spans[0].scope_spans
    assert [s.name for s in scope.spans] == ["handle_invocation"]
