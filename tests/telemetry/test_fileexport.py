"""The JSON-lines span exporter: the record shape, and many processes appending to one file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from hostcore.telemetry.fileexport import JsonLinesSpanExporter, read_spans


def provider_for(path: Path) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"hostcore.host_id": "NHOST"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    return provider


def test_a_span_becomes_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "spans.jsonl"
    provider = provider_for(path)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner", kind=SpanKind.CLIENT, attributes={"n": 1, "tags": ("a", "b")}) as inner:
            inner.add_event("OCI image fetched", {"byte_size": 42})
            inner.set_status(Status(StatusCode.ERROR, "nope"))
    provider.shutdown()
    inner_rec, outer_rec = read_spans(path)
    ctx = outer.get_span_context()
    assert outer_rec["trace_id"] == f"{ctx.trace_id:032x}" and outer_rec["parent_id"] is None
    assert inner_rec["parent_id"] == f"{ctx.span_id:016x}" == outer_rec["span_id"]
    assert inner_rec["kind"] == "CLIENT" and inner_rec["status"] == "ERROR" and inner_rec["status_message"] == "nope"
    assert inner_rec["attributes"] == {"n": 1, "tags": ["a", "b"]}
    assert inner_rec["events"][0]["name"] == "OCI image fetched"
    assert inner_rec["events"][0]["attributes"] == {"byte_size": 42}
    assert inner_rec["resource"]["hostcore.host_id"] == "NHOST"
    assert inner_rec["end_ns"] >= inner_rec["start_ns"] > 0


def test_missing_file_reads_as_no_spans(tmp_path: Path) -> None:
    assert read_spans(tmp_path / "absent.jsonl") == []


WRITER = """
import sys
from pathlib import Path
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from hostcore.telemetry.fileexport import JsonLinesSpanExporter
provider = TracerProvider(shutdown_on_exit=False)
provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(Path(sys.argv[1]))))
tracer = provider.get_tracer("w")
for i in range(300):
    with tracer.start_as_current_span("w" + sys.argv[2], attributes={"i": i, "pad": "x" * 2000}):
        pass
"""


def test_processes_share_a_file_without_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)]) for n in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    records = read_spans(path)  # every line parses
    assert len(records) == 1200
    assert {r["name"] for r in records} == {"w0", "w1", "w2", "w3"}
    assert len({r["pid"] for r in records}) == 4
