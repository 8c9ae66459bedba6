"""The local host's context file: where a running `hostcore up` can be reached, like a wash
context. The host that runs the embedded nats-server writes `{data_dir}/context.json` once its
NATS answers and removes it when it exits; the CLI reads it to find the lattice with no flags.

A context whose process is gone is stale: readers ignore it and remove it. The file holds the
host's cluster seed (so `call` can sign as the host's cluster), hence mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hostcore.procutil import pid_alive

__all__ = ["LocalContext", "announce_host", "context_path", "live_context", "read_context", "remove_context",
           "second_host_refusal", "write_context"]

log = logging.getLogger(__name__)

_FILE = "context.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalContext:
    """How to reach the local host's lattice."""

    nats_url: str
    lattice_prefix: str
    ctl_topic_prefix: str
    host_id: str
    pid: int  # the `hostcore up` launcher
    cluster_seed: str = field(default="", repr=False)
    dashboard_url: str = ""


def context_path(data_dir: Path) -> Path:
    return data_dir / _FILE


def write_context(data_dir: Path, ctx: LocalContext) -> None:
    """Write the context atomically, readable by its owner only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(ctx), out, indent=2)
    os.replace(tmp, context_path(data_dir))


def read_context(data_dir: Path) -> LocalContext | None:
    """The context as written, or None when there is none or it is unreadable."""
    try:
        raw = json.loads(context_path(data_dir).read_text(encoding="utf-8"))
        return LocalContext(**{k: raw[k] for k in LocalContext.__dataclass_fields__ if k in raw})
    except (OSError, ValueError, TypeError):
        return None


def live_context(data_dir: Path) -> LocalContext | None:
    """The context of a host that still runs and whose NATS answers; None otherwise. A context
    whose launcher is gone is removed (a host killed with SIGKILL leaves one behind)."""
    ctx = read_context(data_dir)
    if ctx is None:
        return None
    if not pid_alive(ctx.pid):
        remove_context(data_dir, ctx.pid)
        return None
    return ctx if _accepts(ctx.nats_url) else None


def remove_context(data_dir: Path, pid: int) -> None:
    """Remove the context if process `pid` wrote it (another host may have written its own since)."""
    ctx = read_context(data_dir)
    if ctx is not None and ctx.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            context_path(data_dir).unlink()


def _accepts(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=0.5):
            return True
    except OSError:
        return False


def second_host_refusal(data_dir: Path) -> str:
    """Why `hostcore up` with an embedded NATS should not start: a live local host already has
    one (two embedded servers are two lattices). "" when nothing is in the way."""
    ctx = live_context(data_dir)
    if ctx is None:
        return ""
    return (f"a local host already runs (pid {ctx.pid}, NATS {ctx.nats_url}, lattice {ctx.lattice_prefix}); "
            f"join its lattice with `hostcore up --nats-url {ctx.nats_url}`, or pass --allow-second-host "
            f"(HOSTCORE_ALLOW_SECOND_HOST=true) to start a separate one")


def announce_host(data_dir: Path, ctx: LocalContext) -> bool:
    """Write `ctx` unless another live host's context is there (the first local host stays the
    one the CLI finds). Returns whether it was written."""
    current = live_context(data_dir)
    if current is not None and current.pid != ctx.pid:
        return False
    try:
        write_context(data_dir, ctx)
    except OSError as err:  # the host runs on; only the no-flag CLI cannot find it
        log.warning("cannot write the context file", extra={"path": str(context_path(data_dir)), "error": str(err)})
        return False
    return True
