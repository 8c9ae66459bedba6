"""The CLI's NATS session: connect quietly, tell "nobody listens" from "no reply in time", and
turn expected failures into one line a person can act on (no tracebacks)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError

from hostcore.config import ClientConfig
from hostcore.control.client import ControlClient, ControlTimeout
from hostcore.errors import HostcoreError
from hostcore.natsconn import NatsEndpoint
from hostcore.telemetry.tracing import trace_headers
from hostcore.wire import subjects

__all__ = ["CliControlClient", "CliError", "NatsUnreachable", "NoResponders", "connect", "explain", "hint_for"]


class CliError(HostcoreError):
    """A failure the CLI reports as one line (its `wire`) and exit code 1."""


class NatsUnreachable(CliError):
    def __init__(self, cfg: ClientConfig, reason: str) -> None:
        if cfg.nats_source == "default":
            hint = ("no running local host was found; start one with `python -m hostcore up`, or pass --nats-url "
                    "(WASMCLOUD_NATS_URL)")
        elif cfg.nats_source == "the local host":
            hint = "the local host's NATS stopped answering; is `hostcore up` still running?"
        else:
            hint = f"check {cfg.nats_source}, or leave it unset to use the local host"
        super().__init__(f"cannot reach NATS at {cfg.nats_url}: {reason}; {hint}")


class NoResponders(CliError):
    """Nothing subscribes to the subject of a request (nats-py's NoRespondersError)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"nobody listens on {subject}")


class CliControlClient(ControlClient):
    """ControlClient whose requests tell "nobody listens" (NoResponders) apart from a timeout."""

    async def _request(self, subject: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout_s or self.timeout_s, headers=trace_headers())
        except NoRespondersError:
            raise NoResponders(subject) from None
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            raise ControlTimeout(f"No reply on {subject} within {timeout_s or self.timeout_s:g} s") from None
        return bytes(msg.data)


def _reason(err: BaseException | None) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err.strerror})"
    if isinstance(err, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err) if err is not None else ""
    return text.removeprefix("nats: ") or (type(err).__name__ if err is not None else "no answer")


async def connect(cfg: ClientConfig, *, reconnect: bool = False,
                  on_state: Callable[[str], Awaitable[None]] | None = None) -> NatsClient:
    """Connect to cfg.nats_url. nats-py's own error logging is replaced by our callbacks (they keep
    the last error for the message). Raises NatsUnreachable."""
    last: list[BaseException] = []
    client: list[NatsClient] = []

    async def on_error(err: Exception) -> None:
        last[:] = [err]

    async def on_disconnect() -> None:
        if on_state is not None and not (client and client[0].is_closed):  # not our own close
            await on_state("lost; reconnecting")

    async def on_reconnect() -> None:
        if on_state is not None:
            await on_state("reconnected")

    try:
        async with asyncio.timeout(cfg.timeout_s + 1):
            client.append(await nats.connect(
                **NatsEndpoint.kwargs_for(cfg.ctl if cfg.ctl.servers else cfg.nats_url, on_error),
                connect_timeout=cfg.timeout_s, allow_reconnect=reconnect,
                max_reconnect_attempts=-1 if reconnect else 1, reconnect_time_wait=0.1 if not reconnect else 1.0,
                disconnected_cb=on_disconnect, reconnected_cb=on_reconnect))
            return client[0]
    except (OSError, TimeoutError, nats.errors.Error) as err:
        raise NatsUnreachable(cfg, _reason(last[0] if last else err)) from None


def explain(err: NoResponders, lattice: str, ctl_prefix: str) -> str:
    """What nobody listening on a subject means, in the user's terms."""
    rpc = subjects.rpc_prefix(lattice)
    if err.subject.startswith(rpc):
        actor = err.subject[len(rpc):].split(".")[0]
        return f"actor {actor} is not running in lattice {lattice} (`hostcore ctl get inventory HOST_ID` lists actors)"
    parsed = subjects.parse(ctl_prefix, err.subject)
    if parsed is not None and parsed.host_id:
        return (f"no host {parsed.host_id} in lattice {lattice} "
                "(`hostcore ctl get hosts` lists the hosts; -x picks another lattice)")
    return f"no host answers in lattice {lattice} (is a host running? -x picks another lattice)"


def hint_for(error: str) -> str:
    """The host's error text, with what to do about it where the text alone does not say."""
    if "file loading is disabled" in error:
        return f"{error} (start the host with --allow-file-load or WASMCLOUD_ALLOW_FILE_LOAD=true)"
    return error
