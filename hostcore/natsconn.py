"""How to reach a NATS server: one frozen `NatsEndpoint` per connection role.

OTP's host opens its connections to possibly different servers with their own credentials
(protocol.md §1.1, §10.2): `rpc` (actor RPC, host calls, provider health checks), `ctl` (control
interface, events, lattice cache, dashboard, CLI) and `prov_rpc` (handed to providers in their
host data, §11.7). `hostcore.config` builds the endpoints; every `nats.connect` call site takes
`endpoint.connect_kwargs()` so authentication and TLS are decided here only.

Secrets (nkey seeds, JWTs, URL passwords and tokens) are kept out of `repr()` and out of every
URL this module hands back for display.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats

from hostcore.errors import ConfigError, NkeyError
from hostcore.native.nkeys import KeyPair

__all__ = ["ROLES", "NatsEndpoint", "connection_failure", "flush_in_order", "ignore_errors", "read_creds",
           "wait_for_endpoints"]

log = logging.getLogger(__name__)

ROLES = ("rpc", "ctl", "prov_rpc")
_CREDS_BLOCK = re.compile(r"-----BEGIN [^\n]*?-----\s*\n\s*(\S+)\s*\n\s*-+END [^\n]*?-----")
_MAX_BACKOFF_S = 10.0
ErrorCallback = Callable[[Exception], Awaitable[None]]


async def ignore_errors(err: Exception) -> None:
    """An error callback for callers that report the failure themselves (the CLI)."""


def read_creds(path: Path) -> tuple[str, str]:
    """The (user JWT, user seed) of a standard NATS `.creds` file. Raises ConfigError."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"HOSTCORE_NATS_CREDS: cannot read {path} ({err.strerror})") from None
    blocks = _CREDS_BLOCK.findall(text)
    if len(blocks) < 2 or not blocks[1].startswith("SU"):
        raise ConfigError(f"HOSTCORE_NATS_CREDS: {path} is not a NATS credentials file (JWT and user seed)")
    return blocks[0], blocks[1]


def _split_userinfo(url: str) -> tuple[str, str, str]:
    """(url without userinfo, user, password); a lone user part is a token (nats://TOKEN@host)."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
    if "@" not in parsed.netloc:
        return url, "", ""
    userinfo, _, hostport = parsed.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit((parsed.scheme, hostport, parsed.path, parsed.query, parsed.fragment))
    return bare, urllib.parse.unquote(user), urllib.parse.unquote(password)


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsEndpoint:
    """One NATS connection's target, credentials and TLS settings.

    `servers` never carry userinfo (it is split into `user` / `password`, or `token` when only a
    user part is given), so they are safe to log. Credentials, most specific first: JWT + seed
    (decentralised auth), seed alone (nkey user), a `.creds` file, user/password or token.
    """

    role: str
    servers: tuple[str, ...]
    seed: str = field(default="", repr=False)
    jwt: str = field(default="", repr=False)
    creds_file: Path | None = None
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    tls: bool = False
    ca_file: Path | None = None

    @classmethod
    def from_url(cls, role: str, urls: str | Sequence[str], **settings: Any) -> NatsEndpoint:
        """An endpoint for `urls` (one string may hold several, comma-separated). Userinfo in a
        URL becomes user/password (or token); a `tls://` URL turns TLS on."""
        items = [u.strip() for u in (urls.split(",") if isinstance(urls, str) else urls) if u.strip()]
        servers, user, password = [], "", ""
        for item in items:
            bare, u, p = _split_userinfo(item)
            servers.append(bare)
            user, password = user or u, password or p
        token = user if user and not password else ""
        tls = bool(settings.pop("tls", False)) or any(s.startswith("tls://") for s in servers)
        if token:
            user = ""
        return cls(role=role, servers=tuple(servers), user=user, password=password, token=token, tls=tls, **settings)

    @staticmethod
    def kwargs_for(target: str | NatsEndpoint, error_cb: ErrorCallback | None = None) -> dict[str, Any]:
        """`connect_kwargs()` of an endpoint; a bare URL (tests, tools) connects anonymously."""
        if not isinstance(target, NatsEndpoint):
            target = NatsEndpoint.from_url("nats", target)
        return target.connect_kwargs(error_cb)

    def with_servers(self, urls: str | Sequence[str]) -> NatsEndpoint:
        """The same credentials and TLS settings for other servers (the embedded nats-server)."""
        other = NatsEndpoint.from_url(self.role, urls)
        return replace(self, servers=other.servers, tls=self.tls or other.tls)

    @property
    def url(self) -> str:
        """The first server, for display (never carries a credential)."""
        return self.servers[0] if self.servers else ""

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def user_credentials(self) -> tuple[str, str]:
        """(JWT, seed) this endpoint signs in with; ("", "") without nkey credentials."""
        if self.seed or self.jwt:
            return self.jwt, self.seed
        if self.creds_file is not None:
            return read_creds(self.creds_file)
        return "", ""

    def connect_kwargs(self, error_cb: ErrorCallback | None = None) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`: servers, authentication, TLS and the error callback
        (by default one log line per error naming this connection; nats-py's own logs a
        traceback). Callers add their name, timeouts and other callbacks."""
        kwargs: dict[str, Any] = {"servers": list(self.servers), "error_cb": error_cb or self._log_error}
        jwt, seed = self.user_credentials()
        if jwt:
            pair = _keypair(self.role, seed)
            kwargs["user_jwt_cb"] = lambda: jwt.encode()
            kwargs["signature_cb"] = lambda nonce: base64.b64encode(pair.sign(nonce.encode()))
        elif seed:
            _keypair(self.role, seed)  # a clear error now, not a failed handshake later
            kwargs["nkeys_seed_str"] = seed
        if self.user:
            kwargs["user"], kwargs["password"] = self.user, self.password
        elif self.token:
            kwargs["token"] = self.token
        context = self.ssl_context()
        if context is not None:
            kwargs["tls"] = context
        return kwargs

    async def _log_error(self, err: Exception) -> None:
        log.warning("NATS connection error", extra={"connection": self.role, "server": self.url,
                                                    "error": connection_failure(err)})

    def host_data_fields(self) -> dict[str, Any]:
        """The provider's connection in host data (protocol.md §11.7): OTP sends `host:port`."""
        jwt, seed = self.user_credentials()
        hostport = urllib.parse.urlsplit(self.url if "://" in self.url else f"nats://{self.url}").netloc
        fields: dict[str, Any] = {"lattice_rpc_url": hostport, "lattice_rpc_user_jwt": jwt,
                                  "lattice_rpc_user_seed": seed, "lattice_rpc_tls": int(self.tls)}
        if self.ca_file is not None:  # hostcore extension: OTP providers use the system's roots
            fields["lattice_rpc_tls_ca_file"] = str(self.ca_file)
        return fields


def _keypair(role: str, seed: str) -> KeyPair:
    try:
        return KeyPair.from_seed(seed)
    except NkeyError:
        raise ConfigError(f"{role}: the NATS seed is not a valid nkey seed") from None


def connection_failure(err: BaseException, reasons: Sequence[BaseException] = ()) -> str:
    """The server's (or the socket's) reason for a failed connection, one line, no traceback.

    nats-py ends a failed first connect with "no servers available"; the real reason is the
    last error it reported on the way, so that one is preferred."""
    cause = reasons[-1] if reasons else err
    text = str(cause).strip() or type(cause).__name__
    return text.replace("\n", " ")


async def flush_in_order(nc: nats.NATS, timeout_s: float = 10.0) -> None:
    """Return once the server has processed everything `nc` sent before, its subscriptions
    included; raises nats.errors.TimeoutError after `timeout_s`.

    One `nc.flush()` does not promise that: nats-py writes its PING straight to the socket, ahead
    of the commands still queued for its flusher task, so the PONG can come back before a SUB sent
    just before it has reached the server, and a publish from another connection then finds
    nobody subscribed. The flusher task was woken when those commands were queued, so it has
    written them before the first PONG can be read: the second PING follows them. (A message to
    ourselves would do too, but needs publish permission on our inbox, which tight credentials
    with `allow_responses` do not give.)"""
    await nc.flush(timeout_s)
    await nc.flush(timeout_s)


async def _probe(endpoint: NatsEndpoint, timeout_s: float) -> None:
    reasons: list[BaseException] = []

    async def on_error(e: Exception) -> None:
        reasons.append(e)

    try:  # one attempt per server (nats-py reads max_reconnect_attempts=0 as "forever")
        connect = nats.connect(**endpoint.connect_kwargs(on_error), name=f"hostcore-probe-{endpoint.role}",
                               allow_reconnect=False, connect_timeout=timeout_s, max_reconnect_attempts=1,
                               reconnect_time_wait=0.1)
        nc = await asyncio.wait_for(connect, 2 * timeout_s * len(endpoint.servers) + 1)
    except Exception as err:  # noqa: BLE001 -- any failure is reported the same way, then retried
        raise ConnectionError(connection_failure(err, reasons)) from None
    await nc.close()


def wait_for_endpoints(endpoints: Sequence[NatsEndpoint], stop: threading.Event, timeout_s: float = 3.0) -> bool:
    """Block until each endpoint accepts a full NATS handshake (TLS and credentials included),
    retrying with backoff and logging every failure with the connection's role, server and
    reason. Returns False if `stop` was set first.

    Runs no thread afterwards (asyncio.run joins its resolver threads), so the launcher may
    still fork.
    """
    for endpoint in endpoints:
        delay = 0.25
        while not stop.is_set():
            try:
                asyncio.run(_probe(endpoint, timeout_s))
                break
            except ConnectionError as err:
                log.warning("waiting for NATS: connection failed, retrying",
                            extra={"connection": endpoint.role, "server": endpoint.url, "error": str(err),
                                   "retry_in_s": delay})
            stop.wait(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)
        else:
            return False
    return True
