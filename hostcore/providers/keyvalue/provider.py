"""The `wasmcloud:keyvalue` capability provider, backed by Redis (as wasmCloud's kvredis).

Each linked actor gets its own Redis client (connection pool) for the link value `URL`, else
the provider-wide `{"url": …}` of the host data's config_json, else redis://127.0.0.1:6379/0.
Operations and their msgpack shapes are those of keyvalue.smithy (interface 0.2.x, what the
fixture actors were built with); the Redis command behind each is kvredis's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import msgpack
import redis.asyncio
import redis.exceptions

from hostcore.errors import MethodNotHandled, ProviderDeserFailed, ProviderOperationFailed, UnlinkedActor
from hostcore.native.invocation import Invocation
from hostcore.providers.protocol import LinkDefinition, ProviderBase

__all__ = ["DEFAULT_URL", "KeyValueProvider", "OPERATIONS"]

log = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_URL_KEY = "URL"  # kvredis: case-sensitive
_I32 = (-(2**31), 2**31 - 1)

Redis = redis.asyncio.Redis
Handler = Callable[[Redis, Any], Awaitable[Any]]


def _redact(url: str) -> str:
    """`url` without its password, for logs and error texts."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


# -- argument shapes ------------------------------------------------------------------------------


def _string(arg: Any) -> str:
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    if not isinstance(arg, str):
        raise ProviderDeserFailed("expected a string")
    return arg


def _string_list(arg: Any) -> list[str]:
    if not isinstance(arg, list):
        raise ProviderDeserFailed("expected a list of strings")
    return [_string(item) for item in arg]


def _field(arg: Any, name: str, kind: type) -> Any:
    if not isinstance(arg, dict):
        raise ProviderDeserFailed("expected a map")
    value = arg.get(name)
    if kind is str:
        if value is None:
            raise ProviderDeserFailed(f"missing field `{name}`")
        return _string(value)
    if type(value) is not int:
        raise ProviderDeserFailed(f"field `{name}` must be an integer")
    return value


# -- operations (keyvalue.smithy; Redis commands as kvredis) -----------------------------------------


async def _get(r: Redis, arg: Any) -> dict[str, Any]:
    value = await r.get(_string(arg))
    return {"value": _text(value), "exists": value is not None}


async def _set(r: Redis, arg: Any) -> None:
    expires = _field(arg, "expires", int)
    await r.set(_field(arg, "key", str), _field(arg, "value", str), ex=expires if expires > 0 else None)


async def _del(r: Redis, arg: Any) -> bool:
    return int(await r.delete(_string(arg))) > 0


async def _increment(r: Redis, arg: Any) -> int:
    value = int(await r.incrby(_field(arg, "key", str), _field(arg, "value", int)))
    if not _I32[0] <= value <= _I32[1]:
        raise ProviderOperationFailed(f"redis error: value {value} does not fit in an i32")
    return value


async def _contains(r: Redis, arg: Any) -> bool:
    return int(await r.exists(_string(arg))) > 0


async def _list_add(r: Redis, arg: Any) -> int:
    return int(await r.rpush(_field(arg, "listName", str), _field(arg, "value", str)))


async def _list_del(r: Redis, arg: Any) -> bool:
    return int(await r.lrem(_field(arg, "listName", str), 1, _field(arg, "value", str))) > 0


async def _list_range(r: Redis, arg: Any) -> list[str]:
    values = await r.lrange(_field(arg, "listName", str), _field(arg, "start", int), _field(arg, "stop", int))
    return [_text(v) for v in values]


async def _set_add(r: Redis, arg: Any) -> int:
    return int(await r.sadd(_field(arg, "setName", str), _field(arg, "value", str)))


async def _set_del(r: Redis, arg: Any) -> int:
    return int(await r.srem(_field(arg, "setName", str), _field(arg, "value", str)))


async def _set_union(r: Redis, arg: Any) -> list[str]:
    names = _string_list(arg)
    return sorted(_text(v) for v in await r.sunion(names)) if names else []


async def _set_intersection(r: Redis, arg: Any) -> list[str]:
    names = _string_list(arg)
    return sorted(_text(v) for v in await r.sinter(names)) if names else []


async def _set_query(r: Redis, arg: Any) -> list[str]:
    return sorted(_text(v) for v in await r.smembers(_string(arg)))


async def _keys(r: Redis, arg: Any) -> list[str]:
    pattern = "*"
    if isinstance(arg, dict) and arg.get("globExpression"):
        pattern = _string(arg["globExpression"])
    return sorted([_text(k) async for k in r.scan_iter(match=pattern)])


OPERATIONS: dict[str, Handler] = {
    "KeyValue.Get": _get,
    "KeyValue.Set": _set,
    "KeyValue.Del": _del,
    "KeyValue.Increment": _increment,
    "KeyValue.Contains": _contains,
    "KeyValue.ListAdd": _list_add,
    "KeyValue.ListClear": _del,
    "KeyValue.ListDel": _list_del,
    "KeyValue.ListRange": _list_range,
    "KeyValue.SetAdd": _set_add,
    "KeyValue.SetDel": _set_del,
    "KeyValue.SetUnion": _set_union,
    "KeyValue.SetIntersection": _set_intersection,
    "KeyValue.SetQuery": _set_query,
    "KeyValue.SetClear": _del,
    "KeyValue.Keys": _keys,
}


class KeyValueProvider(ProviderBase):
    """Owns one Redis client per linked actor, opened by `put_link` and closed by `delete_link`."""

    contract_id: ClassVar[str] = "wasmcloud:keyvalue"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[str, Redis] = {}
        self._default_url = DEFAULT_URL
        if self.host_data.config_json:
            try:
                config = json.loads(self.host_data.config_json)
            except ValueError:
                config = None
            url = next((v for k, v in config.items() if k.lower() == "url"), None) if isinstance(config, dict) else None
            if isinstance(url, str) and url:
                self._default_url = url
            else:
                log.warning("config_json has no usable `url`; using the default")

    async def put_link(self, ld: LinkDefinition) -> None:
        url = ld.values.get(_URL_KEY) or self._default_url
        try:
            client = redis.asyncio.Redis.from_url(url)
        except ValueError as e:
            raise ProviderOperationFailed(f"redis connection to {_redact(url)}: {e}") from e
        try:
            await client.ping()
        except redis.exceptions.RedisError as e:
            await client.aclose()
            raise ProviderOperationFailed(f"redis connection to {_redact(url)}: {e}") from e
        old = self._clients.pop(ld.actor_id, None)
        self._clients[ld.actor_id] = client
        if old is not None:
            await old.aclose()
        log.info("redis client ready for actor", extra={"actor_id": ld.actor_id, "url": _redact(url)})

    async def delete_link(self, ld: LinkDefinition) -> None:
        client = self._clients.pop(ld.actor_id, None)
        if client is not None:
            await client.aclose()

    async def shutdown(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def handle(self, inv: Invocation) -> bytes:
        handler = OPERATIONS.get(inv.operation)
        if handler is None:
            raise MethodNotHandled(inv.operation)
        client = self._clients.get(inv.origin.public_key)
        if client is None:
            raise UnlinkedActor(inv.origin.public_key)
        try:
            arg = msgpack.unpackb(inv.msg, raw=False) if inv.msg else None
        except (ValueError, msgpack.UnpackException, TypeError) as e:
            raise ProviderDeserFailed(str(e)) from e
        try:
            result = await handler(client, arg)
        except redis.exceptions.RedisError as e:
            raise ProviderOperationFailed(f"redis error: {e}") from e
        if result is None:  # operations without output reply with an empty payload
            return b""
        return msgpack.packb(result, use_bin_type=True)  # type: ignore[no-any-return]
