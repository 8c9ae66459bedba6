"""Messages of the ProviderSupervisor, the NativeWorker (PAR preparation) and each ProviderModule.

Frozen dataclasses, pickled between processes by Thespian."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostcore.config import HostConfig
from hostcore.native.par import ProviderClaims
from hostcore.tree.messages.host import InitSupervisor

__all__ = [
    "InitProviderSupervisor",
    "PrepareProvider",
    "ProviderFailed",
    "ProviderInfo",
    "ProviderInventory",
    "ProviderPrepared",
    "ProviderStarted",
    "StartProvider",
    "StartProviderAck",
    "StartProviderProcess",
    "StopProvider",
]

# --- providers (protocol.md §2.3 lp/sp, §11.7) ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InitProviderSupervisor(InitSupervisor):
    """HostSupervisor → ProviderSupervisor."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartProvider:
    """Control `lp`; replied at once with StartProviderAck (duplicates refused there)."""

    provider_ref: str
    link_name: str
    configuration: str
    annotations: dict[str, str]
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartProviderAck:
    request_id: str
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StopProvider:
    """Control `sp`: shutdown request, grace, kill; replied with Done once the process is gone."""

    provider_id: str
    link_name: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareProvider:
    """To NativeWorker: fetch and verify the PAR at `provider_ref`, extract this host's binary."""

    provider_ref: str
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderPrepared:
    request_id: str
    provider_ref: str
    claims: ProviderClaims
    binary: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class StartProviderProcess:
    """ProviderSupervisor → ProviderModule: spawn the executable with this host data."""

    config: HostConfig
    claims: ProviderClaims
    binary: Path
    link_name: str
    instance_id: str
    image_ref: str
    annotations: dict[str, str]
    config_json: str
    links: tuple[Any, ...]  # LinkDefinition, known at spawn
    events: Any = None  # LatticeEvents: health events go out on the control connection (protocol.md §1.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderStarted:
    instance_id: str
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderFailed:
    instance_id: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderInfo:
    public_key: str
    link_name: str
    contract_id: str
    instance_id: str
    image_ref: str
    name: str
    revision: int
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderInventory:
    request_id: str
    providers: tuple[ProviderInfo, ...]
