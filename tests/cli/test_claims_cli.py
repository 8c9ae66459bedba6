"""hostcore.cli.claims: `claims inspect|sign` and `keys gen`, driven through argparse."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest

from hostcore.cli.claims import register
from hostcore.native.claims import extract_claims

FIXTURES = Path(
    os.environ.get(
        "HOSTCORE_FIXTURES",
        Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "actors",
    )
)
ECHO = FIXTURES / "echo.wasm"
ECHO_ACCOUNT = "ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XVKYK4BEJWGVAOOQHZMCW"
ECHO_MODULE = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="hostcore")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    return int(args.func(args))


def test_inspect_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("claims", "inspect", ECHO) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "Echo - Module"
    assert lines[1].split() == ["Account", ECHO_ACCOUNT]
    assert lines[2].split() == ["Module", ECHO_MODULE]
    assert lines[3].split() == ["Expires", "never"]
    assert lines[4].split() == ["Can", "Be", "Used", "immediately"]
    assert lines[5].split() == ["Version", "0.3.4", "(4)"]
    assert lines[6].split() == ["Call", "Alias", "(Not", "set)"]
    assert lines[7:] == ["Capabilities", "HTTP Server", "Tags", "None"]


def test_inspect_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("claims", "inspect", ECHO, "-o", "json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "account": ECHO_ACCOUNT, "module": ECHO_MODULE, "expires": "never",
        "can_be_used": "immediately", "version": "0.3.4", "revision": 4,
        "capabilities": ["HTTP Server"], "tags": "None", "call_alias": "(Not set)", "name": "Echo",
    }


def test_inspect_jwt_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("claims", "inspect", ECHO, "--jwt-only") == 0
    assert capsys.readouterr().out.strip() == extract_claims(ECHO.read_bytes()).jwt


def test_inspect_tampered_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tampered = tmp_path / "echo.wasm"
    shutil.copyfile(ECHO, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF  # deep inside the code section
    tampered.write_bytes(bytes(data))
    assert run("claims", "inspect", tampered) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert "Failed to extract claims from module" in err_lines[0]


@pytest.mark.parametrize("content", [b"plain text\n", b""])
def test_inspect_not_wasm(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    assert run("claims", "inspect", path) == 1
    assert "not a WebAssembly module" in capsys.readouterr().err


def test_inspect_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("claims", "inspect", tmp_path / "nope.wasm") == 1
    assert capsys.readouterr().err.startswith("error: cannot read")


@pytest.mark.parametrize(
    ("keytype", "prefix"),
    [("account", "A"), ("cluster", "C"), ("module", "M"), ("server", "N"), ("operator", "O"),
     ("user", "U"), ("service", "V")],
)
def test_keys_gen(capsys: pytest.CaptureFixture[str], keytype: str, prefix: str) -> None:
    assert run("keys", "gen", keytype, "-o", "json") == 0
    pair = json.loads(capsys.readouterr().out)
    assert pair["public_key"][0] == prefix and pair["seed"][:2] == f"S{prefix}"
    assert run("keys", "gen", keytype) == 0
    assert capsys.readouterr().out.startswith(f"Public Key: {prefix}")


def _gen(capsys: pytest.CaptureFixture[str], keytype: str) -> dict[str, str]:
    assert run("keys", "gen", keytype, "-o", "json") == 0
    result: dict[str, str] = json.loads(capsys.readouterr().out)
    return result


def test_sign_with_given_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    account, module = _gen(capsys, "account"), _gen(capsys, "module")
    out = tmp_path / "signed.wasm"
    assert run("claims", "sign", FIXTURES / "ponger_s.wasm", "-o", out, "--name", "Pong",
               "--cap", "wasmcloud:keyvalue", "--cap", "wasmcloud:messaging", "--tag", "t1",
               "--rev", "3", "--ver", "0.9.0", "--call-alias", "My Pong",
               "--issuer", account["seed"], "--subject", module["seed"],
               "--expires-in-days", "10") == 0
    assert "Successfully signed" in capsys.readouterr().out
    claims = extract_claims(out.read_bytes())
    assert (claims.issuer, claims.public_key) == (account["public_key"], module["public_key"])
    assert (claims.name, claims.rev, claims.version, claims.call_alias) == ("Pong", 3, "0.9.0", "my_pong")
    assert claims.caps == ("wasmcloud:keyvalue", "wasmcloud:messaging") and claims.tags == ("t1",)
    assert claims.expires_human() == "in a week"
    assert run("claims", "inspect", out, "-o", "json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["capabilities"] == ["K/V Store", "Messaging"] and shown["tags"] == "t1"


def test_sign_generates_missing_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "signed.wasm"
    assert run("claims", "sign", FIXTURES / "ponger_s.wasm", "-o", out, "--name", "p") == 0
    err = capsys.readouterr().err
    assert "seed: SA" in err and "seed: SM" in err
    assert extract_claims(out.read_bytes()).name == "p"


def test_sign_refuses_wrong_seed_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = _gen(capsys, "module")
    out = tmp_path / "signed.wasm"
    assert run("claims", "sign", ECHO, "-o", out, "--name", "x", "--issuer", module["seed"]) == 1
    assert "account" in capsys.readouterr().err
    assert not out.exists()


def test_not_yet_valid_module_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "later.wasm"
    assert run("claims", "sign", FIXTURES / "ponger_s.wasm", "-o", out, "--name", "p",
               "--not-before-days", "2") == 0
    capsys.readouterr()
    assert run("claims", "inspect", out) == 1
    assert "Claims token cannot be used yet" in capsys.readouterr().err
