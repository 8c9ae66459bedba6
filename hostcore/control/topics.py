"""Control-interface subjects (protocol.md §2.1): building and parsing, nothing else."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ControlTopic",
    "get_claims",
    "get_links",
    "host_command",
    "inventory",
    "parse",
    "ping_hosts",
    "prefix",
]

# QUIRK (protocol.md §2): v0.59 dropped the first three tokens and so broke on a ctl prefix with
# another number of dots. We strip the configured prefix itself, so any prefix works.


@dataclass(frozen=True, slots=True)
class ControlTopic:
    """A parsed control subject: `kind` is cmd/get/ping/linkdefs/registries/auction; `host_id`
    is set for host-targeted subjects; `op` is the last part (scale, inv, hosts, put, …)."""

    kind: str
    op: str
    host_id: str = ""


def prefix(ctl_topic_prefix: str, lattice_prefix: str) -> str:
    return f"{ctl_topic_prefix}.{lattice_prefix}"


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
