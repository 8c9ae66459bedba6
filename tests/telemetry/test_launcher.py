"""The launcher's part: the metrics directory before the ActorSystem, /metrics after it."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from telemetry_support import restore_log_factory  # noqa: F401 (fixture)

from hostcore.config import load_config
from hostcore.procutil import free_port
from hostcore.telemetry.launcher import LauncherTelemetry
from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics


def test_prepares_serves_and_closes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_log_factory: None) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    port = free_port()
    config = load_config([], {"HOSTCORE_DATA_DIR": str(tmp_path), "HOSTCORE_METRICS_PORT": str(port)},
                         config_file=tmp_path / "none.json")
    launcher = LauncherTelemetry(config)
    assert launcher.metrics_dir is not None and os.environ[MULTIPROC_ENV] == str(launcher.metrics_dir)
    assert launcher.metrics_dir.is_dir() and launcher.metrics_dir.parent == tmp_path / "metrics"
    recorded = HostMetrics(launcher.metrics_dir)  # as a process of the tree would
    recorded.control_request("scale", "ok")
    launcher.serve()
    launcher.serve()  # once
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert b'hostcore_control_requests_total{command="scale",result="ok"} 1.0' in reply.read()
    finally:
        launcher.close()
        launcher.close()
        recorded.close()


def test_metrics_off_prepares_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_log_factory: None) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    config = load_config([], {"HOSTCORE_DATA_DIR": str(tmp_path), "HOSTCORE_METRICS": "0",
                              "HOSTCORE_METRICS_PORT": "9"}, config_file=tmp_path / "none.json")
    launcher = LauncherTelemetry(config)
    launcher.serve()
    assert launcher.metrics_dir is None and launcher.server is None and MULTIPROC_ENV not in os.environ
    assert not (tmp_path / "metrics").exists()
