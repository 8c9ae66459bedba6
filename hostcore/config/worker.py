"""A worker node's configuration (`python -m hostcore worker`, hostcore/worker.py)."""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.config.values import (
    ConventionTiming,
    ThespianNetwork,
    convention_timing,
    is_loopback,
    parse_bool,
    parse_number,
    platform_labels,
    thespian_network,
)
from hostcore.errors import ConfigError

__all__ = ["WorkerConfig", "build_worker_parser", "load_worker_config"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """A worker node: a Thespian admin that joins a host's convention (`python -m hostcore worker`)."""

    join: tuple[str, int]  # the host's admin address (HOSTCORE_ADMIN_PORT on the host)
    worker_id: str
    labels: dict[str, str]
    admin_port: int = 0  # 0 = pick a free port
    data_dir: Path = field(default_factory=lambda: Path.home() / ".hostcore")
    convention: ConventionTiming = field(default_factory=ConventionTiming)
    network: ThespianNetwork = field(default_factory=lambda: ThespianNetwork())
    join_timeout_s: float = 30.0  # warn (and keep waiting) if the host has not answered by then
    log_level: str = "INFO"
    structured_logging: bool = False


def build_worker_parser() -> argparse.ArgumentParser:
    """Flags of `python -m hostcore worker` (they override the environment)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--join", metavar="HOST:PORT",
                   help="the host's Thespian admin address, its HOSTCORE_ADMIN_PORT [HOSTCORE_WORKER_JOIN]")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE",
                   help="worker label, repeatable")
    p.add_argument("--admin-port", type=int, metavar="PORT",
                   help="this worker's admin port [HOSTCORE_WORKER_ADMIN_PORT] (default: a free port)")
    p.add_argument("--name", dest="worker_id", help="worker id [HOSTCORE_WORKER_ID] (default: generated)")
    p.add_argument("--data-dir", metavar="DIR", help="[HOSTCORE_DATA_DIR] (default: ~/.hostcore)")
    p.add_argument("--log-level", metavar="LEVEL",
                   help="debug, info, warning or error [WASMCLOUD_LOG_LEVEL] (default: info)")
    p.add_argument("--convention-bind", metavar="ADDRESS",
                   help="address this worker listens on [HOSTCORE_CONVENTION_BIND] (default 127.0.0.1; "
                        "another machine's host needs a reachable one)")
    return p


def load_worker_config(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Build a worker's config. Precedence, lowest first: environment < flags.

    Environment: HOSTCORE_WORKER_JOIN, HOSTCORE_WORKER_ID, HOSTCORE_WORKER_ADMIN_PORT (not the host's
    HOSTCORE_ADMIN_PORT: an ActorSystem started on a live admin's port silently joins it), HOSTCORE_DATA_DIR,
    HOSTCORE_CONVENTION_REREGISTRATION_S / _MISS_MAX (same meaning as on the host),
    WASMCLOUD_LOG_LEVEL, WASMCLOUD_STRUCTURED_LOGGING_ENABLED.

    Raises:
        ConfigError: no or a malformed join address, a bad label or number; names key and value.
    """
    env = dict(os.environ if environ is None else environ)
    flags = build_worker_parser().parse_args(list(argv))

    def pick(key: str, flag: object = None, default: str = "") -> str:
        return str(flag) if flag is not None else env.get(key, default)

    join = pick("HOSTCORE_WORKER_JOIN", flags.join)
    host, sep, port = join.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--join: expected HOST:PORT of the host's admin, got {join!r}")
    labels = platform_labels()
    for item in flags.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label: expected KEY=VALUE, got {item!r}")
        labels[key] = value
    level = pick("WASMCLOUD_LOG_LEVEL", flags.log_level, "info").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"}:
        raise ConfigError(f"WASMCLOUD_LOG_LEVEL: unknown level {level!r}")
    data_dir = pick("HOSTCORE_DATA_DIR", flags.data_dir)
    admin_port = int(parse_number("HOSTCORE_WORKER_ADMIN_PORT", pick("HOSTCORE_WORKER_ADMIN_PORT", flags.admin_port, "0")))
    if admin_port == int(port):
        raise ConfigError(f"--admin-port: {admin_port} is the host's admin port; the worker needs its own")
    network = thespian_network(lambda key, json_key, default: pick(key, None, default), flags.convention_bind)
    if network.loopback and not is_loopback(host):
        raise ConfigError(f"--convention-bind: the host at {host} cannot reach a worker listening on {network.bind}; "
                          "give an address of this machine that the host can reach")
    return WorkerConfig(
        join=(host, int(port)),
        worker_id=pick("HOSTCORE_WORKER_ID", flags.worker_id) or f"worker-{uuid.uuid4().hex[:12]}",
        labels=labels,
        admin_port=admin_port,
        data_dir=Path(data_dir).expanduser() if data_dir else Path.home() / ".hostcore",
        convention=convention_timing(lambda key, json_key, default: pick(key, None, default)),
        network=network,
        log_level="WARNING" if level == "WARN" else level,
        structured_logging=parse_bool("WASMCLOUD_STRUCTURED_LOGGING_ENABLED",
                                 pick("WASMCLOUD_STRUCTURED_LOGGING_ENABLED", None, "false")),
    )
