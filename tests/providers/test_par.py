"""hostcore.native.par: provider archive round trip, refusal of bad archives, extraction and
the bundled providers' PARs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from hostcore.errors import (
    ParClaimsInvalid,
    ParHashMismatch,
    ParIncomplete,
    ParTargetMissing,
    ParTooShort,
    ParUnreadable,
)
from hostcore.native.wascap_jwt import encode_jwt, parse_token
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.native.par import (
    BUILTIN_PROVIDERS,
    builtin_par,
    builtin_provider_key,
    create_par,
    extract_binary,
    native_target,
    read_par,
)

ISSUER = KeyPair.generate(KeyKind.ACCOUNT)
SUBJECT = KeyPair.generate(KeyKind.SERVICE)
BINARIES = {"x86_64-linux": b"\x7fELF linux binary", "aarch64-macos": b"\xcf\xfa\xed\xfe mac binary"}


def _par(**kw: object) -> bytes:
    args: dict[str, object] = dict(binaries=BINARIES, name="Test Provider", vendor="acme", capid="wasmcloud:testing",
                                   issuer=ISSUER, subject=SUBJECT, rev=3, ver="1.2.3")
    args.update(kw)
    return create_par(**args)  # type: ignore[arg-type]


def _members(data: bytes) -> dict[str, bytes]:
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_round_trip_gzip_and_plain() -> None:
    for compress in (True, False):
        data = _par(compress=compress)
        assert (data[:2] == b"\x1f\x8b") is compress
        par = read_par(data)
        assert par.targets == BINARIES
        c = par.claims
        assert (c.public_key, c.issuer, c.name, c.capid, c.vendor, c.rev, c.ver, c.revision) == (
            SUBJECT.public_key, ISSUER.public_key, "Test Provider", "wasmcloud:testing", "acme", 3, "1.2.3", 3)
        assert c.target_hashes["x86_64-linux"] == hashlib.sha256(BINARIES["x86_64-linux"]).hexdigest().upper()


def test_layout_is_wash_compatible() -> None:
    """claims.jwt plus `{target}.bin` members; claims in wascap's provider shape."""
    members = _members(_par())
    assert sorted(members) == ["aarch64-macos.bin", "claims.jwt", "x86_64-linux.bin"]
    token = parse_token(members["claims.jwt"].decode())
    assert list(token.claims) == ["jti", "iat", "iss", "sub", "wascap", "wascap_revision"]
    assert list(token.claims["wascap"]) == ["name", "capid", "vendor", "rev", "ver", "target_hashes"]
    assert token.signature_valid()


def test_reads_bare_target_member_names_and_one_target() -> None:
    members = _members(_par(compress=False))
    renamed = {("x86_64-linux" if k == "x86_64-linux.bin" else k): v for k, v in members.items()}
    par = read_par(_tar(renamed), target="x86_64-linux")
    assert par.targets == {"x86_64-linux": BINARIES["x86_64-linux"]}


def test_revision_falls_back_to_iat() -> None:
    assert read_par(_par(rev=None, issued_at=1_700_000_000)).claims.revision == 1_700_000_000


def test_hash_mismatch_refused() -> None:
    members = _members(_par())
    members["x86_64-linux.bin"] = b"tampered"
    with pytest.raises(ParHashMismatch) as err:
        read_par(_tar(members))
    assert err.value.wire == "File hash and verify hash do not match for 'x86_64-linux'"


def test_binary_without_a_hash_refused() -> None:
    members = _members(_par())
    members["riscv64-linux.bin"] = b"extra"
    with pytest.raises(ParHashMismatch, match="riscv64-linux"):
        read_par(_tar(members))


def test_missing_target_refused_on_use() -> None:
    par = read_par(_par())
    with pytest.raises(ParTargetMissing) as err:
        par.binary("mips-plan9")
    assert err.value.wire == "Provider archive has no binary for target 'mips-plan9' (has: aarch64-macos, x86_64-linux)"


@pytest.mark.parametrize("members", [{"claims.jwt": b"x"}, {"x86_64-linux.bin": b"x"}, {}])
def test_incomplete_archive_refused(members: dict[str, bytes]) -> None:
    with pytest.raises(ParIncomplete) as err:
        read_par(_tar(members))
    assert err.value.wire == "Not enough files found in provider archive. Is this a complete archive?"


def test_garbage_refused() -> None:
    with pytest.raises(ParTooShort):
        read_par(b"x")
    with pytest.raises(ParUnreadable):
        read_par(b"this is not a tar file at all" * 40)
    with pytest.raises(ParUnreadable):
        read_par(b"\x1f\x8b" + b"broken gzip")


def _with_claims(claims: dict[str, object], signer: KeyPair = ISSUER) -> bytes:
    members = _members(_par())
    members["claims.jwt"] = encode_jwt(claims, signer).encode()
    return _tar(members)


def _claims(**wascap: object) -> dict[str, object]:
    meta: dict[str, object] = {"name": "x", "capid": "wasmcloud:testing", "vendor": "acme",
                               "target_hashes": {t: hashlib.sha256(b).hexdigest().upper() for t, b in BINARIES.items()}}
    meta.update(wascap)
    return {"jti": "j" * 22, "iat": int(time.time()), "iss": ISSUER.public_key, "sub": SUBJECT.public_key,
            "wascap": {k: v for k, v in meta.items() if v is not None}}


def test_bad_claims_refused() -> None:
    with pytest.raises(ParClaimsInvalid, match="Token signature is invalid"):
        read_par(_with_claims(_claims(), signer=KeyPair.generate(KeyKind.ACCOUNT)))
    with pytest.raises(ParClaimsInvalid, match="Token has expired"):
        read_par(_with_claims({**_claims(), "exp": 1}))
    with pytest.raises(ParClaimsInvalid, match="capid"):
        read_par(_with_claims(_claims(capid=None)))
    with pytest.raises(ParClaimsInvalid, match="target_hashes"):
        read_par(_with_claims(_claims(target_hashes=None)))
    with pytest.raises(ParClaimsInvalid, match="service"):
        read_par(_with_claims({**_claims(), "sub": KeyPair.generate(KeyKind.MODULE).public_key}))
    members = _members(_par())
    members["claims.jwt"] = b"not.a.jwt"
    with pytest.raises(ParClaimsInvalid, match="Decode error"):
        read_par(_tar(members))


def test_create_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        _par(binaries={})
    with pytest.raises(ValueError):
        _par(subject=KeyPair.generate(KeyKind.MODULE))


def test_native_target_shape() -> None:
    arch, _, os_name = native_target().partition("-")
    assert arch and os_name in ("linux", "macos", "windows")


def test_extract_binary_is_executable_idempotent_and_replaces_stale(tmp_path: Path) -> None:
    par = read_par(_par())
    path = extract_binary(par, "x86_64-linux", tmp_path / "cache", filename="wasmcloud_testing_default")
    assert path.read_bytes() == BINARIES["x86_64-linux"]
    assert path.stat().st_mode & stat.S_IXUSR
    inode = path.stat().st_ino
    assert extract_binary(par, "x86_64-linux", tmp_path / "cache", filename="wasmcloud_testing_default") == path
    assert path.stat().st_ino == inode  # unchanged file kept
    path.write_bytes(b"stale")
    extract_binary(par, "x86_64-linux", tmp_path / "cache", filename="wasmcloud_testing_default")
    assert path.read_bytes() == BINARIES["x86_64-linux"]
    assert sorted(os.listdir(tmp_path / "cache")) == ["wasmcloud_testing_default"]  # no temp files left
    with pytest.raises(ParTargetMissing):
        extract_binary(par, "mips-plan9", tmp_path / "cache")


def test_builtin_pars(tmp_path: Path) -> None:
    for name, spec in BUILTIN_PROVIDERS.items():
        data = builtin_par(name, tmp_path)
        par = read_par(data)
        assert par.claims.public_key == builtin_provider_key(name)
        assert par.claims.capid == spec.capid
        assert {"x86_64-linux", "aarch64-linux", "x86_64-macos", "aarch64-macos"} <= set(par.targets)
        assert builtin_par(name, tmp_path) == data  # cached
        assert (tmp_path / f"{name}.par.gz").read_bytes() == data
    # Stable identities: a different build (another jti/iat) keeps the same subject key.
    assert read_par(builtin_par("keyvalue")).claims.public_key == builtin_provider_key("keyvalue")
    assert builtin_provider_key("httpserver") != builtin_provider_key("keyvalue")
    with pytest.raises(KeyError):
        builtin_par("nope")


def test_builtin_launcher_runs_the_module(tmp_path: Path) -> None:
    """The launcher execs the recorded interpreter on the provider module, with an empty env."""
    par = read_par(builtin_par("keyvalue"))
    launcher = extract_binary(par, native_target(), tmp_path)
    out = subprocess.run([str(launcher)], input=b"\n", capture_output=True, env={}, timeout=60)
    assert out.returncode == 1
    assert b"stdin is empty - expecting host data configuration" in out.stderr


def test_stale_cache_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "httpserver.par.gz").write_bytes(b"corrupt")
    data = builtin_par("httpserver", tmp_path)
    assert read_par(data).claims.capid == "wasmcloud:httpserver"
    assert (tmp_path / "httpserver.par.gz").read_bytes() == data
