"""Host context and trace ids on log records, written by the JSON formatter."""

from __future__ import annotations

import json
import logging

from opentelemetry.trace import Tracer
from telemetry_support import restore_log_factory, spans, tracer  # noqa: F401 (fixtures)

from hostcore.logs import JsonFormatter, KeyValueFormatter
from hostcore.telemetry.logcontext import install_log_context, log_context

log = logging.getLogger("tests.telemetry")


def record(msg: str = "actor started", **extra: str) -> logging.LogRecord:
    return log.makeRecord(log.name, logging.INFO, __file__, 1, msg, (), None, extra=extra or None)


def test_records_carry_the_process_context(restore_log_factory: None) -> None:
    install_log_context(host_id="NHOST", lattice="default", actor_key="", instance_id="i-1")
    assert log_context(record()) == {"host_id": "NHOST", "lattice": "default", "instance_id": "i-1"}
    install_log_context(host_id="NHOST", lattice="prod")  # replaced, not stacked
    assert log_context(record()) == {"host_id": "NHOST", "lattice": "prod"}
    assert not isinstance(logging.getLogRecordFactory().inner, type(logging.getLogRecordFactory()))  # type: ignore[attr-defined]


def test_extra_keys_do_not_collide_and_win(restore_log_factory: None) -> None:
    install_log_context(host_id="NHOST", lattice="default", actor_key="MSELF")
    entry = json.loads(JsonFormatter().format(record(actor_key="MOTHER", instance_id="i-9")))
    assert entry["actor_key"] == "MOTHER" and entry["instance_id"] == "i-9" and entry["host_id"] == "NHOST"
    assert entry["message"] == "actor started" and entry["level"] == "INFO"


def test_trace_id_of_the_current_span(restore_log_factory: None, tracer: Tracer) -> None:
    install_log_context(host_id="NHOST", lattice="default")
    with tracer.start_as_current_span("ctl.scale") as span:
        inside = record()
    ctx = span.get_span_context()
    entry = json.loads(JsonFormatter().format(inside))
    assert entry["trace_id"] == f"{ctx.trace_id:032x}" and entry["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in json.loads(JsonFormatter().format(record()))


def test_records_from_elsewhere_still_format(restore_log_factory: None) -> None:
    plain = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello", (), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "hello"
    assert log_context(plain) == {}
    install_log_context(host_id="NHOST", lattice="default")
    assert "NHOST" not in KeyValueFormatter().format(record())  # the terminal format stays as it was
