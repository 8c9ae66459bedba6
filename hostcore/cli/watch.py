"""`ctl watch`: the lattice's events as a readable stream, one line each."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import sys
from typing import Any

from hostcore.cli.outcome import EventStream, event_type
from hostcore.cli.session import connect
from hostcore.config import ClientConfig

__all__ = ["format_event", "matches", "watch"]

# The entity an event is about, first match wins.
_SUBJECT_KEYS = ("public_key", "actor_ref", "provider_ref", "actor_id", "oci_url")
# Bulky or nested fields that a one-line view leaves out.
_SKIPPED = frozenset({"claims", "annotations", "labels", "actors", "providers", "values", "id"})


def matches(event: dict[str, Any], types: list[str], hosts: list[str]) -> bool:
    """`types`: event types or glob patterns (actor_*); `hosts`: host ids or their prefixes."""
    kind, source = event_type(event), str(event.get("source", ""))
    if types and not any(fnmatch.fnmatchcase(kind, t) for t in types):
        return False
    return not hosts or any(source.startswith(h) for h in hosts)


def format_event(event: dict[str, Any]) -> str:
    """`time  type  host=…  subject  key=value …` for one CloudEvent."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    kind = event_type(event)
    time = str(event.get("time", ""))[11:23]  # HH:MM:SS.mmm of the ISO timestamp
    subject = next((str(data[k]) for k in _SUBJECT_KEYS if data.get(k)), "-")
    fields = [f"{k}={v}" for k, v in data.items()
              if k not in _SKIPPED and k not in _SUBJECT_KEYS[:1] and v not in (None, "", {}, [])
              and str(v) != subject]
    if kind == "host_heartbeat":
        actors = data.get("actors") or {}
        count = sum(actors.values()) if isinstance(actors, dict) else len(actors)
        fields = [f"actors={count}", f"providers={len(data.get('providers') or [])}",
                  f"uptime={data.get('uptime_human', '?')}"]
    if kind.startswith("linkdef_"):
        subject = f"{data.get('actor_id', '?')} -> {data.get('provider_id', '?')}"
    return f"{time:<12} {kind:<22} host={event.get('source', '?')} {subject} {' '.join(fields)}".rstrip()


async def _state(state: str) -> None:
    print(f"-- NATS connection {state}", file=sys.stderr, flush=True)


async def watch(cfg: ClientConfig, args: argparse.Namespace) -> int:
    """Print matching events until interrupted (or `--count` of them)."""
    nc = await connect(cfg, reconnect=True, on_state=_state)
    shown = 0
    try:
        async with EventStream(nc, cfg.lattice_prefix) as events:
            print(f"-- watching lattice {cfg.lattice_prefix} at {cfg.nats_url} (Ctrl-C stops)", file=sys.stderr,
                  flush=True)
            while not args.count or shown < args.count:
                event = await events.next(1.0)
                if not event or not matches(event, args.types, args.hosts):
                    continue
                print(json.dumps(event) if args.output == "json" else format_event(event), flush=True)
                shown += 1
    except asyncio.CancelledError:
        pass
    finally:
        await nc.close()
    return 0
