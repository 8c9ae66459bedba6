"""Log formatting. Actors log through Thespian's logger process, which applies `log_defs`, so the
same formatters serve the launcher and every actor process.

Also here: the filter that folds repeated warnings (a NATS client retrying every second while
the server is down) and the relay that turns a child process's output into log records.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import time
from collections.abc import Callable
from typing import Any, BinaryIO

__all__ = ["ChildLogRelay", "JsonFormatter", "KeyValueFormatter", "RepeatFilter", "configure_root", "log_defs",
           "relay_output", "strip_ansi"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "actorAddress"}
# uvicorn adds a coloured copy of the message; the plain one is already there.
_DROPPED = frozenset({"color_message"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """`text` without terminal colour and cursor codes."""
    return _ANSI.sub("", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: strip_ansi(v) if isinstance(v, str) else v for k, v in vars(record).items()
            if k not in _STANDARD and k not in _DROPPED and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """`time level logger: message key=value …` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = strip_ansi(super().format(record))
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{text} {extras}" if extras else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line (WASMCLOUD_STRUCTURED_LOGGING_ENABLED)."""

    def format(self, record: logging.LogRecord) -> str:
        # `_context`: host_id, lattice, actor_key, instance_id, trace_id stamped where the record
        # was made (hostcore.telemetry.logcontext); fields given in `extra=` win.
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": strip_ansi(record.getMessage()), **getattr(record, "_context", {}), **_extras(record)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RepeatFilter(logging.Filter):
    """Lets the first of identical warnings (same logger, text and fields) through, then drops
    repeats for `window_s`; the next one that passes carries `repeated=N`. INFO and below pass."""

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self.clock = window_s, clock
        self._seen: dict[tuple[Any, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage(), repr(sorted(_extras(record).items(), key=str)))
        now = self.clock()
        first, dropped = self._seen.get(key, (0.0, 0))
        if first and now - first < self.window_s:
            self._seen[key] = (first, dropped + 1)
            return False
        if len(self._seen) > 1000:  # bounded: forget old keys rather than grow
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.repeated = dropped
        return True


def log_defs(level: str, structured: bool) -> dict[str, Any]:
    """A logging.config.dictConfig for the launcher and Thespian's logger process."""
    formatter = "hostcore.logs.JsonFormatter" if structured else "hostcore.logs.KeyValueFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "filters": {"repeats": {"()": "hostcore.logs.RepeatFilter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default", "level": level,
                                "filters": ["repeats"]}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"nats": {"level": "WARNING"}},
    }


def configure_root(level: str, structured: bool) -> None:
    """What `logging.config.dictConfig(log_defs(level, structured))` sets up on a root logger
    that has no handler yet, built directly. A forked instance configures itself with this:
    dictConfig resolves its classes through the import machinery and walks the logging module's
    state, and in a process forked from a big one every page that touches is copied (0.25 MB of
    private memory per instance, measured in a running host)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if structured else KeyValueFormatter())
    handler.addFilter(RepeatFilter())
    handler.setLevel(level)
    logging.root.addHandler(handler)
    logging.root.setLevel(level)
    logging.getLogger("nats").setLevel(logging.WARNING)


# --- a child process's output as log records ------------------------------------------------------

_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
# `2026-01-02 03:04:05,678 INFO rest` (our KeyValueFormatter, Python's default) or
# `[2026-01-02T03:04:05Z INFO  target] rest` (Rust env_logger).
_HEADER = re.compile(r"^\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+"
                     r"(?P<level>[A-Z]+)\b\s*(?P<rest>.*)$")
_TRACEBACK = "Traceback (most recent call last):"


class ChildLogRelay:
    """Turns lines a child writes into records of `logger`, one per entry: the child's own
    timestamp is dropped (the record has one), its level kept, and a traceback or other indented
    continuation joins the entry it belongs to. JSON lines (a child logging structured) are
    re-emitted field by field. Not thread-safe: one reader thread feeds it."""

    def __init__(self, logger: logging.Logger, tag: str, extra: dict[str, Any]) -> None:
        self.logger, self.tag, self.extra = logger, tag, extra
        self._lines: list[str] = []
        self._level = logging.INFO
        self._fields: dict[str, Any] = {}

    def feed(self, line: str) -> None:
        line = strip_ansi(line.rstrip("\r\n"))
        parsed = self._parse(line)
        if parsed is None and self._lines and self._continues(line):
            self._lines.append(line)
            if line == _TRACEBACK:
                self._level = max(self._level, logging.ERROR)
            return
        self.flush()
        level = logging.ERROR if line == _TRACEBACK else logging.INFO  # a traceback on its own
        level, text, fields = parsed if parsed is not None else (level, line, {})
        self._level, self._lines, self._fields = level, [text], fields

    def _continues(self, line: str) -> bool:
        return not line or line[:1].isspace() or any(_TRACEBACK in x for x in self._lines) or line == _TRACEBACK

    def flush(self) -> None:
        """Emit the entry being collected, if any."""
        if not self._lines:
            return
        text = "\n".join(self._lines).rstrip()
        self._lines = []
        if text:
            mine = {k: v for k, v in self.extra.items() if f"{k}=" not in text}  # the child may name them itself
            self.logger.log(self._level, "[%s] %s", self.tag, text, extra={**self._fields, **mine})

    @staticmethod
    def _parse(line: str) -> tuple[int, str, dict[str, Any]] | None:
        """(level, text, fields) of a line that starts an entry; None for anything else."""
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict) and "message" in entry:
                level = _LEVELS.get(str(entry.pop("level", "INFO")).upper(), logging.INFO)
                text = f"{entry.pop('logger', '')}: {entry.pop('message')}".lstrip(": ")
                entry.pop("time", None)
                fields = {k: v for k, v in entry.items() if k not in _STANDARD}
                return level, text, fields
        match = _HEADER.match(line)
        if match and match["level"] in _LEVELS:
            return _LEVELS[match["level"]], match["rest"].removesuffix("]").replace("] ", ": ", 1), {}
        return None


def relay_output(stream: BinaryIO, relay: ChildLogRelay, idle_s: float = 0.2) -> None:
    """Feed `stream` (a child's stdout) to `relay` line by line until EOF. An entry is emitted
    when the next one starts or after `idle_s` of silence, so a traceback written in one burst
    stays one record."""
    fd, pending = stream.fileno(), b""
    while True:
        ready, _, _ = select.select([fd], [], [], idle_s)
        if not ready:
            relay.flush()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            relay.feed(line.decode(errors="replace"))
    if pending:
        relay.feed(pending.decode(errors="replace"))
    relay.flush()
