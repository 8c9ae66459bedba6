"""ConnectionMonitor (hostcore/web/connection.py): one log line per state change of the
dashboard's NATS connection, however many errors nats-py reports while it is down."""

from __future__ import annotations

import logging

import nats.errors
import pytest

from hostcore.web.connection import ConnectionMonitor

URL = "nats://127.0.0.1:4222"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hostcore.web.app" and r.levelno >= level]


async def test_an_outage_is_two_lines_however_many_errors_and_the_listener_hears_both(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.web.app")
    clock = FakeClock()
    heard: list[bool] = []
    monitor = ConnectionMonitor(URL, clock=clock)
    monitor.listener = heard.append

    await monitor.on_error(nats.errors.UnexpectedEOF())
    await monitor.on_disconnect()
    for _ in range(120):  # nats-py: one error per failed reconnect attempt, about once a second
        await monitor.on_error(ConnectionRefusedError(111, "Connect call failed"))
    clock.now += 120
    await monitor.on_reconnect()

    logged = lines(caplog)
    assert [r.levelname for r in logged] == ["WARNING", "INFO"]
    lost, restored = logged
    assert "lost" in lost.getMessage() and lost.__dict__["error"] == "nats: unexpected EOF"
    assert "restored" in restored.getMessage()
    assert restored.__dict__["errors_not_logged"] == 120 and restored.__dict__["down_s"] == 120.0
    assert heard == [False, True] and monitor.connected

    # A second outage is reported again (the state machine starts over).
    await monitor.on_disconnect()
    await monitor.on_reconnect()
    assert len(lines(caplog)) == 4 and heard == [False, True, False, True]


async def test_a_deliberate_close_is_not_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hostcore.web.app")
    heard: list[bool] = []
    monitor = ConnectionMonitor(URL)
    monitor.listener = heard.append
    monitor.closing = True
    await monitor.on_disconnect()
    assert lines(caplog) == [] and heard == [] and monitor.connected


async def test_other_errors_of_a_live_connection_are_logged_once_per_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hostcore.web.app")
    monitor = ConnectionMonitor(URL)
    slow = nats.errors.SlowConsumerError("wasmbus.evt.x", 1, None, None)
    for _ in range(5):
        await monitor.on_error(slow)
    await monitor.on_error(nats.errors.Error("nats: permissions violation"))
    assert [r.__dict__["error"] for r in lines(caplog, logging.WARNING)] == [str(slow), "nats: permissions violation"]
    assert monitor.connected
