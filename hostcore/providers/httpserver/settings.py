"""httpserver link settings, read as wasmCloud's httpserver provider reads them.

Link values (keys case-insensitive), applied in this order, later ones overriding:
`config_file` (a .json or .toml file), `config_b64` (base64 JSON), `config_json` (JSON),
`address` (`ip:port`), `port` (binds 127.0.0.1:port). The JSON/TOML object may set `address`,
`timeout_ms`, `max_content_len` and `tls: {cert_file, priv_key_file}`. Unlike the Rust provider,
the provider-wide `config_json` from the host data is applied first, as defaults for every link.
Defaults: 127.0.0.1:8000, the host's RPC timeout, 10 MiB bodies, no TLS.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hostcore.errors import ProviderOperationFailed

__all__ = ["DEFAULT_ADDRESS", "ServiceSettings", "load_settings", "parse_address"]

DEFAULT_ADDRESS = ("127.0.0.1", 8000)
DEFAULT_MAX_CONTENT_LEN = 10 * 1024 * 1024
_CONTENT_LEN_LIMIT = 500 * 1024 * 1024
_SIZE_SUFFIXES = {"k": 1024, "m": 1024**2, "g": 1024**3}


def _invalid(detail: str) -> ProviderOperationFailed:
    return ProviderOperationFailed(f"invalid parameter: {detail}")


def _settings_error(detail: str) -> ProviderOperationFailed:
    return ProviderOperationFailed(f"problem reading settings: {detail}")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Where and how one actor's listener serves."""

    address: tuple[str, int] = DEFAULT_ADDRESS
    timeout_ms: int | None = None  # None: the host's default_rpc_timeout_ms
    max_content_len: int = DEFAULT_MAX_CONTENT_LEN
    cert_file: str | None = None
    priv_key_file: str | None = None

    @property
    def address_text(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """`ip:port` or `[ipv6]:port` (a Rust SocketAddr) → (ip, port). Raises ValueError."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ValueError(text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ipaddress.ip_address(host)
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return host, port


def _parse_size(value: Any) -> int:
    text = str(value).strip().lower()
    factor = _SIZE_SUFFIXES.get(text[-1:], 1)
    digits = text[:-1] if factor > 1 else text
    try:
        size = int(digits) * factor
    except ValueError:
        raise _invalid(f"max_content_len: {value}") from None
    if not 0 < size <= _CONTENT_LEN_LIMIT:
        raise _invalid(f"max_content_len out of range: {value}")
    return size


def _merge(settings: ServiceSettings, doc: Any) -> ServiceSettings:
    if not isinstance(doc, dict):
        raise _settings_error("settings must be a JSON/TOML object")
    changes: dict[str, Any] = {}
    if doc.get("address") is not None:
        try:
            changes["address"] = parse_address(str(doc["address"]))
        except ValueError:
            raise _invalid(f"invalid address: {doc['address']}") from None
    if doc.get("timeout_ms") is not None:
        if type(doc["timeout_ms"]) is not int or doc["timeout_ms"] <= 0:
            raise _invalid(f"timeout_ms: {doc['timeout_ms']}")
        changes["timeout_ms"] = doc["timeout_ms"]
    if doc.get("max_content_len") is not None:
        changes["max_content_len"] = _parse_size(doc["max_content_len"])
    tls = doc.get("tls") or {}
    if not isinstance(tls, dict):
        raise _settings_error("tls must be an object")
    for key in ("cert_file", "priv_key_file"):
        if tls.get(key) is not None:
            changes[key] = str(tls[key])
    return replace(settings, **changes)


def _from_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise _settings_error(f"invalid json: {e}") from e


def _from_file(name: str) -> Any:
    path = Path(name)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _settings_error(f"reading file {name}: {e}") from e
    if path.suffix == ".json":
        return _from_json(data.decode("utf-8", "replace"))
    if path.suffix == ".toml":
        try:
            return tomllib.loads(data.decode("utf-8", "replace"))
        except tomllib.TOMLDecodeError as e:
            raise _settings_error(f"invalid toml: {e}") from e
    raise _settings_error(f"unrecognized file type {name}")


def load_settings(values: Mapping[str, str], defaults_json: str | None = None) -> ServiceSettings:
    """The settings of one link. Raises ProviderOperationFailed naming the bad key or value."""
    lowered: dict[str, str] = {}
    for key, value in values.items():
        if key.lower() in lowered:
            raise _invalid("Key collision: httpserver settings (from linkdef.values) has one or more keys "
                           "that are not unique based on case-insensitivity")
        lowered[key.lower()] = value
    settings = ServiceSettings()
    if defaults_json:
        settings = _merge(settings, _from_json(defaults_json))
    if "config_file" in lowered:
        settings = _merge(settings, _from_file(lowered["config_file"]))
    if "config_b64" in lowered:
        encoded = lowered["config_b64"].strip()
        try:
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as e:
            raise _settings_error(f"invalid base64 encoding: {e}") from e
        settings = _merge(settings, _from_json(decoded.decode("utf-8", "replace")))
    if "config_json" in lowered:
        settings = _merge(settings, _from_json(lowered["config_json"]))
    if "address" in lowered:
        try:
            settings = replace(settings, address=parse_address(lowered["address"]))
        except ValueError:
            raise _invalid(f"invalid address: {lowered['address']}") from None
    if "port" in lowered:
        try:
            port = int(lowered["port"])
            if not 0 <= port <= 65535:
                raise ValueError(port)
        except ValueError:
            raise _invalid(f"Invalid port: {lowered['port']}") from None
        settings = replace(settings, address=("127.0.0.1", port))
    if (settings.cert_file is None) != (settings.priv_key_file is None):
        raise _settings_error("for tls, both 'cert_file' and 'priv_key_file' must be set")
    return settings
