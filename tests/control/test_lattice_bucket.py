"""hostcore.control.lattice.open_bucket: the lattice bucket is opened, created when missing, and
waited for while JetStream does not answer yet (a cluster electing its leader), within a bound.
A fake JetStream context: what is tested is the waiting, not nats-py."""

from __future__ import annotations

import logging
from typing import Any

import nats.errors
import pytest
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError, ServiceUnavailableError

from hostcore.control import lattice
from hostcore.control.lattice import open_bucket


class FakeJetStream:
    """Raises `failures` one per call to key_value, in order, then finds (or not) the bucket."""

    def __init__(self, *failures: Exception, exists: bool = True) -> None:
        self.failures, self.exists = list(failures), exists
        self.opened, self.created = 0, []

    async def key_value(self, name: str) -> Any:
        self.opened += 1
        if self.failures:
            raise self.failures.pop(0)
        if not self.exists:
            raise BucketNotFoundError()
        return ("bucket", name)

    async def create_key_value(self, config: Any) -> Any:
        self.created.append(config)
        return ("created", config.bucket)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lattice, "_JETSTREAM_RETRY_S", 0.01)


async def test_jetstream_not_answering_yet_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    js = FakeJetStream(nats.errors.TimeoutError(), ServiceUnavailableError(code=503, description="no leader"))
    with caplog.at_level(logging.WARNING, logger="hostcore.control.lattice"):
        assert await open_bucket(js, "LATTICEDATA_x") == ("bucket", "LATTICEDATA_x")  # type: ignore[arg-type]
    assert js.opened == 3
    assert [r.getMessage() for r in caplog.records] == ["waiting for JetStream"] * 2


async def test_a_missing_bucket_is_created_as_otp_creates_it() -> None:
    js = FakeJetStream(exists=False)
    assert await open_bucket(js, "LATTICEDATA_x") == ("created", "LATTICEDATA_x")  # type: ignore[arg-type]
    [config] = js.created
    assert (config.history, config.storage, config.direct) == (1, StorageType.FILE, True)


async def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lattice, "JETSTREAM_WAIT_S", 0.1)
    js = FakeJetStream(*(nats.errors.TimeoutError() for _ in range(1000)))
    with pytest.raises(nats.errors.TimeoutError):
        await open_bucket(js, "LATTICEDATA_x")  # type: ignore[arg-type]
    assert 1 < js.opened < 1000


async def test_no_jetstream_at_all_is_not_waited_for() -> None:
    js = FakeJetStream(nats.errors.NoRespondersError())
    with pytest.raises(nats.errors.NoRespondersError):
        await open_bucket(js, "LATTICEDATA_x")  # type: ignore[arg-type]
    assert js.opened == 1
