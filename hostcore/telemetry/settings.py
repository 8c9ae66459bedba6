"""Telemetry settings: which span exporters run, whether metrics are kept, where /metrics is served.

Read once, from the environment `load_config` was given, into a frozen `TelemetrySettings` that
travels inside `HostConfig.telemetry` to every process of the tree. The names are the standard
OpenTelemetry ones where one exists (`OTEL_TRACES_EXPORTER`, `OTEL_SDK_DISABLED`,
`OTEL_SERVICE_NAME`); the OTLP exporter and the sampler read their own `OTEL_*` variables as the
SDK documents, and providers receive every `OTEL_*` variable (protocol.md §11.7).

Unlike the SDK, tracing is off unless asked for: `OTEL_TRACES_EXPORTER` defaults to `none`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hostcore.errors import ConfigError

__all__ = ["EXPORTERS", "TelemetrySettings"]

# `hostcore_file`: JSON lines appended to HOSTCORE_TRACES_FILE (tests, offline debugging).
EXPORTERS = frozenset({"none", "console", "otlp", "hostcore_file"})
_OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _flag(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _int(key: str, value: str, *, low: int, high: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
    if not low <= n <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
    return n


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetrySettings:
    """What each host process sets up for itself (hostcore.telemetry.process).

    `traces_exporters` empty means tracing is off: no provider, no span objects, and the RPC
    path does not look at headers. `metrics` off means no multiprocess directory and no
    recording anywhere.
    """

    traces_exporters: tuple[str, ...] = ()
    traces_file: Path | None = None
    service_name: str = "hostcore"
    metrics: bool = True
    metrics_port: int = 0  # the launcher serves /metrics on 127.0.0.1:port when set
    metrics_flush_s: float = 1.0  # instances push their hot-path tallies this often

    @property
    def tracing(self) -> bool:
        return bool(self.traces_exporters)

    @classmethod
    def from_environ(cls, env: Mapping[str, str], *, cwd: Path | None = None) -> TelemetrySettings:
        """Parse the telemetry variables of `env`.

        Raises:
            ConfigError: an unknown exporter, the file exporter without HOSTCORE_TRACES_FILE, OTLP
                without its package, or a bad number or flag; the message names the key.
        """
        disabled = _flag("OTEL_SDK_DISABLED", env.get("OTEL_SDK_DISABLED", "false"))
        names = tuple(n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip())
        unknown = [n for n in names if n not in EXPORTERS]
        if unknown:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} "
                              f"(expected one of {', '.join(sorted(EXPORTERS))})")
        exporters = () if disabled else tuple(n for n in names if n != "none")
        traces_file: Path | None = None
        if "hostcore_file" in exporters:
            raw = env.get("HOSTCORE_TRACES_FILE", "")
            if not raw:
                raise ConfigError("HOSTCORE_TRACES_FILE: required when OTEL_TRACES_EXPORTER is hostcore_file")
            traces_file = Path(raw).expanduser()
            if not traces_file.is_absolute():
                traces_file = (cwd or Path.cwd()) / traces_file
        if "otlp" in exporters and not _importable(_OTLP_MODULE):
            raise ConfigError("OTEL_TRACES_EXPORTER: otlp needs the opentelemetry-exporter-otlp-proto-http "
                              "package (pip install 'hostcore[otlp]')")
        flush_ms = _int("HOSTCORE_METRICS_FLUSH_MS", env.get("HOSTCORE_METRICS_FLUSH_MS", "1000"), low=10, high=60_000)
        return cls(
            traces_exporters=exporters,
            traces_file=traces_file,
            service_name=env.get("OTEL_SERVICE_NAME", "") or "hostcore",
            metrics=_flag("HOSTCORE_METRICS", env.get("HOSTCORE_METRICS", "true")),
            metrics_port=_int("HOSTCORE_METRICS_PORT", env.get("HOSTCORE_METRICS_PORT", "0"), low=0, high=65535),
            metrics_flush_s=flush_ms / 1000,
        )
