"""hostcore.natsconn.flush_in_order against a real nats-server: once it returns, a subscription
made just before it is live for every other connection."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import nats
import nats.errors
import pytest

from hostcore.natsconn import flush_in_order

_ROUNDS = 300


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two spinning processes: the race below (a SUB still queued in nats-py while its PING has
    gone out) shows mostly when the server's goroutines and our loop compete for the cores."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


async def test_a_subscription_is_live_once_flushed_in_order(nats_server: Any, busy_cores: None) -> None:
    subscriber, caller = await nats.connect(nats_server.url), await nats.connect(nats_server.url)

    async def answer(msg: Any) -> None:
        await msg.respond(b"ok")

    unanswered = 0
    try:
        for i in range(_ROUNDS):
            sub = await subscriber.subscribe(f"flush.order.{i}", cb=answer)
            await flush_in_order(subscriber)
            try:
                assert (await caller.request(f"flush.order.{i}", b"", timeout=5)).data == b"ok"
            except nats.errors.NoRespondersError:
                unanswered += 1
            await sub.unsubscribe()
    finally:
        await subscriber.close()
        await caller.close()
    assert unanswered == 0, f"{unanswered} of {_ROUNDS} requests found no subscriber"


async def test_flush_in_order_raises_on_a_closed_connection(nats_server: Any) -> None:
    nc = await nats.connect(nats_server.url)
    await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await flush_in_order(nc, timeout_s=0.5)
