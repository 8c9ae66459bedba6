"""The three NATS connections of a host (protocol.md §1.1, §10.2) from its settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hostcore.config.values import parse_bool
from hostcore.errors import ConfigError
from hostcore.natsconn import ROLES, NatsEndpoint

__all__ = ["nats_endpoints"]


def nats_endpoints(pick: Callable[[str, str, str], str], shortcut: str) -> dict[str, NatsEndpoint]:
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
        tls = parse_bool(f"{env}_TLS", pick(f"{env}_TLS", f"{role}_tls", "false"))
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
