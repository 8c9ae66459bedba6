"""Log output: no ANSI codes, folded repeats, and a child's output as one record per entry."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

from hostcore.logs import ChildLogRelay, JsonFormatter, KeyValueFormatter, RepeatFilter, relay_output


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Records:
    handler = Records()
    logger = logging.getLogger("test.child")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return handler


def record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("uvicorn.error", level, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_no_ansi_codes_and_no_color_message() -> None:
    rec = record("\x1b[32mStarted\x1b[0m server", color_message="\x1b[1mStarted\x1b[0m", port="\x1b[36m80\x1b[0m")
    text = KeyValueFormatter().format(rec)
    assert "\x1b" not in text and "color_message" not in text and text.endswith("Started server port=80")
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["message"] == "Started server" and entry["port"] == "80" and "color_message" not in entry


def test_identical_warnings_are_folded() -> None:
    now = [100.0]
    f = RepeatFilter(window_s=30, clock=lambda: now[0])
    down = lambda: record("NATS error", logging.WARNING, error="Connect call failed")  # noqa: E731
    assert f.filter(down())
    assert not any(f.filter(down()) for _ in range(29))
    assert f.filter(record("NATS error", logging.WARNING, error="another reason"))  # other fields: not a repeat
    assert f.filter(record("info", logging.INFO)) and f.filter(record("info", logging.INFO))
    now[0] += 31
    again = down()
    assert f.filter(again) and again.repeated == 29


def test_a_childs_lines_become_entries(captured: Records) -> None:
    relay = ChildLogRelay(logging.getLogger("test.child"), "VKEY", {"provider_key": "VKEY"})
    for line in ["2026-11-29 08:31:45,871 INFO prov: serving provider_key=VKEY",
                 "2026-11-29 08:31:46,001 ERROR prov: provider failed",
                 "Traceback (most recent call last):", '  File "p.py", line 3, in run', "    boom()",
                 "ValueError: boom",
                 "[2026-11-29T08:31:47Z WARN  rust_provider] slow",
                 '{"time": "t", "level": "DEBUG", "logger": "p", "message": "structured", "n": 1}',
                 "plain line"]:
        relay.feed(line)
    relay.flush()
    got = [(r.levelno, r.getMessage()) for r in captured.records]
    assert got == [
        (logging.INFO, "[VKEY] prov: serving provider_key=VKEY"),
        (logging.ERROR, "[VKEY] prov: provider failed\nTraceback (most recent call last):\n"
                        '  File "p.py", line 3, in run\n    boom()\nValueError: boom'),
        (logging.WARNING, "[VKEY] rust_provider: slow"),
        (logging.DEBUG, "[VKEY] p: structured"),
        (logging.INFO, "[VKEY] plain line"),
    ]
    assert not hasattr(captured.records[0], "provider_key")  # the child named it already: no duplicate
    assert captured.records[1].provider_key == "VKEY" and captured.records[3].n == 1


def test_a_traceback_written_by_a_real_child_is_one_record(captured: Records) -> None:
    code = "print('starting', flush=True)\nimport time; time.sleep(0.5)\nraise ValueError('boom')"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    relay = ChildLogRelay(logging.getLogger("test.child"), "C", {})
    reader = threading.Thread(target=relay_output, args=(proc.stdout, relay))
    reader.start()
    proc.wait(10)
    reader.join(10)
    proc.stdout.close()
    messages = [r.getMessage() for r in captured.records]
    assert messages[0] == "[C] starting"
    [tb] = messages[1:]
    assert tb.startswith("[C] Traceback") and tb.endswith("ValueError: boom")
    assert captured.records[1].levelno == logging.ERROR


CONFIGURE = """
import json, logging, logging.config, sys
from hostcore.logs import configure_root, log_defs

def fresh_root():
    logging.root = logging.RootLogger(logging.WARNING)
    logging.Logger.root = logging.root
    logging.Logger.manager = logging.Manager(logging.root)

def describe():
    root = logging.root
    return {"root": root.level, "nats": logging.getLogger("nats").level,
            "handlers": [[type(h).__name__, h.stream is sys.stderr, h.level, type(h.formatter).__name__,
                          [type(f).__name__ for f in h.filters]] for h in root.handlers]}

out = {}
for structured in (False, True):
    fresh_root()
    logging.config.dictConfig(log_defs("DEBUG", structured))
    by_dict = describe()
    fresh_root()
    configure_root("DEBUG", structured)
    out[str(structured)] = [by_dict, describe()]
print(json.dumps(out))
"""


def test_configure_root_sets_up_what_log_defs_does() -> None:
    out = subprocess.run([sys.executable, "-c", CONFIGURE], capture_output=True, text=True, timeout=60, check=True)
    for structured, (by_dict, direct) in json.loads(out.stdout).items():
        assert direct == by_dict, structured
        assert by_dict["handlers"], structured  # a handler was configured at all
    assert json.loads(out.stdout)["True"][0]["handlers"][0][3] == "JsonFormatter"
