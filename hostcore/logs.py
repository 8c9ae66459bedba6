"""Log formatting. Actors log through Thespian's logger process, which applies `log_defs`, so the
same formatters serve the launcher and every actor process."""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["JsonFormatter", "KeyValueFormatter", "log_defs"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "actorAddress"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """`time level logger: message key=value …` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{text} {extras}" if extras else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line (WASMCLOUD_STRUCTURED_LOGGING_ENABLED)."""

    def format(self, record: logging.LogRecord) -> str:
        # `_context`: host_id, lattice, actor_key, instance_id, trace_id stamped where the record
        # was made (hostcore.telemetry.logcontext); fields given in `extra=` win.
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), **getattr(record, "_context", {}), **_extras(record)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_defs(level: str, structured: bool) -> dict[str, Any]:
    """A logging.config.dictConfig for the launcher and Thespian's logger process."""
    formatter = "hostcore.logs.JsonFormatter" if structured else "hostcore.logs.KeyValueFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default", "level": level}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"nats": {"level": "WARNING"}},
    }
