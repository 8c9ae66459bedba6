"""Provider archives (PAR, protocol.md §8.4) and the PARs of the providers bundled with hostcore.

A PAR is a tar, usually gzipped, holding `claims.jwt` (wascap provider claims signed by an
account, subject = the provider's `V…` service key) and one executable per target, stored as
`{arch}-{os}.bin`. This is the layout of wasmCloud's `provider-archive` crate, which also reads a
member's target as its file stem, so a bare `x86_64-linux` member is read the same way.

Reading verifies the claims JWT (structure, times, signature by `iss`) and every binary's
upper-hex SHA-256 against `wascap.target_hashes`. Everything here is pure and thread-safe except
`extract_binary` and `builtin_par`, which write files atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import platform
import shlex
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hostcore import __version__
from hostcore.errors import (
    ParClaimsInvalid,
    ParError,
    ParHashMismatch,
    ParIncomplete,
    ParTargetMissing,
    ParTooShort,
    ParUnreadable,
    TokenError,
)
from hostcore.native.nkeys import KeyKind, KeyPair, encode_seed, is_valid_public_key
from hostcore.native.wascap_jwt import WASCAP_REVISION, decode_jwt, encode_jwt, new_jti

__all__ = [
    "BUILTIN_PROVIDERS",
    "BuiltinProvider",
    "ProviderArchive",
    "ProviderClaims",
    "builtin_par",
    "builtin_provider_key",
    "create_par",
    "extract_binary",
    "native_target",
    "read_par",
]

CLAIMS_FILE = "claims.jwt"
_BINARY_SUFFIX = ".bin"
_GZIP_MAGIC = b"\x1f\x8b"

# Rust's std::env::consts names, which wash uses for targets (`{ARCH}-{OS}`).
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}
_OS_NAMES = {"linux": "linux", "darwin": "macos", "win32": "windows", "cygwin": "windows"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderClaims:
    """The verified claims of a PAR (wascap `Claims<CapabilityProvider>`). Immutable."""

    public_key: str  # `sub`, the provider's identity (V…)
    issuer: str  # `iss`, the signing account (A…)
    name: str | None
    capid: str  # the capability contract id, e.g. wasmcloud:httpserver
    vendor: str
    rev: int | None
    ver: str | None
    issued_at: int
    expires: int | None
    target_hashes: dict[str, str]
    config_schema: Any = None
    jwt: str = field(repr=False)

    @property
    def revision(self) -> int:
        # QUIRK: as for actors (§5.6), a missing or zero `rev` is reported as the `iat` stamp.
        return self.rev if self.rev is not None and self.rev > 0 else self.issued_at


@dataclass(frozen=True, slots=True)
class ProviderArchive:
    """A verified PAR: its claims and the executables it holds, by target (`x86_64-linux`)."""

    claims: ProviderClaims
    targets: dict[str, bytes] = field(repr=False)

    def binary(self, target: str) -> bytes:
        """The executable for `target`. Raises ParTargetMissing naming the targets it has."""
        try:
            return self.targets[target]
        except KeyError:
            raise ParTargetMissing(target, tuple(sorted(self.targets))) from None


def native_target() -> str:
    """This machine's PAR target, `{arch}-{os}` as Rust spells them (e.g. `x86_64-linux`)."""
    machine = platform.machine().lower() or "unknown"
    arch = _ARCH_ALIASES.get(machine, machine)
    os_name = next((name for prefix, name in _OS_NAMES.items() if sys.platform.startswith(prefix)),
                   sys.platform)
    return f"{arch}-{os_name}"


def _sha256_upper(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def _tar_member(name: str, data: bytes, mode: int) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0  # fixed metadata: the same inputs give the same tar bytes
    return info, io.BytesIO(data)


def create_par(
    *,
    binaries: dict[str, bytes],
    name: str,
    vendor: str,
    capid: str,
    issuer: KeyPair,
    subject: KeyPair,
    rev: int | None = None,
    ver: str | None = None,
    compress: bool = True,
    issued_at: int | None = None,
) -> bytes:
    """Build a PAR: `claims.jwt` signed by `issuer` for `subject`, then `{target}.bin` members.

    Claims follow wascap's field order (`jti iat iss sub wascap wascap_revision`; in `wascap`:
    `name capid vendor rev? ver? target_hashes`). Targets are written in sorted order with zero
    mtimes, so only the JWT's `jti`/`iat` vary between two builds of the same inputs. Raises
    ValueError for no binaries or a subject that is not a service (V) key.
    """
    if not binaries:
        raise ValueError("a provider archive needs at least one binary")
    if subject.kind is not KeyKind.SERVICE:
        raise ValueError(f"the subject of a provider archive must be a service (V) key, not {subject.kind.name}")
    meta: dict[str, Any] = {"name": name, "capid": capid, "vendor": vendor}
    if rev is not None:
        meta["rev"] = rev
    if ver is not None:
        meta["ver"] = ver
    meta["target_hashes"] = {target: _sha256_upper(binaries[target]) for target in sorted(binaries)}
    claims = {
        "jti": new_jti(),
        "iat": int(time.time()) if issued_at is None else issued_at,
        "iss": issuer.public_key,
        "sub": subject.public_key,
        "wascap": meta,
        "wascap_revision": WASCAP_REVISION,
    }
    token = encode_jwt(claims, issuer).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(*_tar_member(CLAIMS_FILE, token, 0o644))
        for target in sorted(binaries):
            tar.addfile(*_tar_member(f"{target}{_BINARY_SUFFIX}", binaries[target], 0o755))
    data = raw.getvalue()
    return gzip.compress(data, compresslevel=9, mtime=0) if compress else data


def _parse_claims(token: str) -> ProviderClaims:
    try:
        claims = decode_jwt(token)
    except TokenError as e:
        raise ParClaimsInvalid(e.wire) from e
    meta = claims.get("wascap")
    if not isinstance(meta, dict):
        raise ParClaimsInvalid("no wascap provider metadata")
    for key in ("capid", "vendor"):
        if not isinstance(meta.get(key), str):
            raise ParClaimsInvalid(f"wascap.{key} missing or not a string")
    hashes = meta.get("target_hashes")
    if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
        raise ParClaimsInvalid("wascap.target_hashes missing or not a map of strings")
    name, ver, rev = meta.get("name"), meta.get("ver"), meta.get("rev")
    if name is not None and not isinstance(name, str) or ver is not None and not isinstance(ver, str):
        raise ParClaimsInvalid("wascap.name / wascap.ver is not a string")
    if rev is not None and (type(rev) is not int or not -(2**31) <= rev < 2**31):
        raise ParClaimsInvalid("wascap.rev is not an i32")
    if not is_valid_public_key(claims["sub"], KeyKind.SERVICE):
        raise ParClaimsInvalid(f"subject {claims['sub']!r} is not a service (V) public key")
    return ProviderClaims(
        public_key=claims["sub"],
        issuer=claims["iss"],
        name=name,
        capid=meta["capid"],
        vendor=meta["vendor"],
        rev=rev,
        ver=ver,
        issued_at=claims["iat"],
        expires=claims.get("exp"),
        target_hashes=dict(hashes),
        config_schema=meta.get("config_schema"),
        jwt=token,
    )


def read_par(data: bytes, *, target: str | None = None) -> ProviderArchive:
    """Parse and verify a PAR (tar or tar.gz). With `target`, keep only that binary in memory.

    Order of checks (provider-archive's, plus the signature check it leaves to its callers):
    fewer than 2 bytes → ParTooShort; not a (gzipped) tar → ParUnreadable; no `claims.jwt` or no
    binary → ParIncomplete; claims unusable (JWT invalid, expired, bad signature, missing
    provider metadata) → ParClaimsInvalid; a binary whose SHA-256 differs from (or is missing in)
    `target_hashes` → ParHashMismatch. A `target` the archive lacks is not an error here; ask
    `ProviderArchive.binary`.
    """
    if len(data) < 2:
        raise ParTooShort()
    try:
        tar_bytes = gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data
        token: str | None = None
        found: dict[str, bytes] = {}
        seen_binary = False
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem = PurePosixPath(member.name).stem
                extracted = tar.extractfile(member)
                if extracted is None:
                    continue
                if stem == "claims":
                    token = extracted.read().decode("utf-8").strip()
                    continue
                seen_binary = True
                if target is None or stem == target:
                    found[stem] = extracted.read()
    except (OSError, EOFError, tarfile.TarError, UnicodeDecodeError, ValueError) as e:
        raise ParUnreadable(str(e) or type(e).__name__) from e
    if token is None or not seen_binary:
        raise ParIncomplete()
    claims = _parse_claims(token)
    for name, binary in found.items():
        expected = claims.target_hashes.get(name)
        if expected is None or expected.upper() != _sha256_upper(binary):
            raise ParHashMismatch(name)
    return ProviderArchive(claims, found)


def extract_binary(par: ProviderArchive, target: str, dest_dir: Path, *, filename: str | None = None) -> Path:
    """Write `par`'s executable for `target` to `dest_dir/filename` (default: the target) and
    return its path, mode 0755. Idempotent: an existing file with the same bytes is kept; any
    other file there is replaced atomically (write to a temp file, then rename), so a concurrent
    reader sees either the old or the new executable. Raises ParTargetMissing.
    """
    binary = par.binary(target)
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / (filename or target)
    try:
        if path.stat().st_size == len(binary) and path.read_bytes() == binary:
            os.chmod(path, 0o755)
            return path
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(binary)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- the providers bundled with hostcore -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltinProvider:
    """A provider shipped as a Python module and packaged on demand as a PAR."""

    name: str
    module: str
    capid: str
    vendor: str


BUILTIN_PROVIDERS: dict[str, BuiltinProvider] = {
    "httpserver": BuiltinProvider("HTTP Server", "hostcore.providers.httpserver", "wasmcloud:httpserver", "hostcore"),
    "keyvalue": BuiltinProvider("KeyValue Redis", "hostcore.providers.keyvalue", "wasmcloud:keyvalue", "hostcore"),
}
_BUILTIN_REV = 1
# The built-in PARs' keys are derived from fixed strings so that every host on every machine
# gives a bundled provider the same identity (links name providers by key). They are well-known
# development keys, published in this source file: NOT secrets, and anyone can sign a PAR
# claiming these identities. Production lattices should build and sign their own PARs.
_BUILTIN_KEY_DOMAIN = "hostcore builtin provider v1"
_LAUNCHER_TARGETS = ("x86_64-linux", "aarch64-linux", "x86_64-macos", "aarch64-macos")


def _well_known_key(kind: KeyKind, label: str) -> KeyPair:
    raw = hashlib.sha256(f"{_BUILTIN_KEY_DOMAIN}: {label}".encode()).digest()
    return KeyPair.from_seed(encode_seed(kind, raw))


def builtin_provider_key(name: str) -> str:
    """The fixed public (V…) key of bundled provider `name`. Raises KeyError if unknown."""
    BUILTIN_PROVIDERS[name]
    return _well_known_key(KeyKind.SERVICE, name).public_key


def _launcher(module: str, python: str) -> bytes:
    # The "binary" of a Python provider is a POSIX sh script. The host starts providers with an
    # environment cut down to the OTEL variables (§11.7), so neither PATH nor a virtualenv's
    # activation can be relied on: the script execs the interpreter that built the PAR (the one
    # with hostcore installed) if it still exists, else the first of $HOSTCORE_PYTHON and the
    # default path's `python3` that can import the provider's module.
    return (
        "#!/bin/sh\n"
        f"# hostcore bundled capability provider launcher: python -m {module}\n"
        f"# generated by hostcore {__version__}; the interpreter path was recorded at build time\n"
        f"recorded={shlex.quote(python)}\n"
        'if [ -x "$recorded" ]; then\n'
        f'  exec "$recorded" -m {module} "$@"\n'
        "fi\n"
        'for py in "$HOSTCORE_PYTHON" python3; do\n'
        '  [ -n "$py" ] || continue\n'
        f'  if "$py" -c "import {module}" >/dev/null 2>&1; then\n'
        f'    exec "$py" -m {module} "$@"\n'
        "  fi\n"
        "done\n"
        f'echo "hostcore provider launcher: no python with {module} installed" >&2\n'
        "exit 127\n"
    ).encode()


def _build_builtin(name: str, python: str) -> bytes:
    spec = BUILTIN_PROVIDERS[name]
    launcher = _launcher(spec.module, python)
    return create_par(
        binaries={target: launcher for target in _LAUNCHER_TARGETS},
        name=spec.name,
        vendor=spec.vendor,
        capid=spec.capid,
        issuer=_well_known_key(KeyKind.ACCOUNT, "issuer"),
        subject=_well_known_key(KeyKind.SERVICE, name),
        rev=_BUILTIN_REV,
        ver=__version__,
    )


def builtin_par(name: str, cache_dir: Path | None = None) -> bytes:
    """The PAR of bundled provider `name` ("httpserver" or "keyvalue"), for this interpreter.

    With `cache_dir`, reuse `{cache_dir}/{name}.par.gz` when it is a valid PAR whose launcher
    names this interpreter, else build it and write it there atomically. Subject and issuer are
    the fixed well-known keys (see `builtin_provider_key`). Raises KeyError for other names.
    """
    if name not in BUILTIN_PROVIDERS:
        raise KeyError(f"no bundled provider named {name!r}; have {sorted(BUILTIN_PROVIDERS)}")
    python = sys.executable or "python3"
    expected = _launcher(BUILTIN_PROVIDERS[name].module, python)
    path = cache_dir / f"{name}.par.gz" if cache_dir is not None else None
    if path is not None and path.is_file():
        data = path.read_bytes()
        try:
            cached = read_par(data)
        except ParError:
            cached = None
        if cached is not None and all(b == expected for b in cached.targets.values()):
            return data
    data = _build_builtin(name, python)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    return data
