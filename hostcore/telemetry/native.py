"""NativeWorker's spans and metrics: a `prepare_actor` span per fetch-verify-compile (the child
of the supervisor's start_actor_from_oci, through PrepareActor.trace) and the pull metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from hostcore.telemetry.process import ProcessTelemetry, open_process
from hostcore.telemetry.tracing import Span, span

if TYPE_CHECKING:
    from hostcore.config import HostConfig

__all__ = ["NativeTelemetry", "ref_scheme"]


def ref_scheme(ref: str) -> str:
    """The `scheme` label of a pull: file, builtin or oci."""
    if ref.startswith("file://"):
        return "file"
    if ref.startswith("builtin:"):
        return "builtin"
    return "oci"


class NativeTelemetry:
    """Owned by the NativeWorker; thread-safe (its pool threads use it)."""

    def __init__(self, process: ProcessTelemetry | None = None) -> None:
        self.tracer = process.tracer if process is not None else None
        self.metrics = process.metrics if process is not None else None
        self.process = process

    @classmethod
    def open(cls, config: HostConfig) -> NativeTelemetry:
        return cls(open_process(config, role="native"))

    def span(self, name: str, parent: dict[str, str] | None = None, **attributes: Any) -> contextlib.AbstractContextManager[Span]:
        return span(self.tracer, name, parent, **attributes)

    @contextlib.contextmanager
    def fetch(self, ref: str, current: Span) -> Iterator[Callable[[int], None]]:
        """Around one artifact fetch: call the yielded function with the byte size once fetched.
        Records the pull's bytes and duration, and the event "OCI image fetched" on `current`."""
        size = 0

        def fetched(byte_size: int) -> None:
            nonlocal size
            size = byte_size

        began, ok = time.perf_counter(), False
        try:
            yield fetched
            ok = True
        finally:
            seconds = time.perf_counter() - began
            if self.metrics is not None:
                self.metrics.oci_pull(ref_scheme(ref), ok, size, seconds)
            if ok:
                current.event("OCI image fetched", byte_size=size, ref=ref, seconds=round(seconds, 6))

    def close(self) -> None:
        if self.process is not None:
            self.process.flush()
