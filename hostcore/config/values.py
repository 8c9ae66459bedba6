"""Value parsing shared by the host, worker and client configs: booleans, numbers, lists, seeds,
placement, convention timing, the Thespian network, and the host's default name and labels.
Each parser raises ConfigError naming the key and the value."""

from __future__ import annotations

import enum
import ipaddress
import logging
import platform
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from hostcore.errors import ConfigError, NkeyError
from hostcore.native.nkeys import KeyKind, KeyPair

__all__ = [
    "SECRET_ENV",
    "ConventionTiming",
    "Placement",
    "ThespianNetwork",
    "convention_timing",
    "friendly_name",
    "is_loopback",
    "parse_bool",
    "parse_csv",
    "parse_number",
    "parse_placement",
    "parse_seed",
    "platform_labels",
    "thespian_network",
]

log = logging.getLogger("hostcore.config")

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
    """Where ActorSupervisor starts instances (HOSTCORE_PLACEMENT; the Thespian convention).

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


def thespian_network(pick: Callable[[str, str, str], str], bind_flag: object) -> ThespianNetwork:
    bind = str(bind_flag) if bind_flag is not None else pick("HOSTCORE_CONVENTION_BIND", "convention_bind", "127.0.0.1")
    try:  # Thespian's TCP transport is IPv4 only
        if bind != "localhost":
            ipaddress.IPv4Address(bind)
    except ValueError:
        raise ConfigError(f"HOSTCORE_CONVENTION_BIND: expected an IPv4 address, got {bind!r}") from None
    net = ThespianNetwork(
        bind="127.0.0.1" if bind == "localhost" else bind,
        secret=pick("HOSTCORE_CONVENTION_SECRET", "convention_secret", ""),
        allow_insecure=parse_bool("HOSTCORE_CONVENTION_INSECURE",
                             pick("HOSTCORE_CONVENTION_INSECURE", "convention_insecure", "false")),
    )
    if not net.loopback and not net.secret and not net.allow_insecure:
        raise ConfigError(
            f"HOSTCORE_CONVENTION_BIND: {bind} is reachable from other machines; set HOSTCORE_CONVENTION_SECRET "
            "(the same on host and workers), or HOSTCORE_CONVENTION_INSECURE=true to accept unauthenticated peers")
    if net.secret and len(net.secret) < 16:
        raise ConfigError("HOSTCORE_CONVENTION_SECRET: must be at least 16 characters")
    return net


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


def parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def parse_number(key: str, value: str, cast: type[int] | type[float] = int) -> float:
    try:
        n = cast(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if n < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return n


def parse_csv(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def parse_seed(key: str, value: str, kind: KeyKind) -> KeyPair | None:
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


def parse_placement(value: str) -> Placement:
    try:
        return Placement(value.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in Placement)
        raise ConfigError(f"HOSTCORE_PLACEMENT: expected one of {choices}, got {value!r}") from None


def convention_timing(pick: Callable[[str, str, str], str]) -> ConventionTiming:
    period = int(parse_number("HOSTCORE_CONVENTION_REREGISTRATION_S",
                         pick("HOSTCORE_CONVENTION_REREGISTRATION_S", "convention_reregistration_s", "2")))
    misses = int(parse_number("HOSTCORE_CONVENTION_MISS_MAX", pick("HOSTCORE_CONVENTION_MISS_MAX", "convention_miss_max", "3")))
    if period < 1:  # Thespian's "M:S" format has whole seconds; 0 would disable the timers
        raise ConfigError(f"HOSTCORE_CONVENTION_REREGISTRATION_S: must be at least 1, got {period!r}")
    if misses < 1:
        raise ConfigError(f"HOSTCORE_CONVENTION_MISS_MAX: must be at least 1, got {misses!r}")
    return ConventionTiming(period_s=period, miss_max=misses)
