"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on loopback,
plus a tiny bearer-token service for its `auth: token` mode.

`DockerRegistry` starts the binary with filesystem storage under `root`, waits for `GET /v2/`
to answer (200 or 401) and stops it (SIGTERM, then SIGKILL) and reaps it on exit. It speaks
plain HTTP: clients list `.address` in allowed_insecure. Nothing here touches the network
beyond 127.0.0.1 (no notifications, no redis, no bugsnag/newrelic reporting).
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostcore.procutil import free_port, set_pdeathsig, stop_process, wait_for

REGISTRY_BIN = Path("/usr/bin/docker-registry")
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TokenAuth:
    """The registry's `auth: token` section: tokens come from `realm`, signed by the key whose
    self-signed certificate is in `rootcertbundle`."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


class DockerRegistry:
    """`docker-registry serve` on 127.0.0.1; the caller owns it and must leave the `with`."""

    def __init__(self, root: Path, *, htpasswd: tuple[str, str] | None = None, port: int = 0,
                 token_auth: TokenAuth | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.storage = root / "storage"
        self.log_path = root / "registry.log"
        self._htpasswd = htpasswd
        self._token_auth = token_auth
        self._proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True},
                        "redirect": {"disable": True}},
            "http": {"addr": self.address, "secret": secrets.token_hex(16), "draintimeout": "1s"},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self._htpasswd is not None:
            user, password = self._htpasswd
            line = f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
            (self.root / "htpasswd").write_text(line)
            config["auth"] = {"htpasswd": {"realm": "hostcore-test", "path": str(self.root / "htpasswd")}}
        elif self._token_auth is not None:
            t = self._token_auth
            config["auth"] = {"token": {"realm": t.realm, "service": t.service, "issuer": t.issuer,
                                        "rootcertbundle": str(t.rootcertbundle)}}
        return config

    def __enter__(self) -> DockerRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        config_path = self.root / "config.yml"
        config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config_path)], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=set_pdeathsig)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self) -> None:
        last = ["no answer"]

        def ready() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._proc.returncode}:\n{self.log()}")
            try:
                status = requests.get(f"{self.url}/v2/", timeout=1).status_code
            except requests.ConnectionError as err:
                last[0] = type(err).__name__
                return False
            last[0] = f"status {status}"
            return status in (200, 401)
        # synchronous on purpose: the benchmarks use this class too, outside any event loop
        if not wait_for(ready, READY_TIMEOUT_S):
            raise RuntimeError(f"docker-registry not ready after {READY_TIMEOUT_S}s ({last[0]}):\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def blob_path(self, digest: str) -> Path:
        """Where filesystem storage keeps a blob's bytes."""
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def close(self) -> None:
        """Stop and reap the registry. Idempotent."""
        if self._proc is not None:
            stop_process(self._proc, name="docker-registry", grace_s=5.0)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass
class TokenServer:
    """A bearer-token service (distribution token auth spec) on 127.0.0.1 in a thread.

    Grants the requested actions to `users` (Basic auth) and, when `anonymous_pull`, `pull` to
    anyone; refuses (401) a wrong password. `requests` records each request's (scope, user)."""

    root: Path
    users: dict[str, str] = field(default_factory=dict)
    anonymous_pull: bool = False
    service: str = "hostcore-test-registry"
    issuer: str = "hostcore-test-issuer"
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostcore test token issuer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(minutes=5))
                      .not_valid_after(now + datetime.timedelta(days=1))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.root.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.root / "token-root.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread: threading.Thread | None = None

    @property
    def auth(self) -> TokenAuth:
        return TokenAuth(realm=self.realm, service=self.service, issuer=self.issuer,
                         rootcertbundle=self.cert_path)

    def _user(self, header: str | None) -> tuple[str | None, bool]:
        """(user, ok): (None, True) for anonymous, ok False for wrong credentials."""
        if not header or not header.startswith("Basic "):
            return None, True
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, self.users.get(user) == password

    def _token(self, user: str | None, scope: str) -> str:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        granted = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "iat": now, "nbf": now - 10,
                  "exp": now + 300, "jti": secrets.token_hex(8),
                  "access": [{"type": kind, "name": name, "actions": granted}] if scope else []}
        x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [x5c]})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                query = parse_qs(urlsplit(self.path).query)
                scope = query.get("scope", [""])[0]
                user, ok = owner._user(self.headers.get("Authorization"))
                owner.requests.append((scope, user))
                if not ok or (user is None and not owner.anonymous_pull):
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": owner._token(user, scope), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        return Handler

    def __enter__(self) -> TokenServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def iter_registry_requests(registry: DockerRegistry) -> Iterator[str]:
    """The access-log lines (`"GET /v2/... HTTP/1.1" 200`) the registry wrote so far."""
    for line in registry.log_path.read_text(errors="replace").splitlines():
        if '"GET /v2/' in line or '"HEAD /v2/' in line or '"PUT /v2/' in line or '"POST /v2/' in line:
            yield line
