"""The `wasmcloud:httpserver` capability provider: one HTTP listener per linked actor.

Each request becomes `HttpServer.HandleRequest` on the actor and its HttpResponse becomes the
HTTP reply. The actor not answering in time (or not running anywhere) gives 503 with an empty
body, as the Rust provider does; an actor error gives 500 with the error text; a body over
`max_content_len` gives 413.

Server library: uvicorn (with httptools when installed), driven as a library: we bind each
listener's socket ourselves, so a taken port is a clean link error instead of uvicorn's
`sys.exit`, and connections queue in the kernel backlog from the moment `put_link` returns.
uvicorn's signal capture is switched off; the provider process owns SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, ClassVar

import uvicorn

from hostcore.errors import HostcoreError, ProviderOperationFailed, RpcTimeout
from hostcore.providers.httpserver.messages import HANDLE_REQUEST, HttpResponse, request_wire
from hostcore.providers.httpserver.settings import ServiceSettings, load_settings
from hostcore.providers.protocol import LinkDefinition, ProviderBase

__all__ = ["HttpServerProvider"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_BACKLOG = 2048
_STOP_TIMEOUT_S = 1.25  # graceful listener stop (fits the 1.5 s shutdown hook), then force
_GRACEFUL_SHUTDOWN_S = 1  # uvicorn: how long open connections may finish their request
# Framing headers are ours to write: the actor's could contradict the body we send.
_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class _Server(uvicorn.Server):
    """uvicorn.Server without signal capture: several run in one process, which handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _send_plain(send: Send, status: int, body: bytes = b"") -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _ActorApp:
    """The ASGI app of one actor's listener."""

    def __init__(self, provider: HttpServerProvider, actor_id: str, settings: ServiceSettings) -> None:
        self._provider, self._actor_id, self._settings = provider, actor_id, settings
        timeout_ms = settings.timeout_ms or provider.host_data.default_rpc_timeout_ms
        self._timeout_s = timeout_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        limit = self._settings.max_content_len
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            body += event.get("body", b"")
            if len(body) > limit:
                await _send_plain(send, 413, b"Payload Too Large")
                return
            if not event.get("more_body", False):
                break
        header: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            header.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        raw_path = scope.get("raw_path")
        request = request_wire(scope["method"].upper(), raw_path.decode("latin-1") if raw_path else scope["path"],
                               scope["query_string"].decode("latin-1"), header, bytes(body))
        try:
            reply = await self._provider.call_actor(self._actor_id, HANDLE_REQUEST, request, timeout_s=self._timeout_s)
            response = HttpResponse.from_wire(reply)
        except RpcTimeout:
            log.error("actor request timed out: returning 503", extra={"actor_id": self._actor_id})
            await _send_plain(send, 503)
            return
        except HostcoreError as e:
            log.warning("actor responded with error", extra={"actor_id": self._actor_id, "error": e.wire})
            await _send_plain(send, 500, e.wire.encode())
            return
        await self._reply(send, response)

    async def _reply(self, send: Send, response: HttpResponse) -> None:
        status = response.status_code
        if not 100 <= status <= 999:
            log.error("invalid response status code, changing to 500", extra={"status_code": status})
            status = 500
        headers: list[tuple[bytes, bytes]] = []
        for name, values in response.header.items():
            lname = name.lower()
            if lname in _DROPPED_RESPONSE_HEADERS:
                continue
            for value in values:
                try:
                    encoded_name, encoded_value = lname.encode("ascii"), value.encode("latin-1")
                except UnicodeEncodeError:
                    log.error("unencodable response header, sending without it", extra={"header_name": name})
                    continue
                if b"\r" in encoded_value or b"\n" in encoded_value or not encoded_name.isascii() or b":" in encoded_name:
                    log.error("invalid response header, sending without it", extra={"header_name": name})
                    continue
                headers.append((encoded_name, encoded_value))
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


class _Listener:
    """One actor's uvicorn server on a socket we bound. `stop()` is idempotent."""

    def __init__(self, server: _Server, task: asyncio.Task[None], address: str) -> None:
        self._server, self._task, self.address = server, task, address

    @classmethod
    def start(cls, app: _ActorApp, settings: ServiceSettings) -> _Listener:
        """Bind and listen now (connections queue in the backlog), serve in a task.
        Raises ProviderOperationFailed if the address cannot be bound."""
        host, port = settings.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
        # such sockets, and uvicorn writes head and body separately, so without it every
        # keep-alive response waited ~40 ms for Nagle + delayed ACK (measured: 22 → 648 rps).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise ProviderOperationFailed(
                f"problem reading settings: failed binding to address '{settings.address_text}' reason: {e}"
            ) from e
        config = uvicorn.Config(
            app, http="httptools", lifespan="off", log_config=None, access_log=False, server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S, backlog=_BACKLOG,
            ssl_certfile=settings.cert_file, ssl_keyfile=settings.priv_key_file,
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http listener {settings.address_text}")
        bound = sock.getsockname()
        return cls(server, task, f"{bound[0]}:{bound[1]}")

    async def stop(self) -> None:
        self._server.should_exit = True
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await asyncio.shield(self._task)
        except TimeoutError:
            log.warning("http listener did not stop in time, forcing it", extra={"address": self.address})
            self._server.force_exit = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        except Exception:
            log.exception("http listener failed", extra={"address": self.address})


class HttpServerProvider(ProviderBase):
    """Owns one `_Listener` per linked actor; deleting the link (or shutdown) stops it."""

    contract_id: ClassVar[str] = "wasmcloud:httpserver"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listeners: dict[str, _Listener] = {}
        # uvicorn logs every listener start/stop at info on "uvicorn.error"; ours say it better.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    async def put_link(self, ld: LinkDefinition) -> None:
        settings = load_settings(ld.values, self.host_data.config_json)
        old = self._listeners.pop(ld.actor_id, None)
        if old is not None:
            await old.stop()
        listener = _Listener.start(_ActorApp(self, ld.actor_id, settings), settings)
        self._listeners[ld.actor_id] = listener
        log.info("httpserver listening for actor", extra={"actor_id": ld.actor_id, "address": listener.address})

    async def delete_link(self, ld: LinkDefinition) -> None:
        listener = self._listeners.pop(ld.actor_id, None)
        if listener is not None:
            await listener.stop()
            log.info("httpserver listener stopped", extra={"actor_id": ld.actor_id, "address": listener.address})

    async def shutdown(self) -> None:
        listeners, self._listeners = list(self._listeners.values()), {}
        await asyncio.gather(*(listener.stop() for listener in listeners))
