"""Fixtures for the telemetry unit tests (import them by name): an in-memory tracer, a metrics
directory, and the log record factory restored after a test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics, render_metrics

__all__ = ["metrics", "restore_log_factory", "samples", "spans", "tracer"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider.get_tracer("tests")
    provider.shutdown()


@pytest.fixture
def metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostMetrics]:
    """Real multiprocess metrics in a fresh directory (PROMETHEUS_MULTIPROC_DIR restored after)."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    directory = tmp_path / "metrics"
    directory.mkdir()
    host_metrics = HostMetrics(directory)
    yield host_metrics
    host_metrics.close()


def samples(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample `render_metrics` exposes for `directory`, parsed by Prometheus' parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text, _ = render_metrics(directory)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


@pytest.fixture
def restore_log_factory() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)
