"""Every NATS subject hostcore speaks on (protocol.md §2.1, §3, §4): building and parsing,
nothing else. Nobody else writes a `wasmbus.` subject."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_CTL_TOPIC_PREFIX",
    "PROVIDER_RPC_QUEUE_GROUP",
    "ControlTopic",
    "actor_rpc",
    "auction",
    "control_subscriptions",
    "get_claims",
    "get_links",
    "host_command",
    "inventory",
    "lattice_events",
    "linkdefs",
    "parse",
    "ping_hosts",
    "prefix",
    "provider_health",
    "provider_linkdefs",
    "provider_rpc",
    "provider_shutdown",
    "registries_put",
    "rpc_events",
    "rpc_prefix",
]

DEFAULT_CTL_TOPIC_PREFIX = "wasmbus.ctl"
PROVIDER_RPC_QUEUE_GROUP = "rpc"  # wasmbus-rpc's queue group for provider RPC subscriptions

# QUIRK (protocol.md §2): v0.59 dropped the first three tokens and so broke on a ctl prefix with
# another number of dots. We strip the configured prefix itself, so any prefix works.


@dataclass(frozen=True, slots=True)
class ControlTopic:
    """A parsed control subject: `kind` is cmd/get/ping/linkdefs/registries/auction; `host_id`
    is set for host-targeted subjects; `op` is the last part (scale, inv, hosts, put, …)."""

    kind: str
    op: str
    host_id: str = ""


# --- RPC and events (protocol.md §3, §4) -------------------------------------------------------


def rpc_prefix(lattice_prefix: str) -> str:
    """`wasmbus.rpc.{lattice}.`, what every RPC subject of the lattice starts with."""
    return f"wasmbus.rpc.{lattice_prefix}."


def actor_rpc(lattice_prefix: str, actor_key: str) -> str:
    """An actor's invocation subject; its instances subscribe in the queue group of the same name."""
    return f"{rpc_prefix(lattice_prefix)}{actor_key}"


def provider_rpc(lattice_prefix: str, provider_key: str, link_name: str) -> str:
    """A provider's invocation subject, the root of its `.health`/`.shutdown`/`.linkdefs.*`."""
    return f"{rpc_prefix(lattice_prefix)}{provider_key}.{link_name}"


def provider_health(root: str) -> str:
    return f"{root}.health"


def provider_shutdown(root: str) -> str:
    return f"{root}.shutdown"


def provider_linkdefs(root: str, op: str) -> str:
    """`op` is `put`, `del`, or `*` (what a provider subscribes to)."""
    return f"{root}.linkdefs.{op}"


def rpc_events(lattice_prefix: str) -> str:
    """invocation_succeeded / invocation_failed (protocol.md §3.5)."""
    return f"wasmbus.rpcevt.{lattice_prefix}"


def lattice_events(lattice_prefix: str) -> str:
    """Lifecycle events and heartbeats (protocol.md §3)."""
    return f"wasmbus.evt.{lattice_prefix}"


# --- the control interface (protocol.md §2) ------------------------------------------------------


def prefix(ctl_topic_prefix: str, lattice_prefix: str) -> str:
    return f"{ctl_topic_prefix}.{lattice_prefix}"


def control_subscriptions(p: str, host_id: str) -> dict[str, str]:
    """What one host's control server subscribes to, by purpose: `cmd` (this host's commands),
    `inv`, `ping`, `get` and `linkdefs` (queue group: one host answers), `registries` and
    `auction` (every host)."""
    return {"cmd": f"{p}.cmd.{host_id}.*", "inv": inventory(p, host_id), "ping": ping_hosts(p),
            "get": f"{p}.get.*", "linkdefs": f"{p}.linkdefs.*", "registries": registries_put(p),
            "auction": f"{p}.auction.>"}


def linkdefs(p: str, op: str) -> str:
    """`op` is `put` or `del`."""
    return f"{p}.linkdefs.{op}"


def auction(p: str, kind: str) -> str:
    """`kind` is `actor` or `provider`."""
    return f"{p}.auction.{kind}"


def registries_put(p: str) -> str:
    return f"{p}.registries.put"


def host_command(p: str, host_id: str, op: str) -> str:
    return f"{p}.cmd.{host_id}.{op}"


def inventory(p: str, host_id: str) -> str:
    return f"{p}.get.{host_id}.inv"


def ping_hosts(p: str) -> str:
    return f"{p}.ping.hosts"


def get_claims(p: str) -> str:
    return f"{p}.get.claims"


def get_links(p: str) -> str:
    return f"{p}.get.links"


def parse(p: str, subject: str) -> ControlTopic | None:
    """Parse `subject` under prefix `p`; None when it is not a control subject we know the shape of."""
    if not subject.startswith(p + "."):
        return None
    parts = subject[len(p) + 1:].split(".")
    match parts:
        case ["cmd", host_id, op]:
            return ControlTopic("cmd", op, host_id)
        case ["get", host_id, "inv"]:
            return ControlTopic("get", "inv", host_id)
        case ["get", op] | ["ping", op] | ["linkdefs", op] | ["registries", op] | ["auction", op]:
            return ControlTopic(parts[0], op)
    return None
