"""What a host and a capability provider exchange outside invocations (protocol.md §4.11,
§11.7): the host data line on the provider's stdin, health checks and shutdown requests."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import msgpack

from hostcore.errors import HostDataInvalid
from hostcore.wire import subjects
from hostcore.wire.linkdefs import LinkDefinition, str_map

__all__ = [
    "DEFAULT_RPC_TIMEOUT_MS",
    "HEALTH_REQUEST",
    "SHUTDOWN_ACK",
    "HealthCheckResponse",
    "HostData",
    "encode_host_data",
    "otp_host_data",
    "shutdown_host_id",
    "shutdown_request",
]

DEFAULT_RPC_TIMEOUT_MS = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class HostData:
    """What the host tells a provider at start (§11.7), one base64 JSON line on stdin."""

    host_id: str = ""
    lattice_rpc_prefix: str = "default"
    link_name: str = "default"
    lattice_rpc_user_jwt: str = field(default="", repr=False)
    lattice_rpc_user_seed: str = field(default="", repr=False)
    lattice_rpc_url: str = "127.0.0.1:4222"
    lattice_rpc_tls: bool = False
    lattice_rpc_tls_ca_file: str | None = None  # hostcore extension: CA of the server's certificate
    env_values: dict[str, str] = field(default_factory=dict)
    instance_id: str = ""
    provider_key: str
    link_definitions: tuple[LinkDefinition, ...] = ()
    config_json: str | None = None
    default_rpc_timeout_ms: int = DEFAULT_RPC_TIMEOUT_MS
    cluster_issuers: tuple[str, ...] = ()
    invocation_seed: str = field(default="", repr=False)
    js_domain: str | None = None
    enable_structured_logging: bool = False
    log_level: str | None = None

    @property
    def rpc_topic(self) -> str:
        """`wasmbus.rpc.{lattice}.{provider_key}.{link_name}`, the root of every subject we use."""
        return subjects.provider_rpc(self.lattice_rpc_prefix, self.provider_key, self.link_name)

    @property
    def nats_url(self) -> str:
        """`lattice_rpc_url` with a scheme (OTP sends `host:port`); `tls://` when TLS is on."""
        url = self.lattice_rpc_url or "127.0.0.1:4222"
        if "://" in url:
            return url
        return f"{'tls' if self.lattice_rpc_tls else 'nats'}://{url}"

    @classmethod
    def from_wire(cls, line: bytes | str) -> Self:
        """Parse the stdin line: base64 (standard or URL-safe, padding optional) of a JSON object.

        Unknown keys are ignored; v0.63's `structured_logging` is read as
        `enable_structured_logging`. Raises HostDataInvalid naming the first problem.
        """
        text = line.decode("ascii", "replace") if isinstance(line, bytes) else line
        text = text.strip()
        if not text:
            raise HostDataInvalid("stdin is empty - expecting host data configuration")
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
            fields = json.loads(raw)
        except (binascii.Error, ValueError) as e:
            raise HostDataInvalid(f"not base64-encoded JSON: {e}") from e
        if not isinstance(fields, dict):
            raise HostDataInvalid("not a JSON object")
        try:
            return cls._from_map(fields)
        except (TypeError, ValueError) as e:
            raise HostDataInvalid(str(e)) from e

    @classmethod
    def _from_map(cls, fields: dict[str, Any]) -> Self:
        def text(key: str, default: str = "") -> str:
            value = fields.get(key)
            if value is None:
                return default
            if not isinstance(value, str):
                raise ValueError(f"`{key}` must be a string")
            return value

        def optional_text(key: str) -> str | None:
            value = fields.get(key)
            return None if value is None or value == "" else text(key)

        provider_key = text("provider_key")
        if not provider_key:
            raise ValueError("`provider_key` is missing")
        timeout = fields.get("default_rpc_timeout_ms")
        if timeout is None:
            timeout = DEFAULT_RPC_TIMEOUT_MS
        if type(timeout) is not int or timeout <= 0:
            raise ValueError("`default_rpc_timeout_ms` must be a positive integer")
        issuers = fields.get("cluster_issuers") or []
        if not isinstance(issuers, list) or not all(isinstance(i, str) for i in issuers):
            raise ValueError("`cluster_issuers` must be a list of strings")
        links = fields.get("link_definitions") or []
        if not isinstance(links, list):
            raise ValueError("`link_definitions` must be a list")
        config_json = fields.get("config_json")
        if config_json is not None and not isinstance(config_json, str):
            config_json = json.dumps(config_json)  # tolerate a host that sends the object itself
        structured = fields.get("enable_structured_logging", fields.get("structured_logging", False))
        return cls(
            host_id=text("host_id"),
            lattice_rpc_prefix=text("lattice_rpc_prefix", "default"),
            link_name=text("link_name", "default"),
            lattice_rpc_user_jwt=text("lattice_rpc_user_jwt"),
            lattice_rpc_user_seed=text("lattice_rpc_user_seed"),
            lattice_rpc_url=text("lattice_rpc_url"),
            lattice_rpc_tls=bool(fields.get("lattice_rpc_tls") or False),
            lattice_rpc_tls_ca_file=optional_text("lattice_rpc_tls_ca_file"),
            env_values=str_map(fields.get("env_values"), "`env_values`"),
            instance_id=text("instance_id"),
            provider_key=provider_key,
            link_definitions=tuple(LinkDefinition.from_provider_map(ld) for ld in links),
            config_json=config_json or None,
            default_rpc_timeout_ms=timeout,
            cluster_issuers=tuple(issuers),
            invocation_seed=text("invocation_seed"),
            js_domain=optional_text("js_domain"),
            enable_structured_logging=bool(structured),
            log_level=optional_text("log_level"),
        )

    def to_wire(self) -> bytes:
        """The stdin line the host writes: base64(JSON) + `\\n` (§11.7)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["link_definitions"] = [ld.to_map() for ld in self.link_definitions]
        fields["cluster_issuers"] = list(self.cluster_issuers)
        return encode_host_data(fields)


@dataclass(frozen=True, slots=True)
class HealthCheckResponse:
    """The reply to a `.health` request; the host counts any reply as healthy (§4.11)."""

    healthy: bool = True
    message: str = ""

    def to_wire(self) -> bytes:
        return msgpack.packb({"healthy": self.healthy, "message": self.message})  # type: ignore[no-any-return]


def encode_host_data(fields: dict[str, Any]) -> bytes:
    """The stdin line: base64(JSON) + `\\n` (§11.7)."""
    return base64.b64encode(json.dumps(fields).encode()) + b"\n"


def otp_host_data(*, host_id: str, lattice_rpc_prefix: str, link_name: str, connection: dict[str, Any],
                  instance_id: str, provider_key: str, links: Iterable[LinkDefinition], config_json: str,
                  default_rpc_timeout_ms: int, cluster_issuers: Iterable[str], invocation_seed: str,
                  js_domain: str | None, structured_logging: bool) -> dict[str, Any]:
    """The host data map the host sends (v0.59 field names, key order fixed). `connection` holds
    the `lattice_rpc_*` fields of the provider's NATS endpoint. QUIRK: `lattice_rpc_tls` is an
    integer 0/1 there, as OTP sends it."""
    return {
        "host_id": host_id, "lattice_rpc_prefix": lattice_rpc_prefix, "link_name": link_name,
        **connection,
        "env_values": {}, "instance_id": instance_id, "provider_key": provider_key,
        "link_definitions": [ld.to_map() for ld in links], "config_json": config_json,
        "default_rpc_timeout_ms": default_rpc_timeout_ms, "cluster_issuers": list(cluster_issuers),
        "invocation_seed": invocation_seed, "js_domain": js_domain,
        "enable_structured_logging": structured_logging, "structured_logging": structured_logging,  # v0.63 name
    }


HEALTH_REQUEST = msgpack.packb({"placeholder": True})  # what the host sends on `.health`
SHUTDOWN_ACK = b"shutting down"  # what wasmbus-rpc providers answer a shutdown request with


def shutdown_request(host_id: str) -> bytes:
    """The JSON `{host_id}` a host sends on `.shutdown` (§4.11)."""
    return json.dumps({"host_id": host_id}).encode()


def shutdown_host_id(data: bytes) -> str | None:
    """The host a shutdown request names; None when it names none or does not parse (hosts
    before v0.59 sent no payload)."""
    try:
        host_id = json.loads(data).get("host_id") if data else None
    except (ValueError, AttributeError):
        return None
    return str(host_id) if host_id else None
