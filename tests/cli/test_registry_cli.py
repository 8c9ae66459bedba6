"""hostcore.cli.registry: `reg push` / `reg pull` against a real registry (tests/oci_registry.py)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostcore.cli.registry import register
from hostcore.procutil import free_port
from oci_registry import DockerRegistry

FIXTURES = Path(
    os.environ.get(
        "HOSTCORE_FIXTURES",
        Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "actors",
    )
)
ECHO = FIXTURES / "echo.wasm"


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="hostcore")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    return int(args.func(args))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as reg:
        yield reg


def test_push_then_pull(registry: DockerRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"{registry.address}/echo:0.1"
    assert run("reg", "push", ref, ECHO, "--insecure") == 0
    pushed = capsys.readouterr()
    assert pushed.out.startswith(f"Pushed {ref}: sha256:")
    assert "Uploading 100%" in pushed.err  # echo.wasm is > 1 MiB: progress on stderr
    digest = pushed.out.split()[-1]
    out = tmp_path / "echo.wasm"
    assert run("reg", "pull", ref, "-o", out, "--insecure") == 0
    assert out.read_bytes() == ECHO.read_bytes()
    assert capsys.readouterr().out == f"Pulled {ref}: {digest} ({out.stat().st_size} bytes) to {out}\n"


def test_small_file_no_progress_and_media_type(registry: DockerRegistry, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "small.wasm"
    small.write_bytes(b"\0asm\1\0\0\0")
    ref = f"{registry.address}/small:1"
    assert run("reg", "push", ref, small, "--insecure", "--media-type", "application/wasm") == 0
    assert capsys.readouterr().err == ""
    assert run("reg", "pull", ref, "-o", tmp_path / "out.wasm", "--insecure") == 0
    assert (tmp_path / "out.wasm").read_bytes() == small.read_bytes()


def test_latest_needs_flag(registry: DockerRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"{registry.address}/echo:latest"
    assert run("reg", "push", ref, ECHO, "--insecure") == 0
    capsys.readouterr()
    out = tmp_path / "echo.wasm"
    assert run("reg", "pull", ref, "-o", out, "--insecure") == 1
    err = capsys.readouterr().err
    assert err == ("error: Fetching images tagged 'latest' is currently prohibited in this host. "
                   "This option can be overridden with WASMCLOUD_OCI_ALLOW_LATEST\n")
    assert not out.exists()
    assert run("reg", "pull", ref, "-o", out, "--insecure", "--allow-latest") == 0


def test_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with DockerRegistry(tmp_path / "registry", htpasswd=("alice", "s3cret")) as reg:
        ref = f"{reg.address}/echo:0.1"
        assert run("reg", "push", ref, ECHO, "--insecure") == 1
        assert capsys.readouterr().err == (f"error: Unable to push {ref}: authentication required by "
                                           f"{reg.address} (401); no credentials are configured for it\n")
        assert run("reg", "push", ref, ECHO, "--insecure", "-u", "alice", "-p", "s3cret") == 0
        out = tmp_path / "echo.wasm"
        assert run("reg", "pull", ref, "-o", out, "--insecure", "-u", "alice", "-p", "s3cret") == 0
        assert out.read_bytes() == ECHO.read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("reg", "pull", "localhost:5000/Echo:1", "-o", "x"), "error: Invalid OCI reference 'localhost:5000/Echo:1'"),
        (("reg", "push", "localhost:5000/echo:1", "/nonexistent/file.wasm"), "error: cannot read /nonexistent/"),
    ],
)
def test_errors_are_one_line(argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(*argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_registry_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"127.0.0.1:{free_port()}/echo:0.1"
    assert run("reg", "pull", ref, "-o", tmp_path / "x.wasm", "--insecure") == 1
    assert "unreachable (Connection refused)" in capsys.readouterr().err
