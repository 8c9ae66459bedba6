"""hostcore.cli.par: `par create` and `par inspect`, driven through argparse."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from hostcore.cli.par import register
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.native.par import read_par


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="hostcore")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    return int(args.func(args))


def test_create_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    linux, mac = tmp_path / "prov-linux", tmp_path / "prov-mac"
    linux.write_bytes(b"linux bytes")
    mac.write_bytes(b"mac bytes")
    subject, issuer = KeyPair.generate(KeyKind.SERVICE), KeyPair.generate(KeyKind.ACCOUNT)
    out = tmp_path / "prov.par.gz"
    assert run("par", "create", "--name", "Prov", "--vendor", "acme", "--capid", "wasmcloud:testing",
               "--arch", "x86_64-linux", "--binary", linux, "--arch", "aarch64-macos", "--binary", mac,
               "--issuer", issuer.seed, "--subject", subject.seed, "--rev", "2", "--ver", "0.2.0", "-o", out) == 0
    assert subject.public_key in capsys.readouterr().out
    par = read_par(out.read_bytes())
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert par.targets == {"x86_64-linux": b"linux bytes", "aarch64-macos": b"mac bytes"}
    assert (par.claims.public_key, par.claims.issuer) == (subject.public_key, issuer.public_key)

    assert run("par", "inspect", out, "-o", "json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["public_key"] == subject.public_key and info["capability_contract_id"] == "wasmcloud:testing"
    assert info["targets"] == ["aarch64-macos", "x86_64-linux"] and info["revision"] == 2
    assert run("par", "inspect", out) == 0
    text = capsys.readouterr().out
    assert "Prov - Provider Archive" in text and "x86_64-linux" in text and "0.2.0" in text


def test_generated_keys_and_plain_tar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "b"
    binary.write_bytes(b"x")
    out = tmp_path / "p.par"
    assert run("par", "create", "--name", "P", "--vendor", "v", "--capid", "c:d", "--arch", "x86_64-linux",
               "--binary", binary, "-o", out) == 0
    assert "Generated subject (service) seed" in capsys.readouterr().out
    assert out.read_bytes()[:2] != b"\x1f\x8b"
    read_par(out.read_bytes())


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "b"
    binary.write_bytes(b"x")
    base = ("par", "create", "--name", "P", "--vendor", "v", "--capid", "c:d", "-o", tmp_path / "o.par")
    assert run(*base, "--arch", "x86_64-linux", "--binary", binary, "--binary", binary) == 1
    assert "one --binary for each --arch" in capsys.readouterr().err
    assert run(*base, "--arch", "x86_64-linux", "--binary", binary,
               "--subject", KeyPair.generate(KeyKind.MODULE).seed) == 1
    assert "must be a service key" in capsys.readouterr().err
    bad = tmp_path / "bad.par"
    bad.write_bytes(b"garbage" * 100)
    assert run("par", "inspect", bad) == 1
    assert capsys.readouterr().err.startswith("error: Invalid provider archive")
