"""ActorSupervisor's spans and metrics (the seed's `Tracer.with_span "Starting Actor from OCI"`).

`scale_actor` and `terminate_actor` are spans around one message. `start_actor_from_oci` spans
the several messages of one start: it opens when the supervisor asks the NativeWorker for the
module and gathers the events "OCI image fetched" (byte_size), "claims verified", "policy
decision" and one "instance started" per instance, ending when the last instance has answered
(or at the first refusal). The supervisor calls the hooks below; each is a no-op for spans when
tracing is off, and for metrics when metrics are off.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hostcore.telemetry.process import ProcessTelemetry, open_process
from hostcore.telemetry.tracing import NO_SPAN, Span, child_carrier, span

if TYPE_CHECKING:
    from hostcore.config import HostConfig

__all__ = ["SupervisorTelemetry"]

# A start whose instances never answered (one died before InstanceStarted) is closed as failed
# after this long, so open spans cannot pile up.
_STALE_S = 120.0


@dataclass(slots=True)
class _Start:
    span: Span
    began: float
    pending: set[str] = field(default_factory=set)


class SupervisorTelemetry:
    """Owned by one ActorSupervisor; not thread-safe (the supervisor is single-threaded)."""

    def __init__(self, process: ProcessTelemetry | None = None, *, policy: bool = False) -> None:
        self.tracer = process.tracer if process is not None else None
        self.metrics = process.metrics if process is not None else None
        self.policy = policy
        self.starts: dict[str, _Start] = {}  # by NativeWorker request id
        self.by_instance: dict[str, str] = {}  # instance id → request id
        self._current = ""

    @classmethod
    def open(cls, config: HostConfig) -> SupervisorTelemetry:
        """The supervisor's telemetry; it forks instances, so exporters get no threads."""
        return cls(open_process(config, role="actor_supervisor", forks=True), policy=bool(config.policy_topic))

    # --- spans around one message ----------------------------------------------------------------

    def span(self, name: str, parent: dict[str, str] | None = None, **attributes: Any) -> contextlib.AbstractContextManager[Span]:
        """A span around the block; `parent` is a message's `trace` carrier (or the current span)."""
        return span(self.tracer, name, parent, **attributes)

    def carrier(self) -> dict[str, str]:
        """The current span for a message to another process."""
        return child_carrier() if self.tracer is not None else {}

    # --- start_actor_from_oci, across messages ---------------------------------------------------

    def start_from_oci(self, request_id: str, actor_ref: str) -> dict[str, str]:
        """Open the start's span (a child of the current one); returns its carrier for PrepareActor."""
        if self.tracer is None:
            return {}
        self._sweep()
        otel = self.tracer.start_span("start_actor_from_oci", attributes={"actor_ref": actor_ref,
                                                                          "request_id": request_id})
        start = self.starts[request_id] = _Start(Span(otel), time.monotonic())
        return start.span.carrier()

    def prepared(self, request_id: str, actor_ref: str, byte_size: int, claims: Any) -> None:
        start = self.starts.get(request_id)
        if start is None:
            return
        start.span.event("OCI image fetched", byte_size=byte_size, actor_ref=actor_ref)
        start.span.event("claims verified", public_key=claims.public_key, issuer=claims.issuer,
                         revision=claims.revision)
        start.span.set(actor_key=claims.public_key)
        if not self.policy:
            start.span.event("policy decision", permitted=True, message="no policy topic configured")

    def policy_decision(self, request_id: str, permitted: bool, message: str) -> None:
        start = self.starts.get(request_id)
        if start is None:
            return
        start.span.event("policy decision", permitted=permitted, message=message)
        if not permitted:
            self.start_failed(request_id, message or "denied by policy")

    def start_failed(self, request_id: str, error: str) -> None:
        start = self.starts.pop(request_id, None)
        if start is None:
            return
        for instance_id in start.pending:
            self.by_instance.pop(instance_id, None)
        start.span.fail(error)
        start.span.end()

    @contextlib.contextmanager
    def instances_of(self, request_id: str) -> Iterator[Span]:
        """Instances started inside the block belong to this start (`instance_starting`), and its
        span is current there. If none were started the span ends on exit."""
        start = self.starts.get(request_id)
        if start is None:
            yield NO_SPAN
            return
        self._current = request_id
        try:
            with start.span.current():
                yield start.span
        except BaseException as err:
            start.span.fail(getattr(err, "wire", "") or str(err) or type(err).__name__)
            raise
        finally:
            self._current = ""
            if request_id in self.starts and not start.pending:
                self.starts.pop(request_id).span.end()

    def instance_starting(self, instance_id: str) -> None:
        if self._current:
            self.starts[self._current].pending.add(instance_id)
            self.by_instance[instance_id] = self._current

    def instance_started(self, instance_id: str, pid: int) -> None:
        self._instance_done(instance_id, "instance started", "", pid=pid)

    def instance_failed(self, instance_id: str, error: str) -> None:
        self._instance_done(instance_id, "instance failed", error)

    def _instance_done(self, instance_id: str, event: str, error: str, **attributes: Any) -> None:
        request_id = self.by_instance.pop(instance_id, "")
        start = self.starts.get(request_id)
        if start is None:
            return
        start.span.event(event, instance_id=instance_id, error=error or None, **attributes)
        if error:
            start.span.fail(error)
        start.pending.discard(instance_id)
        if not start.pending:
            del self.starts[request_id]
            start.span.end()

    def _sweep(self) -> None:
        now = time.monotonic()
        for request_id in [r for r, s in self.starts.items() if now - s.began > _STALE_S]:
            self.start_failed(request_id, "instances did not report in time")

    # --- metrics ---------------------------------------------------------------------------------

    def instance_count(self, actor_key: str, running: int) -> None:
        if self.metrics is not None:
            self.metrics.instances.labels(actor_key).set(running)

    def restarted(self, actor_key: str) -> None:
        if self.metrics is not None:
            self.metrics.restarts.labels(actor_key).inc()
