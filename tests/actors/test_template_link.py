"""hostcore.actors.template_link: the ActorSupervisor's end of a real template process. The
template says it is ready once it listens, ends when told to (or when its supervisor's end
closes), and its death is seen and its process reaped; an instance it forks reports, and is halted,
through it."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import fixture_actor
from thespian.actors import ActorExitRequest

from hostcore.actors.compiler import compile_in_child
from hostcore.actors.template_link import TEMPLATE_TITLE, TemplateLink
from hostcore.config import load_config
from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.claims import extract_claims
from hostcore.tree.messages import (
    ForkInstances,
    InitTemplate,
    InstanceFailed,
    InstanceReports,
    InstancesExited,
    InstanceSpec,
    InstanceStarted,
    LatticeSnapshot,
    TemplateReady,
    ToInstances,
)

_WAIT_S = 30.0


def _config(tmp_path: Path, nats_url: str = "nats://127.0.0.1:1") -> Any:
    return load_config(["--nats-url", nats_url, "--data-dir", str(tmp_path)], environ={})


def _hear(link: TemplateLink, until: Any) -> tuple[list[Any], bool]:
    """What the template says (reports unpacked) until `until(heard, died)` holds."""
    heard: list[Any] = []
    died = False
    deadline = time.monotonic() + _WAIT_S
    while not until(heard, died):
        assert time.monotonic() < deadline, f"the template said only {heard} (died: {died})"
        ready, _, _ = select.select(link.fds(), [], [], 0.5)
        messages, died = link.receive(ready)
        for message in messages:
            heard.extend(message.reports if isinstance(message, InstanceReports) else [message])
    return heard, died


def _said(kind: type) -> Any:
    return lambda heard, _died: any(isinstance(m, kind) for m in heard)


def _died(_heard: list[Any], died: bool) -> bool:
    return died


def _title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def test_a_template_says_ready_then_ends_when_told(tmp_path: Path) -> None:
    link = TemplateLink.spawn(InitTemplate(config=_config(tmp_path), snapshot=LatticeSnapshot()))
    _hear(link, _said(TemplateReady))
    assert _title(link.pid).startswith(TEMPLATE_TITLE)
    assert os.getsid(link.pid) == link.pid  # its instances are scheduled apart from the tree
    link.send(ActorExitRequest())
    _hear(link, _died)
    assert not link.fds()
    with pytest.raises(ChildProcessError):  # reaped already
        os.waitpid(link.pid, os.WNOHANG)


def test_a_template_ends_when_its_supervisor_end_closes(tmp_path: Path) -> None:
    link = TemplateLink.spawn(InitTemplate(config=_config(tmp_path), snapshot=LatticeSnapshot()))
    _hear(link, _said(TemplateReady))
    pidfd = os.pidfd_open(link.pid)
    link.sock.close()  # as when the supervisor's process is gone
    try:
        assert select.select([pidfd], [], [], _WAIT_S)[0], "the template outlived its supervisor's end"
    finally:
        os.close(pidfd)
        os.waitpid(link.pid, 0)


@pytest.mark.parametrize(("host", "rehearse"), [("127.0.0.1", True), ("localhost", True), ("127.0.0.1", False)])
def test_a_forked_instance_reports_and_is_halted_through_the_link(tmp_path: Path, nats_server: EmbeddedNatsServer,
                                                                   host: str, rehearse: bool) -> None:
    """By address, the template rehearses an instance's start before its first fork (unless told
    not to, as a dead template's successor is); by name it does not (resolving it would start
    threads). Either way it forks with no thread but its own."""
    wasm = fixture_actor("echo.wasm").read_bytes()
    port = urllib.parse.urlsplit(nats_server.url).port
    config = _config(tmp_path, f"nats://{host}:{port}")
    spec = InstanceSpec(claims=extract_claims(wasm), cwasm_path=compile_in_child(wasm, tmp_path / "cache"),
                        image_ref="file://echo.wasm", annotations={})
    link = TemplateLink.spawn(InitTemplate(config=config, snapshot=LatticeSnapshot(), rehearse=rehearse))
    try:
        link.send(ForkInstances(spec=spec, instance_ids=("one",)))
        heard, _ = _hear(link, lambda h, _d: any(isinstance(m, (InstanceStarted, InstanceFailed)) for m in h))
        started = next(m for m in heard if isinstance(m, (InstanceStarted, InstanceFailed)))
        assert isinstance(started, InstanceStarted), started
        assert started.instance_id == "one" and started.pid > 0
        assert os.listdir(f"/proc/{link.pid}/task") == [str(link.pid)], "the template runs a thread"
        link.send(ToInstances(instance_ids=("one",), message=ActorExitRequest()))
        heard, _ = _hear(link, _said(InstancesExited))
        assert [m.instance_ids for m in heard if isinstance(m, InstancesExited)] == [("one",)]
    finally:
        link.send(ActorExitRequest())
        _hear(link, _died)


def test_the_template_process_loads_no_library_an_instance_does_not_need() -> None:
    # pyjwt brings the `cryptography` package (~3.5 MB of the template's memory, measured), and
    # the OpenTelemetry SDK is only for a host that traces: an instance parses tokens and checks
    # Ed25519 signatures, and with tracing off propagates no span.
    code = ("import sys; import hostcore.actors.template_main; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('jwt', 'cryptography') or m.startswith('opentelemetry.sdk')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=Path(__file__).parents[2])  # this checkout's hostcore
    assert out.stdout.strip() == "[]"
