"""The NATS bridge tells a deliberate stop from a lost connection: nats-py calls the disconnected
callback on a drain too, and only a real loss may log the reconnect warning."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from nats.aio.client import Client as NatsClient

from hostcore.nats_server import EmbeddedNatsServer
from hostcore.procutil import wait_for
from hostcore.tree.bridge import NatsBridgeActor

LOST = "NATS connection lost; reconnecting"


class Bridged(NatsBridgeActor):
    def on_inbox_item(self, item: object) -> None:
        pass


async def _no_setup(nc: NatsClient) -> None:
    return None


@pytest.fixture
def bridged() -> Iterator[Bridged]:
    actor = Bridged()
    yield actor
    actor.nats_stop()
    # An actor's process ends after nats_stop; this one lives on in the test run.
    actor.loop.close()
    os.close(actor._wake_r)
    os.close(actor._wake_w)


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hostcore.tree.bridge" and r.levelno == level]


def test_a_deliberate_stop_logs_no_warning(bridged: Bridged, own_nats_server: EmbeddedNatsServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.tree.bridge")
    bridged.nats_start(own_nats_server.url, _no_setup, name="hostcore-test-stop")
    bridged.nats_stop()
    assert bridged.nc.is_closed
    assert _messages(caplog, logging.WARNING) == []
    assert _messages(caplog, logging.DEBUG) == ["NATS connection closed"]


def test_a_lost_connection_warns_and_a_stop_still_ends(bridged: Bridged, own_nats_server: EmbeddedNatsServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.tree.bridge")
    bridged.nats_start(own_nats_server.url, _no_setup, name="hostcore-test-lost")
    own_nats_server.close()
    assert wait_for(lambda: LOST in _messages(caplog, logging.WARNING), 10.0), caplog.text
    bridged.nats_stop()  # reconnecting: the drain is refused, the connection is closed instead
    assert bridged.nc.is_closed
    assert not bridged._loop_thread.is_alive()
