"""The context file that lets the CLI find the local host, and where the CLI's settings come from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostcore.config import load_client_config
from hostcore.context import (
    LocalContext,
    announce_host,
    context_path,
    live_context,
    read_context,
    remove_context,
    second_host_refusal,
    write_context,
)
from hostcore.nats_server import EmbeddedNatsServer, port_free
from hostcore.procutil import free_port


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener standing in for a live NATS port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def ctx_for(pid: int, port: int, **kw: str) -> LocalContext:
    return LocalContext(nats_url=f"nats://127.0.0.1:{port}", lattice_prefix=kw.get("lattice", "blue"),
                        ctl_topic_prefix="wasmbus.ctl", host_id="NHOST", pid=pid,
                        cluster_seed=kw.get("seed", "SCSEED"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_written_context_is_private_and_reads_back(tmp_path: Path, listener: socket.socket) -> None:
    ctx = ctx_for(os.getpid(), listener.getsockname()[1])
    write_context(tmp_path / "d", ctx)
    assert context_path(tmp_path / "d").stat().st_mode & 0o777 == 0o600
    assert read_context(tmp_path / "d") == ctx == live_context(tmp_path / "d")
    assert "SCSEED" not in repr(ctx)


def test_a_context_of_a_dead_host_is_removed(tmp_path: Path, listener: socket.socket) -> None:
    write_context(tmp_path, ctx_for(dead_pid(), listener.getsockname()[1]))
    assert live_context(tmp_path) is None
    assert not context_path(tmp_path).exists()


def test_a_context_whose_nats_does_not_answer_is_ignored_but_kept(tmp_path: Path) -> None:
    write_context(tmp_path, ctx_for(os.getpid(), free_port()))  # live process, closed port: maybe starting
    assert live_context(tmp_path) is None
    assert context_path(tmp_path).exists()


def test_garbage_is_no_context(tmp_path: Path) -> None:
    context_path(tmp_path).write_text("{not json")
    assert read_context(tmp_path) is None and live_context(tmp_path) is None
    context_path(tmp_path).write_text('{"nats_url": "x"}')  # fields missing
    assert read_context(tmp_path) is None


def test_the_first_live_host_keeps_the_context_and_only_its_owner_removes_it(
        tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    first = ctx_for(os.getpid(), port)
    assert announce_host(tmp_path, first)
    assert not announce_host(tmp_path, ctx_for(os.getppid(), port, lattice="other"))
    remove_context(tmp_path, os.getppid())  # not its file
    assert read_context(tmp_path) == first
    assert f"--nats-url nats://127.0.0.1:{port}" in second_host_refusal(tmp_path)
    remove_context(tmp_path, os.getpid())
    assert read_context(tmp_path) is None and second_host_refusal(tmp_path) == ""
    write_context(tmp_path, ctx_for(dead_pid(), port))  # a stale one does not block a new host
    assert announce_host(tmp_path, first) and read_context(tmp_path) == first


def test_client_settings_flags_then_environment_then_context_then_default(
        tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    write_context(tmp_path / ".hostcore", ctx_for(os.getpid(), port))
    home = {"HOME": str(tmp_path)}
    cfg = load_client_config(environ=home)
    assert (cfg.nats_url, cfg.lattice_prefix, cfg.cluster_seed, cfg.nats_source) == (
        f"nats://127.0.0.1:{port}", "blue", "SCSEED", "the local host")
    assert load_client_config(environ={"HOSTCORE_DATA_DIR": str(tmp_path / ".hostcore")}).lattice_prefix == "blue"
    cfg = load_client_config(lattice_prefix="x", cluster_seed="SCFLAG", environ=home)
    assert (cfg.lattice_prefix, cfg.cluster_seed) == ("x", "SCFLAG")
    cfg = load_client_config(environ={**home, "WASMCLOUD_NATS_URL": "nats://elsewhere:4222"})
    # A URL from elsewhere: the context's lattice and seed are not borrowed for it.
    assert (cfg.nats_url, cfg.lattice_prefix, cfg.cluster_seed) == ("nats://elsewhere:4222", "default", "")
    assert load_client_config(nats_url="nats://flag:1", environ={**home, "WASMCLOUD_NATS_URL": "nats://e:2"}).nats_url \
        == "nats://flag:1"
    cfg = load_client_config(nats_url=f"nats://127.0.0.1:{port}", environ=home)  # named, but it is the local host
    assert (cfg.lattice_prefix, cfg.cluster_seed, cfg.nats_source) == ("blue", "SCSEED", "--nats-url")
    cfg = load_client_config(environ={"HOME": str(tmp_path / "nobody")})
    assert (cfg.nats_url, cfg.nats_source) == ("nats://127.0.0.1:4222", "default")


def test_embedded_nats_takes_the_preferred_port_or_a_free_one(tmp_path: Path, listener: socket.socket) -> None:
    busy = listener.getsockname()[1]
    assert not port_free("127.0.0.1", busy)
    with EmbeddedNatsServer(tmp_path / "a", preferred_port=busy) as server:
        assert server.port != busy
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
            assert conn.recv(4) == b"INFO"
    wanted = free_port()
    with EmbeddedNatsServer(tmp_path / "b", preferred_port=wanted) as server:
        assert server.port == wanted and server.url == f"nats://127.0.0.1:{wanted}"
