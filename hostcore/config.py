"""Host configuration: one frozen `HostConfig`, loaded once by `load_config`.

Only this module reads the environment. Everything else receives the config (or the few fields it
needs) from its owner, and Thespian actors get it in their start message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.errors import ConfigError, NkeyError
from hostcore.native.nkeys import KeyKind, KeyPair

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

_TRUE = frozenset({"1", "true", "yes", "y", "on", "enabled", "enable"})
_FALSE = frozenset({"0", "false", "no", "n", "off", "disabled", "disable", ""})


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
    nats_url: str  # "" = start an embedded nats-server
    ctl_topic_prefix: str = "wasmbus.ctl"
    rpc_timeout_s: float = 2.0
    allow_file_load: bool = False
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
    data_dir: Path = field(default_factory=lambda: Path.home() / ".hostcore")
    admin_port: int = 0  # 0 = pick a free port (a fixed port may silently join a stale admin)
    log_level: str = "INFO"
    structured_logging: bool = False
    # Per-instance limits (architecture.md: each call has a time limit, each Store a memory limit).
    max_memory_bytes: int = 256 * 1024 * 1024
    restart_intensity: int = 5  # restarts of one actor key ...
    restart_period_s: float = 10.0  # ... within this window, then give up (OTP-style)

    @property
    def host_id(self) -> str:
        return self.host_key.public_key

    @property
    def ctl_prefix(self) -> str:
        return f"{self.ctl_topic_prefix}.{self.lattice_prefix}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    def with_nats_url(self, url: str) -> HostConfig:
        return dataclasses.replace(self, nats_url=url)


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
    p.add_argument("--nats-url", help="NATS server URL; none = start an embedded nats-server")
    p.add_argument("--lattice", "-x", dest="lattice_prefix", help="lattice prefix")
    p.add_argument("--host-seed", help="server nkey seed (SN...)")
    p.add_argument("--cluster-seed", help="cluster nkey seed (SC...)")
    p.add_argument("--cluster-issuers", help="comma-separated cluster public keys")
    p.add_argument("--friendly-name")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--rpc-timeout-ms", type=int)
    p.add_argument("--allow-file-load", action="store_true", default=None)
    p.add_argument("--data-dir")
    p.add_argument("--admin-port", type=int)
    p.add_argument("--log-level")
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

    nats_url = pick("WASMCLOUD_NATS_URL", "nats_url", flags.nats_url)
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
    return HostConfig(
        host_key=host_key or KeyPair.generate(KeyKind.SERVER),
        cluster_key=cluster_key,
        cluster_issuers=issuers,
        cluster_adhoc=adhoc,
        lattice_prefix=pick("WASMCLOUD_LATTICE_PREFIX", "lattice_prefix", flags.lattice_prefix, "default"),
        friendly_name=pick("WASMCLOUD_FRIENDLY_NAME", "friendly_name", flags.friendly_name) or friendly_name(),
        labels=labels,
        nats_url=nats_url,
        ctl_topic_prefix=pick("WASMCLOUD_CTL_TOPIC_PREFIX", "ctl_topic_prefix", None, "wasmbus.ctl"),
        rpc_timeout_s=rpc_ms / 1000,
        allow_file_load=_bool(
            "WASMCLOUD_ALLOW_FILE_LOAD", pick("WASMCLOUD_ALLOW_FILE_LOAD", "enable_actor_from_fs", flags.allow_file_load, "false")
        ),
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
        log_level="WARNING" if level == "WARN" else level,
        structured_logging=_bool(
            "WASMCLOUD_STRUCTURED_LOGGING_ENABLED",
            pick("WASMCLOUD_STRUCTURED_LOGGING_ENABLED", "structured_logging_enabled", None, "false"),
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """What a control-interface client (the CLI's ctl/call commands) needs."""

    nats_url: str
    lattice_prefix: str
    ctl_topic_prefix: str
    timeout_s: float
    cluster_seed: str  # signs `call` invocations; "" when unset


def load_client_config(*, nats_url: str | None = None, lattice_prefix: str | None = None,
                       timeout_ms: int | None = None, cluster_seed: str | None = None,
                       environ: Mapping[str, str] | None = None) -> ClientConfig:
    """Client settings: flags win over WASMCLOUD_* environment variables, then defaults."""
    env = os.environ if environ is None else environ
    host = env.get("WASMCLOUD_CTL_HOST", "127.0.0.1")
    port = env.get("WASMCLOUD_CTL_PORT", "4222")
    timeout = timeout_ms if timeout_ms is not None else _number(
        "WASMCLOUD_CTL_TIMEOUT_MS", env.get("WASMCLOUD_CTL_TIMEOUT_MS", "2000"))
    return ClientConfig(
        nats_url=nats_url or env.get("WASMCLOUD_NATS_URL") or f"nats://{host}:{port}",
        lattice_prefix=lattice_prefix or env.get("WASMCLOUD_LATTICE_PREFIX", "default"),
        ctl_topic_prefix=env.get("WASMCLOUD_CTL_TOPIC_PREFIX", "wasmbus.ctl"),
        timeout_s=timeout / 1000,
        cluster_seed=cluster_seed or env.get("WASMCLOUD_CLUSTER_SEED", ""),
    )
