"""The `wasmcloud:httpserver` payloads (interface httpserver.smithy): `HttpServer.HandleRequest`
takes an HttpRequest and returns an HttpResponse, both msgpack maps with camelCase keys as the
Rust interface crate serialises them. Bodies are emitted as msgpack bin; bin or str is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

import msgpack

from hostcore.errors import ProviderDeserFailed

__all__ = ["HANDLE_REQUEST", "HttpRequest", "HttpResponse", "request_wire"]

HANDLE_REQUEST = "HttpServer.HandleRequest"


def _headers(value: Any) -> dict[str, list[str]]:
    """A HeaderMap: name → list of values; a bare string value is taken as a one-item list."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProviderDeserFailed("header must be a map")
    out: dict[str, list[str]] = {}
    for name, values in value.items():
        if isinstance(values, str):
            values = [values]
        if not isinstance(name, str) or not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ProviderDeserFailed("header must map strings to lists of strings")
        out[name] = list(values)
    return out


def _body(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list) and all(type(b) is int and 0 <= b < 256 for b in value):
        return bytes(value)  # a Vec<u8> serialised without serde_bytes
    raise ProviderDeserFailed("body must be bytes")


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")
    except (ValueError, msgpack.UnpackException, TypeError) as e:
        raise ProviderDeserFailed(f"{what}: {e}") from e
    if not isinstance(value, dict):
        raise ProviderDeserFailed(f"{what} must be a map")
    return value


def request_wire(method: str, path: str, query_string: str, header: dict[str, list[str]], body: bytes) -> bytes:
    """`HttpRequest(...).to_wire()` without the object: the provider's hot path builds one per request."""
    return msgpack.packb({"method": method, "path": path, "queryString": query_string,  # type: ignore[no-any-return]
                          "header": header, "body": body}, use_bin_type=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    method: str
    path: str
    query_string: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def to_wire(self) -> bytes:
        return request_wire(self.method, self.path, self.query_string, self.header, self.body)

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        fields = _unpack(data, "HttpRequest")
        method, path, query = fields.get("method"), fields.get("path"), fields.get("queryString", "")
        if not isinstance(method, str) or not isinstance(path, str) or not isinstance(query, str):
            raise ProviderDeserFailed("HttpRequest needs method, path and queryString strings")
        return cls(method=method, path=path, query_string=query, header=_headers(fields.get("header")),
                   body=_body(fields.get("body")))


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    status_code: int = 200
    header: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def to_wire(self) -> bytes:
        return msgpack.packb({"statusCode": self.status_code, "header": self.header,  # type: ignore[no-any-return]
                              "body": self.body}, use_bin_type=True)

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode an actor's reply. Raises ProviderDeserFailed if it is not an HttpResponse."""
        fields = _unpack(data, "HttpResponse")
        status = fields.get("statusCode")
        if type(status) is not int:
            raise ProviderDeserFailed("HttpResponse.statusCode must be an integer")
        return cls(status_code=status, header=_headers(fields.get("header")), body=_body(fields.get("body")))
