"""TelemetrySettings.from_environ: defaults, exporters, and errors that name the key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hostcore.config import load_config
from hostcore.errors import ConfigError
from hostcore.telemetry.settings import TelemetrySettings


def test_defaults_are_tracing_off_metrics_on() -> None:
    settings = TelemetrySettings.from_environ({})
    assert settings == TelemetrySettings()
    assert not settings.tracing and settings.metrics and settings.metrics_port == 0
    assert settings.metrics_flush_s == 1.0 and settings.service_name == "hostcore"


def test_file_exporter_needs_a_file_and_resolves_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOSTCORE_TRACES_FILE"):
        TelemetrySettings.from_environ({"OTEL_TRACES_EXPORTER": "hostcore_file"})
    settings = TelemetrySettings.from_environ(
        {"OTEL_TRACES_EXPORTER": "console, hostcore_file", "HOSTCORE_TRACES_FILE": "t.jsonl"}, cwd=tmp_path)
    assert settings.traces_exporters == ("console", "hostcore_file")
    assert settings.traces_file == tmp_path / "t.jsonl" and settings.tracing


@pytest.mark.parametrize(("env", "key"), [
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
    ({"HOSTCORE_METRICS": "maybe"}, "HOSTCORE_METRICS"),
    ({"HOSTCORE_METRICS_PORT": "70000"}, "HOSTCORE_METRICS_PORT"),
    ({"HOSTCORE_METRICS_FLUSH_MS": "soon"}, "HOSTCORE_METRICS_FLUSH_MS"),
    ({"OTEL_SDK_DISABLED": "perhaps"}, "OTEL_SDK_DISABLED"),
])
def test_bad_values_name_their_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        TelemetrySettings.from_environ(env)
    assert err.value.wire.startswith(f"{key}:")


def test_none_and_sdk_disabled_turn_tracing_off() -> None:
    assert not TelemetrySettings.from_environ({"OTEL_TRACES_EXPORTER": "none"}).tracing
    assert not TelemetrySettings.from_environ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}).tracing


def test_metrics_switch_port_and_service_name() -> None:
    settings = TelemetrySettings.from_environ({"HOSTCORE_METRICS": "0", "HOSTCORE_METRICS_PORT": "9464",
                                               "HOSTCORE_METRICS_FLUSH_MS": "250", "OTEL_SERVICE_NAME": "edge"})
    assert (settings.metrics, settings.metrics_port, settings.metrics_flush_s, settings.service_name) == (
        False, 9464, 0.25, "edge")


def test_otlp_needs_its_package() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp"}
    try:
        installed = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        installed = False
    if not installed:
        with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-http"):
            TelemetrySettings.from_environ(env)
    else:
        assert TelemetrySettings.from_environ(env).traces_exporters == ("otlp",)


def test_load_config_carries_the_settings(tmp_path: Path) -> None:
    config = load_config([], {"OTEL_TRACES_EXPORTER": "console", "HOSTCORE_METRICS_PORT": "9100"},
                         config_file=tmp_path / "none.json")
    assert config.telemetry.traces_exporters == ("console",) and config.telemetry.metrics_port == 9100
