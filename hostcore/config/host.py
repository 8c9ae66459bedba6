"""The host's configuration: one frozen `HostConfig`, built once by `load_config` from a JSON
file, the environment and flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.config.endpoints import nats_endpoints
from hostcore.config.values import (
    ConventionTiming,
    Placement,
    ThespianNetwork,
    convention_timing,
    friendly_name,
    is_loopback,
    parse_bool,
    parse_csv,
    parse_number,
    parse_placement,
    parse_seed,
    platform_labels,
    thespian_network,
)
from hostcore.errors import ConfigError
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.natsconn import ROLES, NatsEndpoint
from hostcore.telemetry.settings import TelemetrySettings
from hostcore.wire.subjects import DEFAULT_CTL_TOPIC_PREFIX

__all__ = ["HostConfig", "build_parser", "load_config"]

log = logging.getLogger("hostcore.config")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    """Everything a host node needs to know. Built by `load_config`; never mutated."""

    host_key: KeyPair
    cluster_key: KeyPair
    cluster_issuers: tuple[str, ...]
    cluster_adhoc: bool
    lattice_prefix: str
    friendly_name: str
    labels: dict[str, str]
    nats_url: str  # "" = start an embedded nats-server; else the control server (display only)
    # protocol.md §1.1 / §10.2: the three NATS connections, each with its own server and credentials.
    rpc: NatsEndpoint = field(default_factory=lambda: NatsEndpoint(role="rpc", servers=()))
    ctl: NatsEndpoint = field(default_factory=lambda: NatsEndpoint(role="ctl", servers=()))
    prov_rpc: NatsEndpoint = field(default_factory=lambda: NatsEndpoint(role="prov_rpc", servers=()))
    ctl_topic_prefix: str = DEFAULT_CTL_TOPIC_PREFIX
    rpc_timeout_s: float = 2.0
    allow_file_load: bool = False
    allow_second_host: bool = False  # a second embedded NATS while a local host runs (context file)
    allow_latest: bool = False
    allowed_insecure: tuple[str, ...] = ()
    oci_env_registry: tuple[str, str, str] | None = None  # OCI_REGISTRY, _USER, _PASSWORD (§8.2)
    oci_timeout_s: float = 30.0
    js_domain: str | None = None
    policy_topic: str | None = None
    policy_changes_topic: str | None = None
    policy_timeout_s: float = 1.0
    provider_shutdown_delay_s: float = 0.3
    heartbeat_interval_s: float = 30.0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 4000  # 0 = no dashboard
    dashboard_token: str = field(default="", repr=False)  # "" = no access token
    data_dir: Path = field(default_factory=lambda: Path.home() / ".hostcore")
    admin_port: int = 0  # 0 = pick a free port (a fixed port may silently join a stale admin)
    log_level: str = "INFO"
    structured_logging: bool = False
    # Per-instance limits (architecture.md: each call has a time limit, each Store a memory limit).
    max_memory_bytes: int = 256 * 1024 * 1024
    restart_intensity: int = 5  # restarts of one actor key ...
    restart_period_s: float = 10.0  # ... within this window, then give up (OTP-style)
    # A core role of the tree (ControlServer, LatticeEvents, …) restarted this often within the
    # period stops the host, as OTP's one_for_one supervisor gives up on its children.
    core_restart_intensity: int = 3
    core_restart_period_s: float = 5.0
    test_crash_role: str = ""  # HOSTCORE_TEST_CRASH_ROLE: tests only (hostcore/supervision.py)
    # Thespian convention: workers join this host's admin; see hostcore/worker.py.
    placement: Placement = Placement.LOCAL
    convention: ConventionTiming = field(default_factory=ConventionTiming)
    network: ThespianNetwork = field(default_factory=lambda: ThespianNetwork())
    # Traces, metrics, /metrics port (OTEL_TRACES_EXPORTER, HOSTCORE_METRICS…).
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    def __post_init__(self) -> None:
        # A config built with only `nats_url` (tests, tools) uses it for every connection.
        for role in ROLES:
            if self.nats_url and not getattr(self, role).servers:
                object.__setattr__(self, role, getattr(self, role).with_servers(self.nats_url))

    @property
    def host_id(self) -> str:
        return self.host_key.public_key

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def uploads_dir(self) -> Path:  # the dashboard's uploads: loadable even without allow_file_load
        return self.data_dir / "uploads"

    def with_nats_url(self, url: str) -> HostConfig:
        """This config on the server at `url` (the embedded one) for all three connections."""
        return dataclasses.replace(self, nats_url=url, rpc=self.rpc.with_servers(url), ctl=self.ctl.with_servers(url),
                                   prov_rpc=self.prov_rpc.with_servers(url))


def build_parser() -> argparse.ArgumentParser:
    """Flags of `python -m hostcore up` (they override the environment)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--nats-url", metavar="URL",
                   help="join the lattice on this NATS server [WASMCLOUD_NATS_URL]; default: start an embedded "
                        "nats-server on 127.0.0.1:4222 (a free port if 4222 is taken)")
    p.add_argument("--lattice", "-x", dest="lattice_prefix", metavar="PREFIX",
                   help="lattice prefix [WASMCLOUD_LATTICE_PREFIX] (default: default)")
    p.add_argument("--host-seed", metavar="SEED", help="the host's server nkey seed, SN… [WASMCLOUD_HOST_SEED] "
                                                       "(default: a new key each start)")
    p.add_argument("--cluster-seed", metavar="SEED",
                   help="cluster nkey seed, SC…, that signs invocations [WASMCLOUD_CLUSTER_SEED] (default: an "
                        "ad-hoc key)")
    p.add_argument("--cluster-issuers", metavar="KEYS",
                   help="comma-separated cluster public keys whose invocations are accepted "
                        "[WASMCLOUD_CLUSTER_ISSUERS] (the own cluster key is always included)")
    p.add_argument("--friendly-name", metavar="NAME",
                   help="the host's display name [WASMCLOUD_FRIENDLY_NAME] (default: adjective-noun-N)")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE",
                   help="host label, repeatable [HOST_KEY=VALUE environment variables]")
    p.add_argument("--rpc-timeout-ms", type=int, metavar="MS",
                   help="timeout of actor and provider calls [WASMCLOUD_RPC_TIMEOUT_MS] (default: 2000)")
    p.add_argument("--allow-file-load", action="store_true", default=None,
                   help="allow file:// actor and provider references [WASMCLOUD_ALLOW_FILE_LOAD=true] "
                        "(default: off)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="module cache, NATS store and context file [HOSTCORE_DATA_DIR] (default: ~/.hostcore)")
    p.add_argument("--admin-port", type=int, metavar="PORT",
                   help="Thespian admin port that workers join [HOSTCORE_ADMIN_PORT] (default: a free port)")
    p.add_argument("--log-level", metavar="LEVEL",
                   help="debug, info, warning or error [WASMCLOUD_LOG_LEVEL] (default: info)")
    p.add_argument("--dashboard-port", type=int, metavar="PORT",
                   help="dashboard port [WASMCLOUD_DASHBOARD_PORT] (default: 4000; 0 = no dashboard)")
    p.add_argument("--dashboard-token", metavar="TOKEN",
                   help="access token the dashboard requires [HOSTCORE_DASHBOARD_TOKEN] (default: none)")
    p.add_argument("--placement", choices=[m.value for m in Placement],
                   help="where instances start: local (default), workers, spread [HOSTCORE_PLACEMENT]")
    p.add_argument("--convention-bind", metavar="ADDRESS",
                   help="address the Thespian processes listen on [HOSTCORE_CONVENTION_BIND] (default 127.0.0.1)")
    p.add_argument("--allow-second-host", action="store_true", default=None,
                   help="start a second embedded NATS, a separate lattice, although a host from the same data "
                        "directory runs [HOSTCORE_ALLOW_SECOND_HOST=true] (default: refuse; join it with --nats-url)")
    return p


def load_config(
    argv: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> HostConfig:
    """Build the host config. Precedence, lowest first: JSON file < environment < flags.

    The JSON file uses the OTP host's keys (protocol.md §10.2, e.g. `lattice_prefix`); when
    `config_file` is None, `./host_config.json` is read if present. Seeds that are missing or
    invalid produce fresh keys (OTP behaviour; an ad-hoc cluster key is logged as a warning).

    Raises:
        ConfigError: a value cannot be used; the message names the key and the value.
    """
    env = dict(os.environ if environ is None else environ)
    path = config_file if config_file is not None else Path("host_config.json")
    file_values: dict[str, object] = {}
    if path.is_file():
        try:
            file_values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not a readable JSON object ({err})") from None
    flags = build_parser().parse_args(list(argv))

    def pick(env_key: str, json_key: str, flag: object = None, default: str = "") -> str:
        if flag is not None:
            return str(flag)
        if env_key in env:
            return env[env_key]
        if json_key in file_values and file_values[json_key] is not None:
            return str(file_values[json_key])
        return default

    host_key = parse_seed("WASMCLOUD_HOST_SEED", pick("WASMCLOUD_HOST_SEED", "host_seed", flags.host_seed), KeyKind.SERVER)
    cluster_key = parse_seed(
        "WASMCLOUD_CLUSTER_SEED",
        pick("WASMCLOUD_CLUSTER_SEED", "cluster_seed", flags.cluster_seed),
        KeyKind.CLUSTER,
    )
    adhoc = cluster_key is None
    if cluster_key is None:
        cluster_key = KeyPair.generate(KeyKind.CLUSTER)
        log.warning(
            "no cluster seed given: using an ad-hoc cluster key; other hosts will reject this "
            "host's invocations unless they list it in WASMCLOUD_CLUSTER_ISSUERS",
            extra={"cluster_key": cluster_key.public_key},
        )
    # protocol.md §10.2: the own cluster key is always prepended to the issuers.
    issuers = parse_csv(pick("WASMCLOUD_CLUSTER_ISSUERS", "cluster_issuers", flags.cluster_issuers))
    issuers = (cluster_key.public_key, *(i for i in issuers if i != cluster_key.public_key))

    labels = {k[5:].lower(): v for k, v in env.items() if k.startswith("HOST_") and len(k) > 5}
    labels.update(platform_labels())
    for item in flags.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label: expected KEY=VALUE, got {item!r}")
        labels[key] = value

    endpoints = nats_endpoints(lambda key, json_key, default: pick(key, json_key, None, default),
                           pick("WASMCLOUD_NATS_URL", "nats_url", flags.nats_url))
    rpc_ms = parse_number("WASMCLOUD_RPC_TIMEOUT_MS", pick("WASMCLOUD_RPC_TIMEOUT_MS", "rpc_timeout_ms", flags.rpc_timeout_ms, "2000"))
    policy_ms = parse_number("WASMCLOUD_POLICY_TIMEOUT", pick("WASMCLOUD_POLICY_TIMEOUT", "policy_timeout", None, "1000"))
    delay_ms = parse_number(
        "WASMCLOUD_PROV_SHUTDOWN_DELAY_MS", pick("WASMCLOUD_PROV_SHUTDOWN_DELAY_MS", "provider_delay", None, "300")
    )
    data_dir = pick("HOSTCORE_DATA_DIR", "data_dir", flags.data_dir)
    level = pick("WASMCLOUD_LOG_LEVEL", "log_level", flags.log_level,
                 env.get("WASMCLOUD_STRUCTURED_LOG_LEVEL", "info")).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"}:
        raise ConfigError(f"WASMCLOUD_LOG_LEVEL: unknown level {level!r}")
    dashboard_port = int(parse_number("WASMCLOUD_DASHBOARD_PORT",
                                 pick("WASMCLOUD_DASHBOARD_PORT", "dashboard_port", flags.dashboard_port, "4000")))
    if dashboard_port > 65535:
        raise ConfigError(f"WASMCLOUD_DASHBOARD_PORT: not a TCP port, got {dashboard_port!r}")
    dashboard_host = pick("WASMCLOUD_DASHBOARD_HOST", "dashboard_host", None, "127.0.0.1")
    dashboard_token = pick("HOSTCORE_DASHBOARD_TOKEN", "dashboard_token", flags.dashboard_token)
    if dashboard_port and not is_loopback(dashboard_host) and not dashboard_token:
        raise ConfigError(f"WASMCLOUD_DASHBOARD_HOST: a dashboard on {dashboard_host} is reachable from other "
                          "machines and needs an access token (HOSTCORE_DASHBOARD_TOKEN)")
    return HostConfig(
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        dashboard_token=dashboard_token,
        host_key=host_key or KeyPair.generate(KeyKind.SERVER),
        cluster_key=cluster_key,
        cluster_issuers=issuers,
        cluster_adhoc=adhoc,
        lattice_prefix=pick("WASMCLOUD_LATTICE_PREFIX", "lattice_prefix", flags.lattice_prefix, "default"),
        friendly_name=pick("WASMCLOUD_FRIENDLY_NAME", "friendly_name", flags.friendly_name) or friendly_name(),
        labels=labels,
        nats_url=endpoints["ctl"].url,
        rpc=endpoints["rpc"],
        ctl=endpoints["ctl"],
        prov_rpc=endpoints["prov_rpc"],
        network=thespian_network(lambda key, json_key, default: pick(key, json_key, None, default), flags.convention_bind),
        ctl_topic_prefix=pick("WASMCLOUD_CTL_TOPIC_PREFIX", "ctl_topic_prefix", None, DEFAULT_CTL_TOPIC_PREFIX),
        rpc_timeout_s=rpc_ms / 1000,
        allow_file_load=parse_bool(
            "WASMCLOUD_ALLOW_FILE_LOAD", pick("WASMCLOUD_ALLOW_FILE_LOAD", "enable_actor_from_fs", flags.allow_file_load, "false")
        ),
        allow_second_host=parse_bool("HOSTCORE_ALLOW_SECOND_HOST",
                                pick("HOSTCORE_ALLOW_SECOND_HOST", "allow_second_host", flags.allow_second_host, "false")),
        allow_latest=parse_bool("WASMCLOUD_OCI_ALLOW_LATEST", pick("WASMCLOUD_OCI_ALLOW_LATEST", "allow_latest", None, "false")),
        allowed_insecure=parse_csv(pick("WASMCLOUD_OCI_ALLOWED_INSECURE", "allowed_insecure")),
        oci_env_registry=(env["OCI_REGISTRY"], env.get("OCI_REGISTRY_USER", ""), env.get("OCI_REGISTRY_PASSWORD", ""))
        if env.get("OCI_REGISTRY") else None,
        heartbeat_interval_s=float(parse_number("HOSTCORE_HEARTBEAT_INTERVAL_S",
                                           pick("HOSTCORE_HEARTBEAT_INTERVAL_S", "heartbeat_interval_s", None, "30"), float)),
        js_domain=pick("WASMCLOUD_JS_DOMAIN", "js_domain") or None,
        policy_topic=pick("WASMCLOUD_POLICY_TOPIC", "policy_topic") or None,
        policy_changes_topic=pick("WASMCLOUD_POLICY_CHANGES_TOPIC", "policy_changes_topic") or None,
        policy_timeout_s=policy_ms / 1000,
        provider_shutdown_delay_s=delay_ms / 1000,
        data_dir=Path(data_dir).expanduser() if data_dir else Path.home() / ".hostcore",
        admin_port=int(parse_number("HOSTCORE_ADMIN_PORT", pick("HOSTCORE_ADMIN_PORT", "admin_port", flags.admin_port, "0"))),
        placement=parse_placement(pick("HOSTCORE_PLACEMENT", "placement", flags.placement, Placement.LOCAL.value)),
        convention=convention_timing(lambda key, json_key, default: pick(key, json_key, None, default)),
        log_level="WARNING" if level == "WARN" else level,
        structured_logging=parse_bool(
            "WASMCLOUD_STRUCTURED_LOGGING_ENABLED",
            pick("WASMCLOUD_STRUCTURED_LOGGING_ENABLED", "structured_logging_enabled", None, "false"),
        ),
        telemetry=TelemetrySettings.from_environ(env),
        test_crash_role=env.get("HOSTCORE_TEST_CRASH_ROLE", ""),
    )
