"""Registry credentials and the auth handshake of the OCI client (protocol.md §2.4, §8.2 step 5).

`normalize_registry_credentials` turns a `registries.put` payload into the credential map;
`RegistryAuth` answers a registry's `WWW-Authenticate` challenge (Basic, or the Bearer token
flow of the distribution spec) and remembers the answer per registry and scope. Used by
`hostcore.native.oci.OciClient`, which owns the `RegistryAuth` and its session.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from hostcore.errors import OciRegistryError, RegistryCredentialsInvalid

__all__ = ["RegistryAuth", "RegistryCredentials", "credentials_for", "normalize_registry_credentials"]

log = logging.getLogger(__name__)

_URL_PREFIXES = ("bindle://", "oci://", "http://", "https://")
_REGISTRY_TYPES = frozenset({"oci", "bindle"})
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^\s,]*))')


@dataclass(frozen=True, slots=True)
class RegistryCredentials:
    """Credentials for one registry host. OCI uses username+password (HTTP Basic, also sent to a
    token service); `token` is kept for the wire shape but ignored for OCI (§8.2 step 5)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def basic(self) -> tuple[str, str] | None:
        """(username, password) when both are set, else None."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)


def _strip_prefix(key: str) -> str:
    for prefix in _URL_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _optional_str(server: str, entry: Mapping[str, Any], name: str) -> str | None:
    value = entry.get(name)
    if value is None or isinstance(value, str):
        return value
    raise RegistryCredentialsInvalid(f"'{name}' of '{server}' is not a string")


def normalize_registry_credentials(payload: object) -> dict[str, RegistryCredentials]:
    """The OCI part of a `registries.put` payload (protocol.md §2.4), keyed by registry host.

    Entries without `registryType`, or with none of username/password/token, are dropped. Keys
    lose any `bindle://`, `oci://`, `http://`, `https://` prefix; OCI keys keep the text before
    the first `/`. Bindle entries are checked, then left out (this host has no bindle support).
    Pure. Raises RegistryCredentialsInvalid if the payload is not a map of maps, a field is not a
    string, or `registryType` is neither "oci" nor "bindle" (the OTP host crashed there).
    """
    if not isinstance(payload, Mapping):
        raise RegistryCredentialsInvalid("expected a map of server to credentials")
    out: dict[str, RegistryCredentials] = {}
    for server, entry in payload.items():
        if not isinstance(server, str) or not isinstance(entry, Mapping):
            raise RegistryCredentialsInvalid(f"entry '{server}' is not a map")
        kind = _optional_str(server, entry, "registryType")
        creds = RegistryCredentials(*(_optional_str(server, entry, n) for n in ("username", "password", "token")))
        if kind is None or creds == RegistryCredentials():
            log.debug("registry credentials dropped", extra={"server": server})
            continue
        if kind not in _REGISTRY_TYPES:
            raise RegistryCredentialsInvalid(f"unknown registryType '{kind}' for '{server}'")
        if kind == "oci":
            out[_strip_prefix(server).split("/", 1)[0]] = creds
    return out


def credentials_for(
    ref: str,
    registry: str,
    credentials: Mapping[str, RegistryCredentials],
    env_registry: tuple[str, str, str] | None,
) -> RegistryCredentials | None:
    """§8.2 step 5: the credential map's entry for `registry`, else the OCI_REGISTRY triple when
    the reference string starts with OCI_REGISTRY, else None (anonymous)."""
    found = credentials.get(registry)
    if found is not None:
        return found
    if env_registry is not None and env_registry[0] and ref.startswith(env_registry[0]):
        return RegistryCredentials(username=env_registry[1], password=env_registry[2])
    return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…"` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _basic_header(user_password: tuple[str, str]) -> str:
    raw = f"{user_password[0]}:{user_password[1]}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class RegistryAuth:
    """Authorization headers for one client's requests. Remembers, per registry, whether it
    wants Basic, and per (registry, scope) the last bearer token; an expired token shows up as
    another 401 and is simply fetched again. Not thread-safe: owned by one OciClient, which also
    owns `session` and closes it."""

    def __init__(self, session: requests.Session, timeout_s: float) -> None:
        self._session = session
        self._timeout_s = timeout_s
        self._basic: dict[str, str] = {}
        self._tokens: dict[tuple[str, str], str] = {}

    def authorization(self, registry: str, scope: str) -> str | None:
        """The header value to send first, from earlier challenges; None = try anonymously."""
        return self._basic.get(registry) or self._tokens.get((registry, scope))

    def answer_challenge(
        self, *, ref: str, action: str, registry: str, scope: str, challenge: str,
        creds: RegistryCredentials | None,
    ) -> str | None:
        """Answer a 401's `WWW-Authenticate` value. Returns the Authorization header to retry
        with, or None when it cannot be answered (no credentials, or the token service refused).

        Bearer: GET realm?scope=…&service=… (Basic creds if any) → `token`/`access_token`.
        Anything else, or no challenge: HTTP Basic with `creds`. Network errors propagate as
        `requests` exceptions; a token service answering other than 200/401/403, or without a
        token, raises OciRegistryError.
        """
        scheme, params = _parse_challenge(challenge)
        basic = creds.basic if creds is not None else None
        if scheme != "bearer" or "realm" not in params:
            if basic is None:
                return None
            self._basic[registry] = _basic_header(basic)
            return self._basic[registry]
        query = {"scope": scope, **({"service": params["service"]} if "service" in params else {})}
        resp = self._session.get(params["realm"], params=query, auth=basic, timeout=self._timeout_s)
        with resp:
            if resp.status_code in (401, 403):
                log.debug("token service refused", extra={"registry": registry, "status": resp.status_code})
                return None
            try:
                body = resp.json() if resp.status_code == 200 else {}
            except ValueError:
                body = {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise OciRegistryError(
                ref, f"token service {params['realm']} answered {resp.status_code} without a token", action=action,
            )
        self._tokens[(registry, scope)] = f"Bearer {token}"
        return self._tokens[(registry, scope)]
