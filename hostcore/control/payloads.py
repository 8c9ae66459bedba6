"""Invocation payloads as people type and read them: JSON in, msgpack on the wire, and a
readable form of a msgpack reply. Shared by `hostcore call` and the dashboard's call form."""

from __future__ import annotations

import json
from typing import Any

import msgpack

__all__ = ["json_to_msgpack", "msgpack_to_json"]


def json_to_msgpack(text: str) -> bytes:
    """The JSON payload as msgpack, as `wash call` sends it (strings stay strings)."""
    return bytes(msgpack.packb(json.loads(text), use_bin_type=True))


def msgpack_to_json(data: bytes) -> Any:
    """Best-effort readable form of a msgpack reply: bytes become text when they are UTF-8."""
    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            try:
                return v.decode()
            except UnicodeDecodeError:
                return list(v)
        if isinstance(v, dict):
            return {str(plain(k)): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    try:
        return plain(msgpack.unpackb(data, raw=False, strict_map_key=False))
    except Exception:  # noqa: BLE001 -- not msgpack: show the bytes as they are
        return plain(data)
