"""Fetch actor modules from OCI registries and push them (protocol.md §8.2).

`OciClient.pull` resolves a reference to its manifest, checks the layers' media types, and
returns the layers' bytes, downloading only blobs missing from the digest-keyed disk cache
`{cache_dir}/oci/blobs/sha256/{hex}`. `OciClient.push` uploads a module the way `wash reg push`
does. Every failure is an `ActorFetchFailed` subclass (hostcore/errors.py) whose `wire` names the
reference and the reason. Network I/O is blocking `requests`: async callers use `to_thread`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions

from hostcore.errors import (
    IncompatibleLayerMediaType,
    LatestRefused,
    OciAccessDenied,
    OciAuthRejected,
    OciAuthRequired,
    OciBadManifest,
    OciBlobUnknown,
    OciDigestMismatch,
    OciError,
    OciManifestUnknown,
    OciNoLayers,
    OciNotFound,
    OciReferenceInvalid,
    OciRegistryError,
    OciRegistryUnreachable,
    OciRepositoryUnknown,
    OciTimeout,
    OciTlsFailed,
)
from hostcore.native.oci_auth import (
    RegistryAuth,
    RegistryCredentials,
    credentials_for,
    normalize_registry_credentials,
)

__all__ = [
    "ACTOR_CONFIG", "OCI_MANIFEST", "WASM_LAYER", "WASM_LAYER_PLAIN", "OciClient", "OciReference",
    "OciSettings", "PulledArtifact", "RegistryCredentials", "normalize_registry_credentials",
    "parse_reference",
]

log = logging.getLogger(__name__)

WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_LAYER_PLAIN = "application/wasm"  # what current wasmCloud tooling pushes
PAR_LAYER = "application/vnd.wasmcloud.provider.archive.layer.v1+par"
TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"
ACTOR_CONFIG = "application/vnd.wasmcloud.actor.archive.config"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_ACCEPT = ", ".join((DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX))  # §8.2 step 6
_LAYER_TYPES = frozenset({WASM_LAYER, WASM_LAYER_PLAIN, PAR_LAYER, TAR_LAYER})  # §8.2 step 7
_MAX_MANIFEST = 4 * 1024 * 1024  # distribution's own limit on manifest size
_CHUNK = 1024 * 1024  # download read size and upload progress granularity
_NOT_FOUND = {"NAME_UNKNOWN": OciRepositoryUnknown, "MANIFEST_UNKNOWN": OciManifestUnknown,
              "BLOB_UNKNOWN": OciBlobUnknown}

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}")
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


@dataclass(frozen=True, slots=True)
class OciReference:
    """A parsed `registry/repository[:tag][@digest]`; `tag` and `digest` may both be None."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.registry}/{self.repository}{tag}{digest}"


def parse_reference(ref: str) -> OciReference:
    """Parse `host[:port]/repo[:tag][@sha256:…]`. A first component without '.' or ':' that is
    not `localhost` is part of the repository, and the registry is `docker.io`. Only sha256
    digests are accepted. Pure; raises OciReferenceInvalid naming what is wrong."""
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise OciReferenceInvalid(ref, f"digest '{digest}' is not sha256:<64 lower-case hex digits>")
    tag: str | None = None
    head, sep, tail = name.rpartition(":")
    if sep and "/" not in tail:
        name, tag = head, tail
        if not _TAG.fullmatch(tag):
            raise OciReferenceInvalid(ref, f"invalid tag '{tag}'")
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", name
    if not _HOST.fullmatch(first):
        raise OciReferenceInvalid(ref, f"invalid registry host '{first}'")
    if not rest or not all(_COMPONENT.fullmatch(c) for c in rest.split("/")):
        raise OciReferenceInvalid(ref, f"invalid repository name '{rest}' (lower-case letters, digits, . _ - and /)")
    return OciReference(registry=first, repository=rest, tag=tag, digest=digest or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class OciSettings:
    """What an OciClient needs from the host config. `credentials` is keyed by registry host
    (see normalize_registry_credentials); `env_registry` is (OCI_REGISTRY, user, password)."""

    cache_dir: Path
    allow_latest: bool = False
    allowed_insecure: tuple[str, ...] = ()
    credentials: dict[str, RegistryCredentials] = field(default_factory=dict)
    env_registry: tuple[str, str, str] | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class PulledArtifact:
    """A pulled module: `content` is every layer concatenated (§8.2 step 8); `digest` is what the
    reference resolved to; `layer_digest` and `media_type` describe the first layer."""

    content: bytes
    digest: str
    layer_digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class _Target:
    """One pull or push: what the errors name and where the requests go."""

    ref: str
    parsed: OciReference
    action: str  # "fetch" | "push", as in the error text
    base: str  # {scheme}://{registry}/v2/{repository}/
    creds: RegistryCredentials | None
    scope: str


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _BlobCache:
    """Content-addressed files under `{root}/oci/blobs/sha256`. Writes are atomic (tmp file in
    the same directory, then os.replace), so concurrent pullers of one digest are safe."""

    def __init__(self, root: Path) -> None:
        self._dir = root / "oci" / "blobs" / "sha256"

    def get(self, digest: str) -> bytes | None:
        path = self._dir / digest.removeprefix("sha256:")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if _sha256(data) != digest:
            log.warning("corrupt cached blob removed", extra={"digest": digest, "path": str(path)})
            path.unlink(missing_ok=True)
            return None
        return data

    def put(self, digest: str, data: bytes) -> None:
        if (self._dir / digest.removeprefix("sha256:")).exists():
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, self._dir / digest.removeprefix("sha256:"))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _Upload:
    """A request body that reports `progress(sent, total)` as requests reads it."""

    def __init__(self, data: bytes, progress: Callable[[int, int], None]) -> None:
        self._data, self._progress = data, progress

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[bytes]:
        total = len(self._data)
        self._progress(0, total)
        for start in range(0, total, _CHUNK):
            yield self._data[start:start + _CHUNK]
            self._progress(min(start + _CHUNK, total), total)


def _errno_text(err: Exception) -> str:
    found = _ERRNO_TEXT.search(str(err))
    return found.group(1).strip() if found else type(err).__name__


@contextmanager
def _network_errors(t: _Target, timeout_s: float) -> Iterator[None]:
    """Turn `requests` failures into OciError subclasses naming the registry."""
    registry = t.parsed.registry
    try:
        yield
    except requests.Timeout as err:
        raise OciTimeout(t.ref, registry, timeout_s, action=t.action) from err
    except requests.exceptions.SSLError as err:
        raise OciTlsFailed(t.ref, registry, action=t.action) from err
    except requests.ConnectionError as err:
        if err.args and isinstance(err.args[0], urllib3.exceptions.ReadTimeoutError):
            raise OciTimeout(t.ref, registry, timeout_s, action=t.action) from err
        detail = f"registry {registry} unreachable ({_errno_text(err)})"
        raise OciRegistryUnreachable(t.ref, detail, action=t.action) from err
    except requests.RequestException as err:
        raise OciRegistryError(t.ref, f"request to {registry} failed ({err})", action=t.action) from err


def _status_error(t: _Target, resp: requests.Response) -> OciError:
    """The error for a non-success answer, from the distribution error body when there is one."""
    try:
        errors = resp.json().get("errors") or [{}]
        code, message = str(errors[0].get("code", "")), str(errors[0].get("message", ""))
    except (ValueError, AttributeError, TypeError, IndexError):
        code, message = "", ""
    if resp.status_code == 404:
        return _NOT_FOUND.get(code, OciNotFound)(t.ref, action=t.action)
    if resp.status_code == 403:
        return OciAccessDenied(t.ref, action=t.action)
    text = f"{resp.status_code} {message or resp.reason}".strip()
    return OciRegistryError(t.ref, f"registry {t.parsed.registry} answered {text}", action=t.action)


def _select_platform(t: _Target, index: dict[str, Any]) -> str:
    """§8.2 step 6: an index resolves to its linux/amd64 entry, else its first entry."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    if not entries:
        raise OciBadManifest(t.ref, "the image index lists no manifests")
    chosen = next((m for m in entries if (m.get("platform") or {}).get("os") == "linux"
                   and (m.get("platform") or {}).get("architecture") == "amd64"), entries[0])
    digest = chosen.get("digest")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise OciBadManifest(t.ref, f"unsupported manifest digest '{digest}' in the image index")
    return digest


def _parse_manifest(t: _Target, body: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(body)
    except ValueError as err:
        raise OciBadManifest(t.ref, "the manifest is not JSON") from err
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        version = manifest.get("schemaVersion") if isinstance(manifest, dict) else None
        raise OciBadManifest(t.ref, f"unsupported manifest schemaVersion {version} (need 2)")
    return manifest


def _layers(t: _Target, manifest: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(media type, digest, size) of each layer, all checked before anything is downloaded."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise OciNoLayers(t.ref)
    out = []
    for layer in layers:
        media_type, digest, size = (layer.get(k) if isinstance(layer, dict) else None
                                    for k in ("mediaType", "digest", "size"))
        if media_type not in _LAYER_TYPES:
            raise IncompatibleLayerMediaType(t.ref, str(media_type))
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest) or not isinstance(size, int):
            raise OciBadManifest(t.ref, f"unsupported layer descriptor (digest '{digest}', size {size})")
        out.append((media_type, digest, size))
    return out


class OciClient:
    """Pulls and pushes OCI artifacts for one host. Owns a `requests.Session` (or the one passed
    in, which it then closes) and the auth state; `close()` is idempotent and use after close
    raises RuntimeError. Blocking and not thread-safe: one client per thread. Each request
    has `settings.timeout_s` to connect and between received bytes."""

    def __init__(self, settings: OciSettings, *, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._session: requests.Session | None = session or requests.Session()
        self._auth = RegistryAuth(self._session, settings.timeout_s)
        self._cache = _BlobCache(settings.cache_dir)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the session. Idempotent."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def pull(self, ref: str) -> PulledArtifact:
        """Fetch the module `ref` names (§8.2). The manifest is always fetched (a digest ref
        whose manifest is cached needs no network), so a moved tag is seen; blobs already in
        the cache are not downloaded again. Every blob's sha256 is checked; nothing is cached
        unless the whole pull succeeds.

        Raises LatestRefused (`:latest` or no tag, unless allow_latest), OciReferenceInvalid,
        IncompatibleLayerMediaType, OciNoLayers, OciBadManifest, OciDigestMismatch, the
        OciNotFound / OciAuthError families, OciRegistryUnreachable (OciTlsFailed for https to a
        plain-HTTP registry), OciTimeout, OciRegistryError.
        """
        parsed = parse_reference(ref)
        # QUIRK: OTP refuses only refs ending in ":latest"; a tag-less ref, which the OCI client
        # pulls as `latest`, slipped through (§8.2 step 2). We refuse it too.
        if not self._settings.allow_latest and parsed.digest is None and parsed.tag in (None, "latest"):
            raise LatestRefused()
        t = self._target(ref, parsed, "fetch", "pull")
        fresh: dict[str, bytes] = {}
        with _network_errors(t, self._settings.timeout_s):
            try:
                top, manifest = self._manifest(t, parsed.digest or parsed.tag or "latest", fresh)
            except OciManifestUnknown:
                self._check_repository(t)
                raise
            if "manifests" in manifest or manifest.get("mediaType") in (OCI_INDEX, DOCKER_LIST):
                manifest = self._manifest(t, _select_platform(t, manifest), fresh)[1]
            layers = _layers(t, manifest)
            blobs = [self._blob(t, digest, size, fresh) for _, digest, size in layers]
        for digest, data in fresh.items():
            self._cache.put(digest, data)
        content = b"".join(blobs)
        log.info("oci pull", extra={"ref": ref, "digest": top, "size": len(content), "downloaded": len(fresh)})
        return PulledArtifact(content=content, digest=top, layer_digest=layers[0][1], media_type=layers[0][0],
                              size=len(content))

    def push(self, ref: str, content: bytes, *, media_type: str = WASM_LAYER,
             config_media_type: str = ACTOR_CONFIG,
             progress: Callable[[int, int], None] | None = None) -> str:
        """Push `content` as a one-layer OCI image (config `{}`) to `ref`; a tag-less ref pushes
        `latest`. Blobs the registry already has are skipped (HEAD); others go up in one PUT,
        calling `progress(sent, total)` per MiB of the layer. Returns the manifest digest.
        Raises the same OciError family as `pull`, with "Unable to push" texts."""
        parsed = parse_reference(ref)
        t = self._target(ref, parsed, "push", "pull,push")
        config = b"{}"
        with _network_errors(t, self._settings.timeout_s):
            descriptors = [self._upload(t, config, config_media_type, None),
                           self._upload(t, content, media_type, progress)]
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptors[0],
                                   "layers": descriptors[1:]}, separators=(",", ":")).encode()
            digest = _sha256(manifest)
            if parsed.digest is not None and parsed.digest != digest:
                raise OciDigestMismatch(ref, parsed.digest, digest, action="push")
            self._send(t, "PUT", f"manifests/{parsed.tag or parsed.digest or 'latest'}",
                       headers={"Content-Type": OCI_MANIFEST}, body=manifest, ok=(201,))
        log.info("oci push", extra={"ref": ref, "digest": digest, "size": len(content)})
        return digest

    def _target(self, ref: str, parsed: OciReference, action: str, actions: str) -> _Target:
        scheme = "http" if parsed.registry in self._settings.allowed_insecure else "https"
        creds = credentials_for(ref, parsed.registry, self._settings.credentials, self._settings.env_registry)
        return _Target(ref=ref, parsed=parsed, action=action, creds=creds,
                       base=f"{scheme}://{parsed.registry}/v2/{parsed.repository}/",
                       scope=f"repository:{parsed.repository}:{actions}")

    def _send(self, t: _Target, method: str, path: str, *, headers: dict[str, str] | None = None,
              body: bytes | None = None, progress: Callable[[int, int], None] | None = None,
              stream: bool = False, ok: tuple[int, ...] = (200,)) -> requests.Response:
        """One request, answering at most one auth challenge; returns a response whose status is
        in `ok` (the caller closes it when streaming), else raises the matching OciError."""
        if self._session is None:
            raise RuntimeError("OciClient is closed")
        url = urljoin(t.base, path)
        auth = self._auth.authorization(t.parsed.registry, t.scope)
        for attempt in range(2):
            data = _Upload(body, progress) if body is not None and progress is not None else body
            sent = {**(headers or {}), **({"Authorization": auth} if auth else {})}
            resp = self._session.request(method, url, headers=sent, data=data, stream=stream,
                                         timeout=self._settings.timeout_s)
            log.debug("oci request", extra={"method": method, "url": url, "status": resp.status_code})
            if resp.status_code != 401 or attempt:
                break
            resp.close()
            auth = self._auth.answer_challenge(
                ref=t.ref, action=t.action, registry=t.parsed.registry, scope=t.scope,
                challenge=resp.headers.get("WWW-Authenticate", ""), creds=t.creds)
            if auth is None:
                break
        if resp.status_code == 401:
            resp.close()
            usable = t.creds is not None and t.creds.basic is not None
            raise (OciAuthRejected if usable else OciAuthRequired)(t.ref, t.parsed.registry, action=t.action)
        if resp.status_code not in ok:
            resp.close()
            raise _status_error(t, resp)
        return resp

    def _check_repository(self, t: _Target) -> None:
        """distribution answers MANIFEST_UNKNOWN for an unknown repository too; its tag list
        tells the two apart. Raises OciRepositoryUnknown; any other outcome returns."""
        try:
            self._send(t, "GET", "tags/list").close()
        except OciRepositoryUnknown:
            raise
        except OciError:
            return

    def _manifest(self, t: _Target, reference: str, fresh: dict[str, bytes]) -> tuple[str, dict[str, Any]]:
        """(digest, parsed manifest) for a tag or digest; a digest is served from the cache when
        present. A fetched manifest goes into `fresh`, to be cached once the pull succeeds."""
        body = self._cache.get(reference) if _DIGEST.fullmatch(reference) else None
        if body is None:
            resp = self._send(t, "GET", f"manifests/{reference}", headers={"Accept": _ACCEPT})
            body = resp.content
            if len(body) > _MAX_MANIFEST:
                raise OciBadManifest(t.ref, f"the manifest is larger than {_MAX_MANIFEST} bytes")
        digest = _sha256(body)
        if _DIGEST.fullmatch(reference) and digest != reference:
            raise OciDigestMismatch(t.ref, reference, digest)
        manifest = _parse_manifest(t, body)
        fresh[digest] = body
        return digest, manifest

    def _blob(self, t: _Target, digest: str, size: int, fresh: dict[str, bytes]) -> bytes:
        """The blob's bytes, from the cache or downloaded (streamed, hashed, size-capped)."""
        cached = fresh[digest] if digest in fresh else self._cache.get(digest)
        if cached is not None:
            return cached
        hasher, data = hashlib.sha256(), bytearray()
        with self._send(t, "GET", f"blobs/{digest}", stream=True) as resp:
            for chunk in resp.iter_content(_CHUNK):
                hasher.update(chunk)
                data += chunk
                if len(data) > size:
                    break
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest or len(data) != size:
            raise OciDigestMismatch(t.ref, digest, actual)
        fresh[digest] = bytes(data)
        return fresh[digest]

    def _upload(self, t: _Target, data: bytes, media_type: str,
                progress: Callable[[int, int], None] | None) -> dict[str, Any]:
        """Upload one blob unless the registry has it; returns its descriptor."""
        digest = _sha256(data)
        descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
        with self._send(t, "HEAD", f"blobs/{digest}", ok=(200, 404)) as head:
            if head.status_code == 200:
                if progress is not None:
                    progress(len(data), len(data))
                return descriptor
        with self._send(t, "POST", "blobs/uploads/", ok=(202,)) as started:
            location = started.headers.get("Location")
        if not location:
            raise OciRegistryError(t.ref, "the registry gave no upload location", action=t.action)
        parts = urlsplit(urljoin(t.base, location))
        query = "&".join(q for q in (parts.query, urlencode({"digest": digest})) if q)
        with self._send(t, "PUT", urlunsplit(parts._replace(query=query)), body=data, progress=progress,
                        headers={"Content-Type": "application/octet-stream"}, ok=(201,)):
            pass
        return descriptor
