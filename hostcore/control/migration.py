"""Migration of an OTP ≤ 0.59 lattice cache into the KV bucket (protocol.md Corrections, §12.1).

OTP up to v0.59 kept lattice metadata in the stream `LATTICECACHE_{lattice}` (one message per
subject): `lc.{lattice}.claims.{public key}` (the claims record), `lc.{lattice}.linkdefs.{uuid}`
(a link, re-published with `"deleted": true` when removed) and `lc.{lattice}.refmap.{b64(ref)}`
(`{oci_url, public_key}`). v0.60+ hosts, like hostcore, use the bucket `LATTICEDATA_{lattice}`;
on start they copy the stream into the bucket and delete it (v0.63.2 `jetstream/client.ex`), so
an upgraded lattice keeps its links and claims.

Differences from v0.63.2, on purpose: links are folded by (actor, contract, link name) in stream
order, so a later put or deletion of the same link wins over an older record (v0.59 gave every
put a fresh UUID and never removed the older subject), and they are stored under the v0.60
deterministic id, so `linkdefs.del` and wadm find them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from hostcore.errors import ControlRequestError
from hostcore.wire.linkdefs import LinkDefinition

log = logging.getLogger(__name__)

__all__ = ["LegacyCache", "legacy_stream_name", "migrate_legacy_cache", "refmap_key"]

# A stream that stops delivering for this long is taken as read to the end (OTP waits 200 ms).
_IDLE_S = 2.0


def legacy_stream_name(lattice_prefix: str) -> str:
    return f"LATTICECACHE_{lattice_prefix}"


def refmap_key(ref: str) -> str:
    """The bucket key of a refmap: `REFMAP_` + base64url without padding (OTP's
    `sanitize_for_topic`, the same in the legacy subjects)."""
    return "REFMAP_" + base64.urlsafe_b64encode(ref.encode()).decode().rstrip("=")


@dataclass(slots=True)
class LegacyCache:
    """What a legacy stream holds once folded: the bucket entries to write. Pure (unit-tested)."""

    lattice_prefix: str
    claims: dict[str, bytes] = field(default_factory=dict)
    links: dict[tuple[str, str, str], LinkDefinition | None] = field(default_factory=dict)  # None: deleted
    refmaps: dict[str, bytes] = field(default_factory=dict)
    skipped: int = 0

    def add(self, subject: str, data: bytes) -> None:
        """Fold one stream message (call in stream order)."""
        head = f"lc.{self.lattice_prefix}."
        kind, _, name = subject.removeprefix(head).partition(".") if subject.startswith(head) else ("", "", "")
        try:
            record = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or not name:
            self._skip(subject, "not a JSON object")
            return
        if kind == "claims":
            self.claims[f"CLAIMS_{record.get('sub') or name}"] = json.dumps(record, separators=(",", ":")).encode()
        elif kind == "linkdefs":
            self._add_link(subject, record)
        elif kind == "refmap":
            if isinstance(record.get("oci_url"), str) and isinstance(record.get("public_key"), str):
                self.refmaps[refmap_key(record["oci_url"])] = json.dumps(
                    {"oci_url": record["oci_url"], "public_key": record["public_key"]}, separators=(",", ":")).encode()
            else:
                self._skip(subject, "refmap without oci_url / public_key")
        else:
            self._skip(subject, "unknown record kind")

    def _add_link(self, subject: str, record: dict[str, Any]) -> None:
        try:
            link = LinkDefinition.from_map(record)
        except ControlRequestError:
            self._skip(subject, "malformed link definition")
            return
        triple = (link.actor_id, link.contract_id, link.link_name)
        self.links[triple] = None if record.get("deleted") is True else link

    def _skip(self, subject: str, why: str) -> None:
        self.skipped += 1
        log.warning("legacy lattice cache record not migrated", extra={"subject": subject, "reason": why})

    def entries(self) -> dict[str, bytes]:
        """Bucket key → value for everything that survives (deleted links are left out)."""
        out = dict(self.claims)
        out.update({f"LINKDEF_{ld.id}": ld.to_json() for ld in self.links.values() if ld is not None})
        out.update(self.refmaps)
        return out


async def read_legacy_stream(js: JetStreamContext, lattice_prefix: str) -> LegacyCache | None:
    """The folded contents of `LATTICECACHE_{lattice}`, or None when there is no such stream."""
    name = legacy_stream_name(lattice_prefix)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return None
    cache = LegacyCache(lattice_prefix)
    if not info.state.messages:
        return cache
    sub = await js.subscribe(f"lc.{lattice_prefix}.>", stream=name, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=_IDLE_S)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                break
            cache.add(msg.subject, bytes(msg.data))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return cache


async def migrate_legacy_cache(js: JetStreamContext, kv: KeyValue, lattice_prefix: str) -> LegacyCache | None:
    """Copy a legacy stream into the bucket, then delete the stream. Returns what was migrated,
    or None when there was nothing to migrate. Failures are logged and leave the stream in place
    (the next start tries again); they never stop the host."""
    try:
        cache = await read_legacy_stream(js, lattice_prefix)
        if cache is None:
            return None
        entries = cache.entries()
        for key, value in entries.items():
            await kv.put(key, value)
        await js.delete_stream(legacy_stream_name(lattice_prefix))
    except (nats.errors.Error, asyncio.TimeoutError) as err:
        log.error("legacy lattice cache migration failed; it is retried on the next start",
                  extra={"stream": legacy_stream_name(lattice_prefix), "error": str(err) or type(err).__name__})
        return None
    live_links = sum(ld is not None for ld in cache.links.values())
    log.warning("migrated the legacy lattice cache stream into the key-value bucket and removed the stream",
                extra={"stream": legacy_stream_name(lattice_prefix), "claims": len(cache.claims),
                       "links": live_links, "deleted_links": len(cache.links) - live_links,
                       "refmaps": len(cache.refmaps), "skipped": cache.skipped})
    return cache
