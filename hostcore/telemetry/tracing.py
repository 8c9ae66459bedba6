"""OpenTelemetry tracing for one host process: W3C propagation and a small span handle (the
provider and its exporters: hostcore/telemetry/provider.py).

Trace context crosses two kinds of boundary (protocol.md §1.2):
  * NATS: the `traceparent` / `tracestate` headers of control requests and invocations, read with
    `extract(msg.headers)` and written with `inject()`;
  * Thespian: the `trace` carrier field of the messages in hostcore/tree/messages/, the same
    W3C key/value pairs, so a span in ActorSupervisor can be the child of one in ControlServer.

Everything here takes the process's `Tracer` (or None when tracing is off) from its owner; with
None every helper is a no-op that allocates no span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "NO_SPAN",
    "Span",
    "SpanKind",
    "Tracer",
    "child_carrier",
    "client_span",
    "current_ids",
    "extract",
    "inject",
    "remote_parent",
    "span",
    "trace_headers",
]

# Stateless; W3C only, whatever OTEL_PROPAGATORS says, because the wire format is fixed (§1.2).
_PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
_ROOT = Context()  # an empty context: spans started in it begin a new trace


def extract(carrier: Mapping[str, str] | None) -> Context | None:
    """The remote parent in NATS headers or a message carrier; None when there is none."""
    if not carrier or TRACEPARENT not in carrier:
        return None
    return _PROPAGATOR.extract(carrier)


def remote_parent(carrier: Mapping[str, str] | None) -> Context:
    """The parent of a span that serves a request from elsewhere: the caller's span from the
    request's headers, or none at all (a new trace). Never the process's current context: a
    forked process may have inherited its parent's (the supervisor forks instances inside the
    start's span)."""
    return extract(carrier) or _ROOT


def inject(context: Context | None = None) -> dict[str, str]:
    """W3C headers for `context` (default: the current one); empty without a valid span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    return carrier


def trace_headers() -> dict[str, str] | None:
    """Headers for an outgoing NATS message when the caller has an active span, else None
    (nats-py sends no header block then). Cheap without a span: one context lookup."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    return inject()


def child_carrier() -> dict[str, str]:
    """The current context as a Thespian message carrier ({} without an active span)."""
    return inject() if trace.get_current_span().get_span_context().is_valid else {}


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span in hex, or None."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


class Span:
    """A live span, or nothing (NO_SPAN): the few operations hostcore needs, safe either way."""

    __slots__ = ("otel",)

    def __init__(self, otel: trace.Span | None) -> None:
        self.otel = otel

    def event(self, name: str, **attributes: Any) -> None:
        if self.otel is not None:
            self.otel.add_event(name, _clean(attributes))

    def set(self, **attributes: Any) -> None:
        if self.otel is not None:
            self.otel.set_attributes(_clean(attributes))

    def fail(self, message: str) -> None:
        if self.otel is not None:
            self.otel.set_status(Status(StatusCode.ERROR, message))

    def end(self) -> None:
        if self.otel is not None:
            self.otel.end()

    def carrier(self) -> dict[str, str]:
        """This span as the parent of work in another process (a message's `trace` field)."""
        if self.otel is None:
            return {}
        return inject(trace.set_span_in_context(self.otel))

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make this span the current one for the block (without ending it)."""
        if self.otel is None:
            yield
            return
        with trace.use_span(self.otel, end_on_exit=False):
            yield


NO_SPAN = Span(None)


@contextlib.contextmanager
def span(tracer: Tracer | None, name: str, parent: Mapping[str, str] | None = None, *,
         kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """A span around the block, current inside it, ended on exit; an exception leaving the block
    is recorded and marks it failed. `parent` is a carrier (NATS headers or a message's `trace`);
    without one the current context is the parent. Yields NO_SPAN when `tracer` is None."""
    if tracer is None:
        yield NO_SPAN
        return
    with tracer.start_as_current_span(name, context=extract(parent), kind=kind,
                                      attributes=_clean(attributes)) as otel:
        yield Span(otel)


@contextlib.contextmanager
def client_span(tracer: Tracer | None, name: str, **attributes: Any) -> Iterator[dict[str, str] | None]:
    """A CLIENT span around an outgoing request; yields the headers that carry it (None when
    tracing is off)."""
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=_clean(attributes)):
        yield inject()
