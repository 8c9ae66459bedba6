"""hostcore.native.oci against a real registry (Debian's docker-registry, tests/oci_registry.py).

Reference parsing and credential normalisation are pure and tested without a registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from hostcore.errors import (
    ActorFetchFailed,
    IncompatibleLayerMediaType,
    LatestRefused,
    OciAuthRejected,
    OciAuthRequired,
    OciDigestMismatch,
    OciManifestUnknown,
    OciNoLayers,
    OciReferenceInvalid,
    OciRegistryUnreachable,
    OciRepositoryUnknown,
    OciTimeout,
    OciTlsFailed,
    RegistryCredentialsInvalid,
)
from hostcore.native.oci import (
    OCI_MANIFEST,
    WASM_LAYER,
    WASM_LAYER_PLAIN,
    OciClient,
    OciReference,
    OciSettings,
    RegistryCredentials,
    normalize_registry_credentials,
    parse_reference,
)
from hostcore.procutil import free_port, pid_alive
from oci_registry import DockerRegistry, TokenServer

FIXTURES = Path(
    os.environ.get(
        "HOSTCORE_FIXTURES",
        Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "actors",
    )
)
ACTORS = sorted(FIXTURES.glob("*.wasm"))
ECHO = FIXTURES / "echo.wasm"
LATEST_WIRE = (
    "Fetching images tagged 'latest' is currently prohibited in this host. "
    "This option can be overridden with WASMCLOUD_OCI_ALLOW_LATEST"
)


# --- pure: references and credentials --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("localhost:5000/echo:0.1", OciReference("localhost:5000", "echo", "0.1", None)),
        ("wasmcloud.azurecr.io/echo:0.3.4", OciReference("wasmcloud.azurecr.io", "echo", "0.3.4", None)),
        ("localhost/a/b/c", OciReference("localhost", "a/b/c", None, None)),
        ("127.0.0.1:5000/org/echo@sha256:" + "a" * 64,
         OciReference("127.0.0.1:5000", "org/echo", None, "sha256:" + "a" * 64)),
        ("ghcr.io/x/y:v1@sha256:" + "b" * 64, OciReference("ghcr.io", "x/y", "v1", "sha256:" + "b" * 64)),
        ("echo:0.1", OciReference("docker.io", "echo", "0.1", None)),
        ("wasmcloud/echo", OciReference("docker.io", "wasmcloud/echo", None, None)),
    ],
)
def test_parse_reference(ref: str, expected: OciReference) -> None:
    assert parse_reference(ref) == expected


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("", "repository"),
        ("localhost:5000/", "repository"),
        ("localhost:5000/Echo:0.1", "repository"),
        ("localhost:5000/echo:bad tag", "tag"),
        ("localhost:5000/echo@sha256:abc", "digest"),
        ("localhost:5000/echo@md5:" + "a" * 32, "digest"),
        ("bad_host.io/echo:1", "registry host"),
    ],
)
def test_parse_reference_rejects(ref: str, why: str) -> None:
    with pytest.raises(OciReferenceInvalid) as info:
        parse_reference(ref)
    assert info.value.wire.startswith(f"Invalid OCI reference '{ref}': ")
    assert why in info.value.wire
    assert isinstance(info.value, ActorFetchFailed)


def test_normalize_registry_credentials() -> None:
    payload = {
        "https://localhost:5000/some/path": {"registryType": "oci", "username": "u", "password": "p"},
        "oci://ghcr.io": {"registryType": "oci", "token": "t"},
        "http://plain.example:80": {"registryType": "oci", "username": "v", "password": "q"},
        "no-type.io": {"username": "u", "password": "p"},  # no registryType: dropped
        "no-creds.io": {"registryType": "oci"},  # nothing to authenticate with: dropped
        "bindle://inv@bindle.example": {"registryType": "bindle", "username": "u", "password": "p"},
    }
    assert normalize_registry_credentials(payload) == {
        "localhost:5000": RegistryCredentials("u", "p", None),
        "ghcr.io": RegistryCredentials(None, None, "t"),
        "plain.example:80": RegistryCredentials("v", "q", None),
    }


@pytest.mark.parametrize(
    "payload",
    [[], {"r.io": "x"}, {"r.io": {"registryType": "docker", "username": "u"}},
     {"r.io": {"registryType": "oci", "username": 5}}],
)
def test_normalize_registry_credentials_rejects(payload: Any) -> None:
    with pytest.raises(RegistryCredentialsInvalid) as info:
        normalize_registry_credentials(payload)
    assert info.value.wire == "Failed to update registry credential map"


# --- against a real registry -------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as reg:
        yield reg
    assert reg.pid is not None and not pid_alive(reg.pid), "docker-registry outlived its context"


class Recorder:
    """A session that records each (method, path) it sends."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.calls: list[tuple[str, str]] = []
        self.session.hooks["response"].append(self._hook)

    def _hook(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.calls.append((resp.request.method or "", requests.utils.urlparse(resp.url).path))

    def blob_gets(self) -> list[str]:
        return [p for m, p in self.calls if m == "GET" and "/blobs/" in p]


def settings(tmp_path: Path, reg: DockerRegistry | None = None, **kw: Any) -> OciSettings:
    insecure = (reg.address,) if reg is not None else ()
    return OciSettings(cache_dir=tmp_path / "cache", allowed_insecure=insecure, timeout_s=5.0, **kw)


def cached(tmp_path: Path) -> list[str]:
    root = tmp_path / "cache"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def put_blob(reg: DockerRegistry, repo: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=5)
    assert start.status_code == 202, start.text
    done = requests.put(start.headers["Location"], params={"digest": digest}, data=data, timeout=5)
    assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def put_manifest(reg: DockerRegistry, repo: str, tag: str, manifest: dict[str, Any]) -> str:
    body = json.dumps(manifest).encode()
    resp = requests.put(f"{reg.url}/v2/{repo}/manifests/{tag}", data=body, timeout=5,
                        headers={"Content-Type": manifest["mediaType"]})
    assert resp.status_code == 201, resp.text
    return "sha256:" + hashlib.sha256(body).hexdigest()


def image(reg: DockerRegistry, repo: str, layers: list[tuple[str, bytes]],
          media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    config = {"mediaType": "application/vnd.wasmcloud.actor.archive.config", **put_blob(reg, repo, b"{}")}
    return {"schemaVersion": 2, "mediaType": media_type, "config": config,
            "layers": [{"mediaType": t, **put_blob(reg, repo, data)} for t, data in layers]}


@pytest.mark.parametrize("actor", ACTORS, ids=[p.stem for p in ACTORS])
def test_push_pull_round_trip(registry: DockerRegistry, tmp_path: Path, actor: Path) -> None:
    data = actor.read_bytes()
    ref = f"{registry.address}/actors/{actor.stem.replace('_', '-')}:0.1.0"
    with OciClient(settings(tmp_path, registry)) as client:
        digest = client.push(ref, data)
        pulled = client.pull(ref)
    assert pulled.content == data
    assert (pulled.digest, pulled.size, pulled.media_type) == (digest, len(data), WASM_LAYER)
    assert pulled.layer_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert pulled.layer_digest.removeprefix("sha256:") in cached(tmp_path)


def test_plain_wasm_media_type_and_progress(registry: DockerRegistry, tmp_path: Path) -> None:
    data = ECHO.read_bytes()
    seen: list[tuple[int, int]] = []
    ref = f"{registry.address}/echo:0.2"
    with OciClient(settings(tmp_path, registry)) as client:
        client.push(ref, data, media_type=WASM_LAYER_PLAIN, progress=lambda a, b: seen.append((a, b)))
        pulled = client.pull(ref)
    assert pulled.content == data and pulled.media_type == WASM_LAYER_PLAIN
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert [a for a, _ in seen] == sorted(a for a, _ in seen)


def test_docker_manifest_index_and_layer_concatenation(registry: DockerRegistry, tmp_path: Path) -> None:
    docker = image(registry, "multi", [(WASM_LAYER, b"\0asm-part-1"), (WASM_LAYER, b"-part-2")],
                   media_type="application/vnd.docker.distribution.manifest.v2+json")
    docker["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    manifest_digest = put_manifest(registry, "multi", "docker", docker)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": docker["mediaType"], "digest": manifest_digest, "size": 1,
                            "platform": {"os": "linux", "architecture": "amd64"}}]}
    index["manifests"][0]["size"] = len(json.dumps(docker).encode())
    index_digest = put_manifest(registry, "multi", "index", index)
    with OciClient(settings(tmp_path, registry)) as client:
        for tag, digest in (("docker", manifest_digest), ("index", index_digest)):
            pulled = client.pull(f"{registry.address}/multi:{tag}")
            assert pulled.content == b"\0asm-part-1-part-2" and pulled.digest == digest


# --- cache ---------------------------------------------------------------------------------------------


def test_cache_skips_known_blobs_and_notices_moved_tags(registry: DockerRegistry, tmp_path: Path) -> None:
    ref = f"{registry.address}/echo:0.1"
    first, second = ECHO.read_bytes(), (FIXTURES / "kvcounter.wasm").read_bytes()
    with OciClient(settings(tmp_path, registry)) as pusher:
        pusher.push(ref, first)
    rec = Recorder()
    with OciClient(settings(tmp_path, registry), session=rec.session) as client:
        assert client.pull(ref).content == first
        assert len(rec.blob_gets()) == 1
        again = client.pull(ref)
        assert again.content == first and len(rec.blob_gets()) == 1, rec.calls
        # Pinned by digest and fully cached: no request at all.
        calls = len(rec.calls)
        assert client.pull(f"{registry.address}/echo@{again.digest}").content == first
        assert len(rec.calls) == calls
    with OciClient(settings(tmp_path, registry)) as pusher:
        moved = pusher.push(ref, second)
    rec2 = Recorder()
    with OciClient(settings(tmp_path, registry), session=rec2.session) as client:  # a new process's client
        pulled = client.pull(ref)
    assert pulled.content == second and pulled.digest == moved and len(rec2.blob_gets()) == 1


def test_corrupt_cache_entry_is_fetched_again(registry: DockerRegistry, tmp_path: Path) -> None:
    ref = f"{registry.address}/echo:0.1"
    with OciClient(settings(tmp_path, registry)) as client:
        client.push(ref, ECHO.read_bytes())
        layer = client.pull(ref).layer_digest
        path = tmp_path / "cache/oci/blobs/sha256" / layer.removeprefix("sha256:")
        path.write_bytes(b"garbage")
        assert client.pull(ref).content == ECHO.read_bytes()
    assert path.read_bytes() == ECHO.read_bytes()


# --- refusals: the right error, and nothing cached -----------------------------------------------


def refused(client: OciClient, ref: str, error: type[Exception], tmp_path: Path) -> str:
    with pytest.raises(error) as info:
        client.pull(ref)
    assert isinstance(info.value, ActorFetchFailed)
    assert cached(tmp_path) == []
    return info.value.wire  # type: ignore[attr-defined]


def test_unknown_repository_and_tag(registry: DockerRegistry, tmp_path: Path) -> None:
    with OciClient(settings(tmp_path, registry)) as client:
        client.push(f"{registry.address}/echo:0.1", ECHO.read_bytes())
        cached_before = cached(tmp_path)
        assert cached_before == []  # push caches nothing
        wire = refused(client, f"{registry.address}/nope:0.1", OciRepositoryUnknown, tmp_path)
        assert wire == f"Unable to fetch {registry.address}/nope:0.1: repository unknown (404)"
        wire = refused(client, f"{registry.address}/echo:0.9", OciManifestUnknown, tmp_path)
        assert wire == f"Unable to fetch {registry.address}/echo:0.9: manifest unknown (404)"
        refused(client, f"{registry.address}/echo@sha256:" + "0" * 64, OciManifestUnknown, tmp_path)


def test_registry_down(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with OciClient(OciSettings(cache_dir=tmp_path / "cache", allowed_insecure=(address,))) as client:
        wire = refused(client, f"{address}/echo:0.1", OciRegistryUnreachable, tmp_path)
    assert wire == f"Unable to fetch {address}/echo:0.1: registry {address} unreachable (Connection refused)"


def test_registry_timeout(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        cfg = OciSettings(cache_dir=tmp_path / "cache", allowed_insecure=(address,), timeout_s=0.3)
        with OciClient(cfg) as client:
            wire = refused(client, f"{address}/echo:0.1", OciTimeout, tmp_path)
    assert wire == f"Unable to fetch {address}/echo:0.1: registry {address} did not answer within 0.3s"


@pytest.mark.parametrize("tag", [":latest", ""])
def test_latest_and_tagless_refused(registry: DockerRegistry, tmp_path: Path, tag: str) -> None:
    ref = f"{registry.address}/echo{tag}"
    with OciClient(settings(tmp_path, registry)) as client:
        client.push(f"{registry.address}/echo:latest", ECHO.read_bytes())
        assert refused(client, ref, LatestRefused, tmp_path) == LATEST_WIRE
    with OciClient(settings(tmp_path, registry, allow_latest=True)) as client:
        assert client.pull(ref).content == ECHO.read_bytes()


def test_plain_http_registry_not_listed_as_insecure(registry: DockerRegistry, tmp_path: Path) -> None:
    with OciClient(settings(tmp_path)) as client:
        wire = refused(client, f"{registry.address}/echo:0.1", OciTlsFailed, tmp_path)
    assert registry.address in wire and "add it to WASMCLOUD_OCI_ALLOWED_INSECURE" in wire


def test_layer_digest_mismatch(registry: DockerRegistry, tmp_path: Path) -> None:
    data = ECHO.read_bytes()
    ref = f"{registry.address}/echo:0.1"
    with OciClient(settings(tmp_path, registry)) as client:
        client.push(ref, data)
        layer = "sha256:" + hashlib.sha256(data).hexdigest()
        blob = registry.blob_path(layer)
        blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, one byte flipped
        wire = refused(client, ref, OciDigestMismatch, tmp_path)
    assert wire.startswith(f"Unable to fetch {ref}: content digest mismatch: expected {layer}, got sha256:")


def test_unsupported_layer_media_type_and_no_layers(registry: DockerRegistry, tmp_path: Path) -> None:
    ref = f"{registry.address}/echo:0.1"
    with OciClient(settings(tmp_path, registry)) as client:
        client.push(ref, ECHO.read_bytes(), media_type="application/vnd.oci.image.layer.v1.tar+gzip")
        wire = refused(client, ref, IncompatibleLayerMediaType, tmp_path)
        assert wire == f"Unable to fetch {ref}: incompatible layer media type 'application/vnd.oci.image.layer.v1.tar+gzip'"
        put_manifest(registry, "empty", "0.1", image(registry, "empty", []))
        refused(client, f"{registry.address}/empty:0.1", OciNoLayers, tmp_path)


# --- auth ------------------------------------------------------------------------------------------------


def test_basic_auth(tmp_path: Path) -> None:
    with DockerRegistry(tmp_path / "registry", htpasswd=("alice", "s3cret")) as reg:
        ref = f"{reg.address}/private/echo:0.1"
        data = ECHO.read_bytes()
        with OciClient(settings(tmp_path, reg)) as anonymous:
            with pytest.raises(OciAuthRequired) as info:
                anonymous.push(ref, data)
            assert info.value.wire == (f"Unable to push {ref}: authentication required by {reg.address} (401); "
                                       "no credentials are configured for it")
            refused(anonymous, ref, OciAuthRequired, tmp_path)
        wrong = {reg.address: RegistryCredentials("alice", "wrong")}
        with OciClient(settings(tmp_path, reg, credentials=wrong)) as client:
            wire = refused(client, ref, OciAuthRejected, tmp_path)
            assert wire == f"Unable to fetch {ref}: credentials for {reg.address} were rejected (401)"
        good = {reg.address: RegistryCredentials("alice", "s3cret")}
        with OciClient(settings(tmp_path, reg, credentials=good)) as client:
            client.push(ref, data)
            assert client.pull(ref).content == data
        # §8.2 step 5: OCI_REGISTRY credentials apply to refs starting with OCI_REGISTRY.
        env = (reg.address, "alice", "s3cret")
        with OciClient(settings(tmp_path / "env", reg, env_registry=env)) as client:
            assert client.pull(ref).content == data
    assert reg.pid is not None and not pid_alive(reg.pid)


def test_bearer_token_flow(tmp_path: Path) -> None:
    with TokenServer(tmp_path / "tokens", users={"bob": "hunter2"}, anonymous_pull=True) as tokens, \
            DockerRegistry(tmp_path / "registry", token_auth=tokens.auth) as reg:
        ref = f"{reg.address}/private/echo:0.1"
        data = ECHO.read_bytes()
        with OciClient(settings(tmp_path, reg)) as anonymous:
            with pytest.raises(OciAuthRequired):  # anonymous tokens only grant pull
                anonymous.push(ref, data)
        creds = {reg.address: RegistryCredentials("bob", "hunter2")}
        with OciClient(settings(tmp_path, reg, credentials=creds)) as client:
            client.push(ref, data)
        assert ("repository:private/echo:pull,push", "bob") in tokens.requests
        with OciClient(settings(tmp_path, reg)) as anonymous:
            assert anonymous.pull(ref).content == data
        assert ("repository:private/echo:pull", None) in tokens.requests
        tokens.anonymous_pull = False
        with OciClient(settings(tmp_path / "b", reg)) as anonymous:
            refused(anonymous, ref, OciAuthRequired, tmp_path / "b")
        wrong = {reg.address: RegistryCredentials("bob", "nope")}
        with OciClient(settings(tmp_path / "c", reg, credentials=wrong)) as client:
            refused(client, ref, OciAuthRejected, tmp_path / "c")


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    client = OciClient(settings(tmp_path))
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.pull("127.0.0.1:1/echo:0.1")
