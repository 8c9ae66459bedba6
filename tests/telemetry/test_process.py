"""open_process: once per process, off without a config, metrics only with a directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_support import restore_log_factory  # noqa: F401 (fixture)

from hostcore.config import load_config
from hostcore.telemetry import process as process_module
from hostcore.telemetry.fileexport import read_spans
from hostcore.telemetry.logcontext import log_context
from hostcore.telemetry.metrics import MULTIPROC_ENV
from hostcore.telemetry.process import connection_role, count_reconnect, open_process, process_metrics


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(process_module, "_process", None)
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    yield
    current = process_module._process
    if current is not None:
        current.close()
        if current.metrics is not None:
            current.metrics.close()


def test_none_config_is_off(fresh_process: None) -> None:
    telemetry = open_process(None, role="control")
    assert telemetry.tracer is None and telemetry.metrics is None
    assert open_process(None, role="other") is telemetry
    assert process_metrics() is None


def test_traces_metrics_and_log_context(fresh_process: None, restore_log_factory: None, tmp_path: Path) -> None:
    env = {"OTEL_TRACES_EXPORTER": "hostcore_file", "HOSTCORE_TRACES_FILE": str(tmp_path / "t.jsonl"),
           "HOSTCORE_DATA_DIR": str(tmp_path / "data"), "WASMCLOUD_LATTICE_PREFIX": "prod"}
    config = load_config([], env, config_file=tmp_path / "none.json")
    telemetry = open_process(config, role="actor", actor_key="MKEY", instance_id="i-1")
    assert telemetry.metrics is None  # no directory prepared by a launcher: nothing recorded
    assert telemetry.tracer is not None
    with telemetry.tracer.start_as_current_span("handle_invocation"):
        pass
    telemetry.close()
    telemetry.close()
    [record] = read_spans(tmp_path / "t.jsonl")
    assert record["resource"]["hostcore.role"] == "actor" and record["resource"]["hostcore.lattice"] == "prod"
    import logging
    made = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert log_context(made) == {"host_id": config.host_id, "lattice": "prod", "actor_key": "MKEY",
                                 "instance_id": "i-1"}


def test_metrics_when_the_launcher_prepared_a_directory(fresh_process: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    config = load_config([], {"HOSTCORE_DATA_DIR": str(tmp_path / "d")}, config_file=tmp_path / "none.json")
    telemetry = open_process(config, role="control")
    assert telemetry.metrics is not None and process_metrics() is telemetry.metrics
    count_reconnect("hostcore-ctl-NABC")
    assert any(p.name.startswith("counter_") for p in directory.iterdir())


def test_metrics_off_by_switch(fresh_process: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    config = load_config([], {"HOSTCORE_METRICS": "0"}, config_file=tmp_path / "none.json")
    assert open_process(config, role="control").metrics is None
    count_reconnect("hostcore-ctl-NABC")  # no metrics: nothing to count into


def test_a_forked_child_does_not_reuse_its_parents(fresh_process: None, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = open_process(None, role="actor_supervisor", forks=True)
    monkeypatch.setattr(os, "getpid", lambda: parent.pid + 1)
    assert process_metrics() is None
    assert open_process(None, role="actor") is not parent


def test_connection_roles() -> None:
    assert connection_role("hostcore-actor-MBCFOPM6-1a2b3c4d") == "actor"
    assert connection_role("hostcore-ctl-NABC") == "ctl"
    assert connection_role("provider") == "provider"
