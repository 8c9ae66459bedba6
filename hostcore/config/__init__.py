"""Configuration, read once: `HostConfig` (`load_config`), `WorkerConfig` (`load_worker_config`)
and `ClientConfig` (`load_client_config`).

Only this package reads the environment. Everything else receives the config (or the few fields
it needs) from its owner, and Thespian actors get it in their start message.
"""

from hostcore.config.client import ClientConfig, add_ctl_flags, load_client_config
from hostcore.config.host import HostConfig, build_parser, load_config
from hostcore.config.values import (
    SECRET_ENV,
    ConventionTiming,
    Placement,
    ThespianNetwork,
    friendly_name,
    is_loopback,
    platform_labels,
)
from hostcore.config.worker import WorkerConfig, build_worker_parser, load_worker_config

__all__ = [
    "SECRET_ENV",
    "ClientConfig",
    "ConventionTiming",
    "HostConfig",
    "Placement",
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
