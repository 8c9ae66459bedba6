"""TokenMiddleware: the dashboard's optional access token (`--dashboard-token`), plus a same-origin
check on state-changing requests.

With a token set, every route except `/api/livez` needs it, as `Authorization: Bearer …`,
`?token=…` or the cookie set after the first `?token=` visit (a page visit with `?token=` is
redirected to the same URL without it, so the token does not linger in history or referrers).
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, unquote, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE", "TokenMiddleware"]

COOKIE = "hostcore_dashboard_token"
_OPEN_PATHS = frozenset({"/api/livez"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenMiddleware:
    """ASGI middleware; `token` empty means no token is needed (the origin check still runs)."""

    def __init__(self, app: ASGIApp, token: str = "") -> None:
        self.app = app
        self.token = token

    def _matches(self, candidate: str) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if scope["method"] not in _SAFE_METHODS and not _same_origin(headers):
            await _respond(send, 403, b'{"ok":false,"error":"cross-origin request refused"}', "application/json")
            return
        if not self.token or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == "token"), "")
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        cookie = SimpleCookie(headers.get("cookie", ""))
        from_cookie = unquote(cookie[COOKIE].value) if COOKIE in cookie else ""
        if self._matches(bearer) or self._matches(from_cookie):
            await self.app(scope, receive, send)
        elif self._matches(from_query):
            if scope["method"] == "GET" and not scope["path"].startswith("/api/"):
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                location = scope["path"] + (f"?{rest}" if rest else "")
                await _respond(send, 303, b"", "text/plain", [(b"location", location.encode()),
                                                               (b"set-cookie", self._cookie(scope))])
            else:
                await self.app(scope, receive, send)
        elif scope["path"].startswith("/api/"):
            body = json.dumps({"ok": False, "error": "access token required"}).encode()
            await _respond(send, 401, body, "application/json", [(b"www-authenticate", b"Bearer")])
        else:
            await _respond(send, 401, _LOGIN_PAGE, "text/html; charset=utf-8")

    def _cookie(self, scope: Scope) -> bytes:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        return f"{COOKIE}={quote(self.token, safe='')}; Path=/; HttpOnly; SameSite=Strict{secure}".encode()


def _same_origin(headers: dict[str, str]) -> bool:
    """False when the browser says the request comes from another origin (CSRF, DNS rebinding);
    requests without an Origin header (curl, tests) pass."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1] == headers.get("host", "")


_LOGIN_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>hostcore dashboard</title></head>
<body style="font-family:sans-serif;margin:3rem"><h1>Access token required</h1>
<form method="get" action="/"><label>Token <input name="token" type="password" autofocus></label>
<button type="submit">Open dashboard</button></form></body></html>
"""
