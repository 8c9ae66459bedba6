"""Host configuration: one frozen `HostConfig`, loaded once by `load_config`.

Only this module reads the environment. Everything else receives the config (or the few fields it
needs) from its owner, and Thespian actors get it in their start message.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import json
import logging
import os
import platform
import random
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.context import LocalContext, live_context
from hostcore.errors import ConfigError, NkeyError
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.natsconn import ROLES, NatsEndpoint
from hostcore.telemetry.settings import TelemetrySettings
from hostcore.wire.subjects import DEFAULT_CTL_TOPIC_PREFIX

__all__ = [
    "ClientConfig",
    "ConventionTiming",
    "HostConfig",
    "Placement",
    "SECRET_ENV",
    "ThespianNetwork",
    "WorkerConfig",
    "add_ctl_flags",
    "build_parser",
    "build_worker_parser",
    "friendly_name",
    "is_loopback",
    "load_client_config",
    "load_config",
    "load_worker_config",
    "platform_labels",
]

log = logging.getLogger(__name__)

# protocol.md §10.3: the OTP host names itself {adjective}-{noun}-{1..9999} from fixed word lists.
_ADJECTIVES = (
    "misty", "silent", "empty", "dry", "dark", "summer", "icy", "quiet", "white", "cool",
    "spring", "winter", "twilight", "dawn", "crimson", "wispy", "ancient", "purple", "lively",
    "nameless", "polished", "bold", "autumn", "hidden", "proud", "rough", "still", "small",
)
_NOUNS = (
    "waterfall", "river", "breeze", "moon", "rain", "wind", "sea", "morning", "snow", "lake",
    "sunset", "pine", "shadow", "leaf", "dawn", "glitter", "forest", "hill", "cloud", "meadow",
    "sun", "glade", "bird", "brook", "butterfly", "bush", "dew", "dust", "field", "fire",
)

# Rust std::env::consts spellings (protocol.md §10.3).
_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}



class Placement(enum.StrEnum):
    """Where ActorSupervisor starts instances (HOSTCORE_PLACEMENT; issue 6, Thespian convention).

    LOCAL: every instance is forked on this host (no convention traffic is used).
    WORKERS: on the least-loaded joined worker; on this host while no worker is available.
    SPREAD: on the least-loaded of this host and the joined workers.
    """

    LOCAL = "local"
    WORKERS = "workers"
    SPREAD = "spread"


_TRUE = frozenset({"1", "true", "yes", "y", "on", "enabled", "enable"})
_FALSE = frozenset({"0", "false", "no", "n", "off", "disabled", "disable", ""})


@dataclass(frozen=True, slots=True, kw_only=True)
class ConventionTiming:
    """How fast a Thespian convention notices a dead member (architecture.md: ~22 min with
    Thespian's defaults). A member re-registers every `period_s`; the leader drops a member
    silent for `period_s * miss_max` and a member drops a leader after `miss_max` failed
    re-registrations. Leader and members should use the same values."""

    period_s: int = 2  # Thespian parses "M:S" into whole seconds
    miss_max: int = 3

    @property
    def detection_s(self) -> float:
        """Upper bound for noticing a dead member: the silence window plus one check interval."""
        return float(self.period_s * (self.miss_max + 1))


# Environment variables holding secrets: never passed on to provider processes.
SECRET_ENV = frozenset({
    "HOSTCORE_CONVENTION_SECRET", "HOSTCORE_DASHBOARD_TOKEN", "HOSTCORE_NATS_CREDS",
    "WASMCLOUD_HOST_SEED", "WASMCLOUD_CLUSTER_SEED",
    *(f"WASMCLOUD_{conn}_{kind}" for conn in ("RPC", "CTL", "PROV_RPC") for kind in ("SEED", "JWT")),
})


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost" (addresses other machines cannot reach)."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ThespianNetwork:
    """Where a node's Thespian processes listen and how their frames are authenticated
    (hostcore/thespian_net.py). Thespian unpickles whatever reaches its sockets, so a convention
    reachable from other machines needs the shared secret (or an explicit, logged opt-out)."""

    bind: str = "127.0.0.1"  # HOSTCORE_CONVENTION_BIND: listen and advertise on this address
    secret: str = field(default="", repr=False)  # HOSTCORE_CONVENTION_SECRET, shared by host and workers
    allow_insecure: bool = False  # HOSTCORE_CONVENTION_INSECURE: a non-loopback convention without secret

    @property
    def loopback(self) -> bool:
        return is_loopback(self.bind)


def _network(pick: Callable[[str, str, str], str], bind_flag: object) -> ThespianNetwork:
    bind = str(bind_flag) if bind_flag is not None else pick("HOSTCORE_CONVENTION_BIND", "convention_bind", "127.0.0.1")
    try:  # Thespian's TCP transport is IPv4 only
        if bind != "localhost":
            ipaddress.IPv4Address(bind)
    except ValueError:
        raise ConfigError(f"HOSTCORE_CONVENTION_BIND: expected an IPv4 address, got {bind!r}") from None
    net = ThespianNetwork(
        bind="127.0.0.1" if bind == "localhost" else bind,
        secret=pick("HOSTCORE_CONVENTION_SECRET", "convention_secret", ""),
        allow_insecure=_bool("HOSTCORE_CONVENTION_INSECURE",
                             pick("HOSTCORE_CONVENTION_INSECURE", "convention_insecure", "false")),
    )
    if not net.loopback and not net.secret and not net.allow_insecure:
        raise ConfigError(
            f"HOSTCORE_CONVENTION_BIND: {bind} is reachable from other machines; set HOSTCORE_CONVENTION_SECRET "
            "(the same on host and workers), or HOSTCORE_CONVENTION_INSECURE=true to accept unauthenticated peers")
    if net.secret and len(net.secret) < 16:
        raise ConfigError("HOSTCORE_CONVENTION_SECRET: must be at least 16 characters")
    return net


def _endpoints(pick: Callable[[str, str, str], str], shortcut: str) -> dict[str, NatsEndpoint]:
    """The rpc / ctl / prov_rpc endpoints (protocol.md §10.2). A role's own HOST/PORT win over the
    WASMCLOUD_NATS_URL shortcut; HOSTCORE_NATS_CREDS applies to roles without a seed or JWT."""
    creds = pick("HOSTCORE_NATS_CREDS", "nats_creds", "")
    ca = pick("HOSTCORE_NATS_CA", "nats_ca", "")
    for key, path in (("HOSTCORE_NATS_CREDS", creds), ("HOSTCORE_NATS_CA", ca)):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"{key}: no such file {path!r}")
    out = {}
    given = {role: (pick(f"WASMCLOUD_{role.upper()}_HOST", f"{role}_host", ""),
                    pick(f"WASMCLOUD_{role.upper()}_PORT", f"{role}_port", "")) for role in ROLES}
    # Nothing given: the embedded server (""). Otherwise a role left unset gets OTP's default.
    shortcut = shortcut or ("nats://127.0.0.1:4222" if any(h or p for h, p in given.values()) else "")
    for role in ROLES:
        env = f"WASMCLOUD_{role.upper()}"
        host, port = given[role]
        tls = _bool(f"{env}_TLS", pick(f"{env}_TLS", f"{role}_tls", "false"))
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise ConfigError(f"{env}_PORT: not a TCP port, got {port!r}")
        url = f"{'tls' if tls else 'nats'}://{host or '127.0.0.1'}:{port or 4222}" if host or port else shortcut
        seed, jwt = pick(f"{env}_SEED", f"{role}_seed", "").strip(), pick(f"{env}_JWT", f"{role}_jwt", "").strip()
        if jwt and not seed:
            raise ConfigError(f"{env}_JWT: a user JWT needs its seed ({env}_SEED)")
        out[role] = NatsEndpoint.from_url(
            role, url, seed=seed, jwt=jwt, tls=tls,
            creds_file=Path(creds).expanduser() if creds and not seed else None,
            ca_file=Path(ca).expanduser() if ca else None)
    return out


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
    # Thespian convention (issue 6): workers join this host's admin; see hostcore/worker.py.
    placement: Placement = Placement.LOCAL
    convention: ConventionTiming = field(default_factory=ConventionTiming)
    network: ThespianNetwork = field(default_factory=lambda: ThespianNetwork())
    # Traces, metrics, /metrics port (issue 8; OTEL_TRACES_EXPORTER, HOSTCORE_METRICS…).
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


def friendly_name(rng: random.Random | None = None) -> str:
    r = rng or random.Random()
    return f"{r.choice(_ADJECTIVES)}-{r.choice(_NOUNS)}-{r.randint(1, 9999)}"


def platform_labels() -> dict[str, str]:
    machine = platform.machine().lower()
    osname = sys.platform if sys.platform != "darwin" else "macos"
    osname = "linux" if osname.startswith("linux") else osname
    return {
        "hostcore.arch": _ARCH.get(machine, machine),
        "hostcore.os": osname,
        "hostcore.osfamily": "windows" if osname.startswith("win") else "unix",
    }


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _number(key: str, value: str, cast: type[int] | type[float] = int) -> float:
    try:
        n = cast(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if n < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return n


def _csv(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _seed(key: str, value: str, kind: KeyKind) -> KeyPair | None:
    """A seed of `kind`, or None (with a warning) when unset or invalid, as the OTP host does."""
    if not value:
        return None
    try:
        pair = KeyPair.from_seed(value)
    except NkeyError:
        log.warning("invalid seed, generating a new key", extra={"key": key})
        return None
    if pair.kind is not kind:
        log.warning("seed of the wrong kind, generating a new key", extra={"key": key})
        return None
    return pair


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

    host_key = _seed("WASMCLOUD_HOST_SEED", pick("WASMCLOUD_HOST_SEED", "host_seed", flags.host_seed), KeyKind.SERVER)
    cluster_key = _seed(
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
    issuers = _csv(pick("WASMCLOUD_CLUSTER_ISSUERS", "cluster_issuers", flags.cluster_issuers))
    issuers = (cluster_key.public_key, *(i for i in issuers if i != cluster_key.public_key))

    labels = {k[5:].lower(): v for k, v in env.items() if k.startswith("HOST_") and len(k) > 5}
    labels.update(platform_labels())
    for item in flags.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label: expected KEY=VALUE, got {item!r}")
        labels[key] = value

    endpoints = _endpoints(lambda key, json_key, default: pick(key, json_key, None, default),
                           pick("WASMCLOUD_NATS_URL", "nats_url", flags.nats_url))
    rpc_ms = _number("WASMCLOUD_RPC_TIMEOUT_MS", pick("WASMCLOUD_RPC_TIMEOUT_MS", "rpc_timeout_ms", flags.rpc_timeout_ms, "2000"))
    policy_ms = _number("WASMCLOUD_POLICY_TIMEOUT", pick("WASMCLOUD_POLICY_TIMEOUT", "policy_timeout", None, "1000"))
    delay_ms = _number(
        "WASMCLOUD_PROV_SHUTDOWN_DELAY_MS", pick("WASMCLOUD_PROV_SHUTDOWN_DELAY_MS", "provider_delay", None, "300")
    )
    data_dir = pick("HOSTCORE_DATA_DIR", "data_dir", flags.data_dir)
    level = pick("WASMCLOUD_LOG_LEVEL", "log_level", flags.log_level,
                 env.get("WASMCLOUD_STRUCTURED_LOG_LEVEL", "info")).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"}:
        raise ConfigError(f"WASMCLOUD_LOG_LEVEL: unknown level {level!r}")
    dashboard_port = int(_number("WASMCLOUD_DASHBOARD_PORT",
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
        network=_network(lambda key, json_key, default: pick(key, json_key, None, default), flags.convention_bind),
        ctl_topic_prefix=pick("WASMCLOUD_CTL_TOPIC_PREFIX", "ctl_topic_prefix", None, DEFAULT_CTL_TOPIC_PREFIX),
        rpc_timeout_s=rpc_ms / 1000,
        allow_file_load=_bool(
            "WASMCLOUD_ALLOW_FILE_LOAD", pick("WASMCLOUD_ALLOW_FILE_LOAD", "enable_actor_from_fs", flags.allow_file_load, "false")
        ),
        allow_second_host=_bool("HOSTCORE_ALLOW_SECOND_HOST",
                                pick("HOSTCORE_ALLOW_SECOND_HOST", "allow_second_host", flags.allow_second_host, "false")),
        allow_latest=_bool("WASMCLOUD_OCI_ALLOW_LATEST", pick("WASMCLOUD_OCI_ALLOW_LATEST", "allow_latest", None, "false")),
        allowed_insecure=_csv(pick("WASMCLOUD_OCI_ALLOWED_INSECURE", "allowed_insecure")),
        oci_env_registry=(env["OCI_REGISTRY"], env.get("OCI_REGISTRY_USER", ""), env.get("OCI_REGISTRY_PASSWORD", ""))
        if env.get("OCI_REGISTRY") else None,
        heartbeat_interval_s=float(_number("HOSTCORE_HEARTBEAT_INTERVAL_S",
                                           pick("HOSTCORE_HEARTBEAT_INTERVAL_S", "heartbeat_interval_s", None, "30"), float)),
        js_domain=pick("WASMCLOUD_JS_DOMAIN", "js_domain") or None,
        policy_topic=pick("WASMCLOUD_POLICY_TOPIC", "policy_topic") or None,
        policy_changes_topic=pick("WASMCLOUD_POLICY_CHANGES_TOPIC", "policy_changes_topic") or None,
        policy_timeout_s=policy_ms / 1000,
        provider_shutdown_delay_s=delay_ms / 1000,
        data_dir=Path(data_dir).expanduser() if data_dir else Path.home() / ".hostcore",
        admin_port=int(_number("HOSTCORE_ADMIN_PORT", pick("HOSTCORE_ADMIN_PORT", "admin_port", flags.admin_port, "0"))),
        placement=_placement(pick("HOSTCORE_PLACEMENT", "placement", flags.placement, Placement.LOCAL.value)),
        convention=_convention_timing(lambda key, json_key, default: pick(key, json_key, None, default)),
        log_level="WARNING" if level == "WARN" else level,
        structured_logging=_bool(
            "WASMCLOUD_STRUCTURED_LOGGING_ENABLED",
            pick("WASMCLOUD_STRUCTURED_LOGGING_ENABLED", "structured_logging_enabled", None, "false"),
        ),
        telemetry=TelemetrySettings.from_environ(env),
        test_crash_role=env.get("HOSTCORE_TEST_CRASH_ROLE", ""),
    )


def _placement(value: str) -> Placement:
    try:
        return Placement(value.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in Placement)
        raise ConfigError(f"HOSTCORE_PLACEMENT: expected one of {choices}, got {value!r}") from None


def _convention_timing(pick: Callable[[str, str, str], str]) -> ConventionTiming:
    period = int(_number("HOSTCORE_CONVENTION_REREGISTRATION_S",
                         pick("HOSTCORE_CONVENTION_REREGISTRATION_S", "convention_reregistration_s", "2")))
    misses = int(_number("HOSTCORE_CONVENTION_MISS_MAX", pick("HOSTCORE_CONVENTION_MISS_MAX", "convention_miss_max", "3")))
    if period < 1:  # Thespian's "M:S" format has whole seconds; 0 would disable the timers
        raise ConfigError(f"HOSTCORE_CONVENTION_REREGISTRATION_S: must be at least 1, got {period!r}")
    if misses < 1:
        raise ConfigError(f"HOSTCORE_CONVENTION_MISS_MAX: must be at least 1, got {misses!r}")
    return ConventionTiming(period_s=period, miss_max=misses)


# --- worker nodes (hostcore/worker.py) ------------------------------------------------------------


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
    admin_port = int(_number("HOSTCORE_WORKER_ADMIN_PORT", pick("HOSTCORE_WORKER_ADMIN_PORT", flags.admin_port, "0")))
    if admin_port == int(port):
        raise ConfigError(f"--admin-port: {admin_port} is the host's admin port; the worker needs its own")
    network = _network(lambda key, json_key, default: pick(key, None, default), flags.convention_bind)
    if network.loopback and not is_loopback(host):
        raise ConfigError(f"--convention-bind: the host at {host} cannot reach a worker listening on {network.bind}; "
                          "give an address of this machine that the host can reach")
    return WorkerConfig(
        join=(host, int(port)),
        worker_id=pick("HOSTCORE_WORKER_ID", flags.worker_id) or f"worker-{uuid.uuid4().hex[:12]}",
        labels=labels,
        admin_port=admin_port,
        data_dir=Path(data_dir).expanduser() if data_dir else Path.home() / ".hostcore",
        convention=_convention_timing(lambda key, json_key, default: pick(key, None, default)),
        network=network,
        log_level="WARNING" if level == "WARN" else level,
        structured_logging=_bool("WASMCLOUD_STRUCTURED_LOGGING_ENABLED",
                                 pick("WASMCLOUD_STRUCTURED_LOGGING_ENABLED", None, "false")),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """What a control-interface client (the CLI's ctl/call commands) needs."""

    nats_url: str  # display form of the control server (no credentials)
    lattice_prefix: str
    ctl_topic_prefix: str
    timeout_s: float
    cluster_seed: str = field(default="", repr=False)  # signs `call` invocations; "" when unset
    ctl: NatsEndpoint = field(default_factory=lambda: NatsEndpoint(role="ctl", servers=()))
    nats_source: str = "default"  # where nats_url came from, for error messages


_CTL_FLAGS = ("ctl_host", "ctl_port", "ctl_seed", "ctl_jwt", "ctl_tls", "nats_creds", "nats_ca")


def add_ctl_flags(p: argparse.ArgumentParser) -> None:
    """The control connection's flags of the CLI (same meaning as WASMCLOUD_CTL_* / HOSTCORE_NATS_*)."""
    p.add_argument("--ctl-host", help="control NATS host [WASMCLOUD_CTL_HOST]")
    p.add_argument("--ctl-port", help="control NATS port [WASMCLOUD_CTL_PORT]")
    p.add_argument("--ctl-seed", help="nkey seed for the control connection [WASMCLOUD_CTL_SEED]")
    p.add_argument("--ctl-jwt", help="user JWT for the control connection [WASMCLOUD_CTL_JWT]")
    p.add_argument("--ctl-tls", action="store_const", const="true", help="use TLS [WASMCLOUD_CTL_TLS]")
    p.add_argument("--nats-creds", help="NATS .creds file [HOSTCORE_NATS_CREDS]")
    p.add_argument("--nats-ca", help="CA file that signed the NATS server's certificate [HOSTCORE_NATS_CA]")


def load_client_config(*, nats_url: str | None = None, lattice_prefix: str | None = None,
                       timeout_ms: int | None = None, cluster_seed: str | None = None,
                       environ: Mapping[str, str] | None = None, flags: object = None) -> ClientConfig:
    """Client settings: flags win over WASMCLOUD_* environment variables, then the local host's
    context file (hostcore.context, in HOSTCORE_DATA_DIR or ~/.hostcore), then defaults. The
    context also supplies the lattice and cluster seed when the URL is its host's.

    `flags` is the parsed namespace of a parser given `add_ctl_flags` (or None)."""
    env = os.environ if environ is None else environ
    given = {name: getattr(flags, name, None) for name in _CTL_FLAGS}
    env_keys = {"ctl_host": "WASMCLOUD_CTL_HOST", "ctl_port": "WASMCLOUD_CTL_PORT", "ctl_seed": "WASMCLOUD_CTL_SEED",
                "ctl_jwt": "WASMCLOUD_CTL_JWT", "ctl_tls": "WASMCLOUD_CTL_TLS", "nats_creds": "HOSTCORE_NATS_CREDS",
                "nats_ca": "HOSTCORE_NATS_CA"}

    def pick(key: str, json_key: str, default: str) -> str:
        name = next((n for n, k in env_keys.items() if k == key), "")
        value = given.get(name)
        return str(value) if value is not None else env.get(key, default)
    timeout = timeout_ms if timeout_ms is not None else _number(
        "WASMCLOUD_CTL_TIMEOUT_MS", env.get("WASMCLOUD_CTL_TIMEOUT_MS", "2000"))
    ctx: LocalContext | None = None
    source = "default"
    host_port_given = bool(pick("WASMCLOUD_CTL_HOST", "", "") or pick("WASMCLOUD_CTL_PORT", "", ""))
    if nats_url:
        source = "--nats-url"
    elif env.get("WASMCLOUD_NATS_URL"):
        nats_url, source = env["WASMCLOUD_NATS_URL"], "WASMCLOUD_NATS_URL"
    elif host_port_given:
        source = "WASMCLOUD_CTL_HOST/WASMCLOUD_CTL_PORT"
    data_dir = env.get("HOSTCORE_DATA_DIR")
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    local = live_context(Path(data_dir).expanduser() if data_dir else home / ".hostcore")
    if not nats_url and not host_port_given:
        ctx = local
        nats_url, source = (ctx.nats_url, "the local host") if ctx else ("nats://127.0.0.1:4222", "default")
    elif nats_url and local is not None and local.nats_url == nats_url:  # named, but it is the local host
        ctx = local
    if nats_url:  # a URL (given or the local host's) wins over the environment's host and port
        given["ctl_host"], given["ctl_port"] = None, None
        env = {k: v for k, v in env.items() if k not in ("WASMCLOUD_CTL_HOST", "WASMCLOUD_CTL_PORT")}
    ctl = _endpoints(lambda key, json_key, default: pick(key, json_key, default) if "CTL" in key or "NATS" in key
                     else "", nats_url or "")["ctl"]
    return ClientConfig(
        ctl=ctl,
        nats_url=ctl.url,
        lattice_prefix=lattice_prefix or env.get("WASMCLOUD_LATTICE_PREFIX") or (ctx.lattice_prefix if ctx else "default"),
        ctl_topic_prefix=env.get("WASMCLOUD_CTL_TOPIC_PREFIX") or (ctx.ctl_topic_prefix if ctx else DEFAULT_CTL_TOPIC_PREFIX),
        timeout_s=timeout / 1000,
        cluster_seed=cluster_seed or env.get("WASMCLOUD_CLUSTER_SEED") or (ctx.cluster_seed if ctx else ""),
        nats_source=source,
    )
