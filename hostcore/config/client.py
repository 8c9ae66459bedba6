"""A control-interface client's configuration (the CLI's ctl and call commands)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.config.endpoints import nats_endpoints
from hostcore.config.values import parse_number
from hostcore.context import LocalContext, live_context
from hostcore.natsconn import NatsEndpoint
from hostcore.wire.subjects import DEFAULT_CTL_TOPIC_PREFIX

__all__ = ["ClientConfig", "add_ctl_flags", "load_client_config"]


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
    timeout = timeout_ms if timeout_ms is not None else parse_number(
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
    ctl = nats_endpoints(lambda key, json_key, default: pick(key, json_key, default) if "CTL" in key or "NATS" in key
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
