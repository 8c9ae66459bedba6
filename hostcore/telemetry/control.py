"""ControlServer's spans and metrics: one span per control request, named `ctl.{command}` and
parented by the request's `traceparent` header (protocol.md §1.2), and the request count by
command and result.

A request ends when it is answered. Most are answered while they are dispatched; those that
wait for the tree (`sa`, `upd`, `lp`, inventories…) stay open until `replied` sees their answer.
The result is `ok`, `error` (a failure ack or an exception), or `no_reply` (nothing was sent).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hostcore.telemetry.process import ProcessTelemetry, open_process
from hostcore.telemetry.tracing import NO_SPAN, Span, SpanKind, child_carrier, remote_parent
from hostcore.wire.control import failure_ack

if TYPE_CHECKING:
    from hostcore.config import HostConfig
    from hostcore.wire.subjects import ControlTopic

__all__ = ["ControlTelemetry", "command_name"]

# A request still unanswered after this long (an auction this host does not bid on) is counted
# as no_reply; the control client has long given up by then.
_ANSWER_WINDOW_S = 60.0
_FAILED = failure_ack("")[:-2]  # `{"accepted":false,"error":` — the envelope is built in wire/control.py


def command_name(topic: ControlTopic | None) -> str:
    """`scale`, `la`, … for host commands; `get.inv`, `linkdefs.put`, … otherwise."""
    if topic is None:
        return "unknown"
    return topic.op if topic.kind == "cmd" else f"{topic.kind}.{topic.op}"


@dataclass(slots=True)
class _Request:
    command: str
    reply: str
    span: Span
    began: float
    result: str = ""  # set once answered
    deferred: bool = False


class ControlTelemetry:
    """Owned by one ControlServer; used on its actor thread only."""

    def __init__(self, process: ProcessTelemetry | None = None) -> None:
        self.process = process
        self.tracer = process.tracer if process is not None else None
        self.metrics = process.metrics if process is not None else None
        self._current: _Request | None = None
        self._open: dict[str, _Request] = {}  # by reply subject

    @classmethod
    def open(cls, config: HostConfig) -> ControlTelemetry:
        return cls(open_process(config, role="control"))

    @contextlib.contextmanager
    def request(self, command: str, reply: str, headers: Mapping[str, str] | None) -> Iterator[Span]:
        """Around the dispatch of one request: its span is current inside the block."""
        self._expire()
        span = NO_SPAN
        if self.tracer is not None:
            otel = self.tracer.start_span(f"ctl.{command}", context=remote_parent(headers), kind=SpanKind.SERVER,
                                          attributes={"command": command})
            span = Span(otel)
        req = self._current = _Request(command, reply, span, time.monotonic())
        try:
            with span.current():
                yield span
        except BaseException as err:
            req.result = req.result or "error"
            span.fail(str(err) or type(err).__name__)
            raise
        finally:
            self._current = None
            if req.result:
                self._finish(req, req.result)
            elif req.deferred and reply:
                self._open[reply] = req
            else:  # nothing to answer, or chose not to (an auction this host does not bid on)
                self._finish(req, "no_reply" if reply else "ok")

    def carrier(self) -> dict[str, str]:
        """The current request's span, for the message it turns into (ScaleActor.trace, …)."""
        return child_carrier() if self.tracer is not None else {}

    def defer(self) -> None:
        """The request being dispatched is answered later (its reply subject was parked)."""
        if self._current is not None:
            self._current.deferred = True

    def replied(self, reply: str, data: bytes) -> None:
        """An answer went out on `reply`: ends the request it belongs to."""
        result = "error" if data.startswith(_FAILED) else "ok"
        current = self._current
        if current is not None and current.reply == reply:
            current.result = result
            if result == "error":
                current.span.fail(data.decode(errors="replace"))
            return
        req = self._open.pop(reply, None)
        if req is not None:
            if result == "error":
                req.span.fail(data.decode(errors="replace"))
            self._finish(req, result)

    def _finish(self, req: _Request, result: str) -> None:
        req.span.set(result=result)
        req.span.end()
        if self.metrics is not None:
            self.metrics.control_request(req.command, result)

    def _expire(self) -> None:
        now = time.monotonic()
        for reply in [r for r, q in self._open.items() if now - q.began > _ANSWER_WINDOW_S]:
            self._finish(self._open.pop(reply), "no_reply")

    def close(self) -> None:
        """Count what is still unanswered as no_reply and flush spans. Idempotent."""
        for reply in list(self._open):
            self._finish(self._open.pop(reply), "no_reply")
        if self.process is not None:
            self.process.flush()
