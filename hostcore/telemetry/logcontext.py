"""Host context and trace id on every log record a process creates.

Each record gets `_context`: this process's fields (host_id, lattice, and for an instance its
actor_key and instance_id) plus the current trace_id / span_id. The JSON formatter
(hostcore/logs.py) writes them as keys; a field given in `extra=` wins.

Why a record factory and not a `logging.Filter`: Thespian replaces an actor process's root
logger with a forwarder whose handler skips filters and ships the record to the logger process,
where neither the host context nor the current span is known. The factory runs in the process
and thread that logs, and the private `_context` attribute cannot collide with `extra=` keys
(setting `actor_key` on the record would make `extra={"actor_key": …}` raise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hostcore.telemetry.tracing import current_ids

__all__ = ["CONTEXT_ATTR", "install_log_context", "log_context"]

CONTEXT_ATTR = "_context"


class _ContextFactory:
    """Wraps the record factory that was in place; `fields` are replaced by install_log_context."""

    def __init__(self, inner: Callable[..., logging.LogRecord], fields: dict[str, str]) -> None:
        self.inner = inner
        self.fields = fields

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        context = dict(self.fields)
        ids = current_ids()
        if ids is not None:
            context["trace_id"], context["span_id"] = ids
        setattr(record, CONTEXT_ATTR, context)
        return record


def install_log_context(**fields: str) -> None:
    """Stamp this process's records with `fields` (empty values are left out) and the current
    trace id. Calling it again replaces the fields (a forked child narrowing its parent's
    context); the process-wide record factory is the logging module's, so this is per process
    by nature."""
    clean = {k: v for k, v in fields.items() if v}
    factory = logging.getLogRecordFactory()
    if isinstance(factory, _ContextFactory):
        factory.fields = clean
    else:
        logging.setLogRecordFactory(_ContextFactory(factory, clean))


def log_context(record: logging.LogRecord) -> dict[str, str]:
    """The context stamped on `record` ({} for records from elsewhere)."""
    context = getattr(record, CONTEXT_ATTR, None)
    return dict(context) if isinstance(context, dict) else {}
