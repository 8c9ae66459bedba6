"""Reading the dashboard's action forms: JSON bodies and form fields into checked values, with
messages the modal can show as they are."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from hostcore.errors import HostcoreError

__all__ = ["ActionFailed", "Body", "field_count", "field_pairs", "field_text", "json_body"]

Body = dict[str, Any]


class ActionFailed(HostcoreError):
    """An action cannot be done; `wire` is shown to the user, `status` is the HTTP status."""

    def __init__(self, wire: str, status: int = 400) -> None:
        super().__init__(wire)
        self.status = status


async def json_body(request: Request) -> Body:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ActionFailed("The request body is not JSON") from None
    if not isinstance(body, dict):
        raise ActionFailed("The request body must be a JSON object")
    return body


def field_text(body: Body, key: str, *, required: bool = True) -> str:
    value = body.get(key)
    stripped = "" if value is None else str(value).strip()
    if required and not stripped:
        raise ActionFailed(f"{key.replace('_', ' ').capitalize()} is required")
    return stripped


def field_count(body: Body, key: str, minimum: int) -> int:
    try:
        value = int(str(body.get(key, "")).strip())
    except ValueError:
        raise ActionFailed(f"{key.capitalize()} must be a whole number") from None
    if value < minimum:
        raise ActionFailed(f"{key.capitalize()} must be at least {minimum}")
    return value


def field_pairs(value: Any, what: str) -> dict[str, str]:
    """`KEY=VALUE` pairs separated by newlines or commas (or a JSON object) as a dict."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    found: dict[str, str] = {}
    for item in str(value or "").replace("\n", ",").split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ActionFailed(f"{what}: expected KEY=VALUE, got {item.strip()!r}")
        found[key.strip()] = val.strip()
    return found
