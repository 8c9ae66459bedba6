"""The tracer provider of one host process and its exporters (the OpenTelemetry SDK).

A module of its own, imported only where tracing is on (hostcore/telemetry/process.py): the SDK
is ~1.5 MB and ~40 ms to import, which the instance template, the CLI and a host that does not
trace never need. The propagation and span helpers, which need only the API, are in tracing.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter

from hostcore.telemetry.fileexport import JsonLinesSpanExporter
from hostcore.telemetry.settings import TelemetrySettings

__all__ = ["new_provider", "preload_exporters"]


def _exporter(name: str, settings: TelemetrySettings) -> SpanExporter:
    if name == "hostcore_file":
        assert settings.traces_file is not None
        return JsonLinesSpanExporter(settings.traces_file)
    if name == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
        OTLPSpanExporter,  # the optional extra `hostcore[otlp]`; settings checked it is installed
    )

    exporter: SpanExporter = OTLPSpanExporter()  # endpoint, headers, timeout: the standard OTEL_EXPORTER_OTLP_* variables
    return exporter


def preload_exporters(settings: TelemetrySettings) -> None:
    """Import the exporters `settings` name that are imported on first use (see `preload`)."""
    if "otlp" in settings.traces_exporters:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # type: ignore[import-not-found,unused-ignore]  # noqa: F401


def new_provider(settings: TelemetrySettings, attributes: Mapping[str, str], *, forks: bool) -> TracerProvider:
    """A TracerProvider for this process, exporting to every exporter in `settings`.

    The file and console exporters write synchronously (one write per span: no thread, and
    nothing is lost when the process is killed). OTLP batches on a thread, except in a process
    that `forks` (architecture.md: a process that forks holds no threads), where it exports each
    span as it ends. The caller owns the provider and shuts it down.
    """
    resource = Resource.create({"service.name": settings.service_name, **attributes})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for name in settings.traces_exporters:
        exporter = _exporter(name, settings)
        processor: SpanProcessor = (BatchSpanProcessor(exporter) if name == "otlp" and not forks
                                    else SimpleSpanProcessor(exporter))
        provider.add_span_processor(processor)
    return provider
