"""Traces across the lattice, /metrics, and JSON logs from real host processes (issue 8).

Hosts export spans with OTEL_TRACES_EXPORTER=hostcore_file: every process of every host appends
JSON lines to one file. Span export emits no lattice event, so those files (and /metrics) are
polled with a deadline; everything else waits for events.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from conftest import EventWatcher, HostProcess, fixture_actor, started_host
from oci_registry import DockerRegistry
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from prometheus_client.parser import text_string_to_metric_families
from test_chunking_policy import BIG_ECHO_WAT, FORWARD_WAT, write_actor
from test_host_spine import instance_pids
from test_oci_actors import reg_push

from hostcore.control.client import ControlClient
from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.procutil import free_port, wait_for
from hostcore.telemetry.fileexport import read_spans
from hostcore.natsconn import flush_in_order

ECHO = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
HTTP_GET = msgpack.packb({"method": "GET", "path": "/", "queryString": "", "header": {}, "body": b""})


@pytest.fixture
def test_tracer() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    """The test's own spans (the caller's side), kept in memory. Not the global provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests"), exporter
    provider.shutdown()


@pytest.fixture
def client(nc: Any, lattice: str) -> ControlClient:
    return ControlClient(nc, lattice_prefix=lattice, timeout_s=5.0)


def tracing_env(path: Path, **extra: str) -> dict[str, str]:
    return {"OTEL_TRACES_EXPORTER": "hostcore_file", "HOSTCORE_TRACES_FILE": str(path), **extra}


def hex_ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


async def spans_of(path: Path, trace_id: str, until: Callable[[list[dict[str, Any]]], bool],
                   timeout: float = 15.0) -> list[dict[str, Any]]:
    """The spans of `trace_id` in `path`, once `until` holds for them (fails the test otherwise)."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal found
        found = [s for s in read_spans(path) if s["trace_id"] == trace_id]
        return until(found)

    if not await asyncio.to_thread(wait_for, ready, timeout):
        pytest.fail(f"spans of trace {trace_id} incomplete after {timeout}s: {[s['name'] for s in found]}")
    return found


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def event(span: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [e for e in span["events"] if e["name"] == name]
    assert matches, f"no {name!r} event on {span['name']}: {[e['name'] for e in span['events']]}"
    return matches[0]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path / "registry") as reg:
        yield reg


async def test_scale_with_traceparent_traces_the_oci_fetch(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        registry: DockerRegistry, tmp_path: Path, test_tracer: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, mine = test_tracer
    traces = tmp_path / "traces.jsonl"
    ref = f"{registry.address}/actors/echo:0.3.4"
    await reg_push(ref, fixture_actor("echo.wasm"))
    host = await started_host(host_factory, events, env=tracing_env(
        traces, WASMCLOUD_OCI_ALLOWED_INSECURE=registry.address))

    with tracer.start_as_current_span("dashboard.scale") as root:
        ack = await client.scale_actor(host.host_id, ECHO, ref, 2)
    assert ack.accepted
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO, count=2)
    trace_id, root_id = hex_ids(root)
    assert [s.name for s in mine.get_finished_spans()] == ["dashboard.scale"]

    spans = await spans_of(traces, trace_id, lambda found: bool(named(found, "start_actor_from_oci")))
    [ctl] = named(spans, "ctl.scale")
    [scale] = named(spans, "scale_actor")
    [start] = named(spans, "start_actor_from_oci")
    [prepare] = named(spans, "prepare_actor")
    # One tree under the caller's span, across ControlServer, ActorSupervisor and NativeWorker.
    assert ctl["parent_id"] == root_id and ctl["kind"] == "SERVER"
    assert scale["parent_id"] == ctl["span_id"] and scale["attributes"]["count"] == 2
    assert start["parent_id"] == scale["span_id"]
    assert prepare["parent_id"] == start["span_id"]
    assert len({ctl["pid"], scale["pid"], prepare["pid"]}) == 3, "expected three processes"
    assert {s["resource"]["hostcore.host_id"] for s in spans} == {host.host_id}

    size = fixture_actor("echo.wasm").stat().st_size
    assert event(start, "OCI image fetched")["attributes"]["byte_size"] == size
    assert event(prepare, "OCI image fetched")["attributes"]["byte_size"] == size
    assert event(start, "claims verified")["attributes"]["public_key"] == ECHO
    assert event(start, "policy decision")["attributes"]["permitted"] is True
    started = [e for e in start["events"] if e["name"] == "instance started"]
    assert len(started) == 2 and start["status"] == "UNSET"
    assert ctl["attributes"]["result"] == "ok"


async def test_invocation_chain_across_two_hosts_keeps_one_trace(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient,
        tmp_path: Path, test_tracer: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, _ = test_tracer
    traces = tmp_path / "traces.jsonl"
    cluster = KeyPair.generate(KeyKind.CLUSTER)
    echo_path, echo_key = write_actor(tmp_path, "bigecho", BIG_ECHO_WAT)
    fwd_path, fwd_key = write_actor(tmp_path, "forward", FORWARD_WAT.replace("KEY", echo_key))
    # Both hosts trust each other's invocations (one cluster key), and share the span file.
    hosts = [host_factory(env=tracing_env(traces, WASMCLOUD_CLUSTER_SEED=cluster.seed)).start() for _ in range(2)]
    await events.wait_for("host_started", count=2, timeout=40)
    for host, path, key in ((hosts[0], fwd_path, fwd_key), (hosts[1], echo_path, echo_key)):
        assert (await client.scale_actor(host.host_id, key, f"file://{path}", 1)).accepted
        await events.wait_for("actor_started", lambda d, k=key: d["public_key"] == k)

    with tracer.start_as_current_span("caller") as root:
        resp = await client.call_actor(cluster, fwd_key, "Go", b"round trip")
    assert resp.error is None, resp.error
    assert resp.msg == b"round trip"
    trace_id, root_id = hex_ids(root)

    spans = await spans_of(traces, trace_id, lambda found: len(named(found, "handle_invocation")) == 2
                     and bool(named(found, "host_call")))
    [outer] = [s for s in named(spans, "handle_invocation") if s["attributes"]["actor_key"] == fwd_key]
    [inner] = [s for s in named(spans, "handle_invocation") if s["attributes"]["actor_key"] == echo_key]
    [call] = named(spans, "host_call")
    assert outer["parent_id"] == root_id
    assert call["parent_id"] == outer["span_id"] and call["kind"] == "CLIENT"
    assert call["attributes"]["namespace"] == echo_key
    assert inner["parent_id"] == call["span_id"]
    assert outer["resource"]["hostcore.host_id"] == hosts[0].host_id
    assert inner["resource"]["hostcore.host_id"] == hosts[1].host_id
    assert outer["attributes"]["operation"] == "Go" and inner["attributes"]["operation"] == "Echo.Echo"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed with the Prometheus client's parser."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def poll_metrics(url: str, check: Callable[[dict[Any, float]], bool], what: str,
                       timeout: float = 10.0) -> dict[Any, float]:
    """Scrape until `check` holds (an instance pushes its counts every HOSTCORE_METRICS_FLUSH_MS)."""
    latest: dict[Any, float] = {}

    def ready() -> bool:
        nonlocal latest
        try:
            latest = scrape(url)
        except urllib.error.URLError:  # the launcher serves /metrics just after host_started
            return False
        return check(latest)

    if not await asyncio.to_thread(wait_for, ready, timeout):
        pytest.fail(f"/metrics never showed {what}: " + ", ".join(
            f"{n}{dict(lbl)}={v}" for (n, lbl), v in sorted(latest.items()) if n.startswith("hostcore")))
    return latest


async def test_metrics_move_after_calls_errors_and_a_kill(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, nc: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    host = await started_host(host_factory, events, env={"HOSTCORE_METRICS_PORT": str(port),
                                                         "HOSTCORE_METRICS_FLUSH_MS": "100"})
    assert (await client.scale_actor(host.host_id, ECHO, f"file://{fixture_actor('echo.wasm')}", 1)).accepted
    await events.wait_for("actor_started")
    for _ in range(5):
        resp = await client.call_actor(host.cluster_key, ECHO, "HttpServer.HandleRequest", HTTP_GET)
        assert resp.error is None
    stranger = KeyPair.generate(KeyKind.CLUSTER)
    refused = await client.call_actor(stranger, ECHO, "HttpServer.HandleRequest", HTTP_GET)
    assert refused.error is not None

    calls, errors = "hostcore_actor_invocations_total", "hostcore_actor_invocation_errors_total"
    first = await poll_metrics(url, lambda m: sample(m, calls, actor_key=ECHO) == 6 and sample(m, errors, actor_key=ECHO) == 1,
                         "6 invocations and 1 error")
    assert sample(first, "hostcore_actor_invocation_duration_seconds_count", actor_key=ECHO) == 6
    assert sample(first, "hostcore_actor_invocation_duration_seconds_bucket", actor_key=ECHO, le="+Inf") == 6
    assert 0 < sample(first, "hostcore_actor_invocation_duration_seconds_sum", actor_key=ECHO) < 6 * 2.0
    assert sample(first, "hostcore_actor_instances", actor_key=ECHO) == 1
    assert sample(first, "hostcore_actor_restarts_total", actor_key=ECHO) == 0
    assert sample(first, "hostcore_control_requests_total", command="scale", result="ok") == 1
    assert sample(first, "hostcore_oci_pull_bytes_total", scheme="file") == fixture_actor("echo.wasm").stat().st_size
    assert sample(first, "hostcore_oci_pull_duration_seconds_count", scheme="file", result="ok") == 1
    malformed = await nc.request(f"wasmbus.ctl.{host.lattice}.cmd.{host.host_id}.scale", b"{", timeout=5)
    assert json.loads(malformed.data)["accepted"] is False

    [victim] = instance_pids(host.mark)
    os.kill(victim, signal.SIGKILL)
    await events.wait_for("actor_stopped", lambda d: d["public_key"] == ECHO)
    await events.wait_for("actor_started", lambda d: d["public_key"] == ECHO, count=2)
    for _ in range(3):
        assert (await client.call_actor(host.cluster_key, ECHO, "HttpServer.HandleRequest", HTTP_GET)).error is None
    # The dead instance's counts stay (its file remains); the new one's add to them.
    after = await poll_metrics(url, lambda m: sample(m, "hostcore_actor_restarts_total", actor_key=ECHO) == 1
                         and sample(m, calls, actor_key=ECHO) >= 9 and sample(m, "hostcore_actor_instances", actor_key=ECHO) == 1,
                         "a restart and 9 invocations")
    assert sample(after, errors, actor_key=ECHO) == 1
    assert sample(after, "hostcore_control_requests_total", command="scale", result="ok") == 1
    assert sample(after, "hostcore_control_requests_total", command="scale", result="error") == 1


async def test_nats_reconnects_are_counted(host_factory: Callable[..., HostProcess], tmp_path: Path,
                                           lattice: str) -> None:
    nats_port, metrics_port = free_port(), free_port()
    server = EmbeddedNatsServer(tmp_path / "nats", port=nats_port).start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        watcher = EventWatcher()
        await nc.subscribe(f"wasmbus.evt.{lattice}", cb=watcher.on_msg)
        await flush_in_order(nc)
        host = host_factory(nats_url=server.url, env={"HOSTCORE_METRICS_PORT": str(metrics_port)}).start()
        await watcher.wait_for("host_started", timeout=30)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        await poll_metrics(url, lambda m: True, "an answer")
        server.close()
        server = EmbeddedNatsServer(tmp_path / "nats", port=nats_port).start()
        # control, events and lattice each reconnect (every connection counts, by its role)
        metrics = await poll_metrics(url, lambda m: all(
            sample(m, "hostcore_nats_reconnects_total", connection=c) >= 1 for c in ("ctl", "events", "lattice")),
            "reconnects of the ctl, events and lattice connections", 20.0)
        assert sample(metrics, "hostcore_nats_reconnects_total", connection="ctl") == 1
        host.stop()
    finally:
        await nc.close()
        server.close()


async def test_json_logs_carry_host_actor_instance_and_trace(
        host_factory: Callable[..., HostProcess], events: EventWatcher, client: ControlClient, tmp_path: Path,
        test_tracer: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, _ = test_tracer
    host = await started_host(host_factory, events, env=tracing_env(
        tmp_path / "traces.jsonl", WASMCLOUD_STRUCTURED_LOGGING_ENABLED="true"))
    logger = fixture_actor("randogenlogger_s.wasm")
    key = "MCLOGOFFRJ4WK5XC6Z6WM7A3SAVHPHKDAVG6OMZVOOC6RQCN5IOKPTQL"
    await client.scale_actor(host.host_id, key, f"file://{logger}", 1)
    [started] = await events.wait_for("actor_started", lambda d: d["public_key"] == key)
    instance_id = started["data"]["instance_id"]

    with tracer.start_as_current_span("call") as call_span:
        resp = await client.call_actor(host.cluster_key, key, "HttpServer.HandleRequest", HTTP_GET)
        assert resp.error is None, resp.error
        await client.scale_actor(host.host_id, "M" + "B" * 55, "", 1)  # refused in the supervisor
    trace_id, _ = hex_ids(call_span)

    def lines() -> list[dict[str, Any]]:
        out = []
        for text in host.log().splitlines():
            if text.startswith("{"):
                out.append(json.loads(text))  # every JSON line parses
        return out

    def guest_lines() -> list[dict[str, Any]]:
        return [e for e in lines() if e["logger"] == "hostcore.guest" and e.get("trace_id") == trace_id]

    assert await asyncio.to_thread(wait_for, lambda: len(guest_lines()) >= 3, 10), \
        f"no traced guest log lines:\n{host.log()[-3000:]}"
    for entry in guest_lines():
        assert entry["host_id"] == host.host_id and entry["lattice"] == host.lattice
        assert entry["actor_key"] == key and entry["instance_id"] == instance_id
        assert entry["level"] in ("INFO", "WARNING", "ERROR") and entry["span_id"]
    assert await asyncio.to_thread(wait_for, lambda: any(
        e["message"] == "scale failed" and e.get("trace_id") == trace_id for e in lines()), 10), \
        "the refused scale was not logged under the trace"
    [refused] = [e for e in lines() if e["message"] == "scale failed"]
    assert refused["actor_key"] == "M" + "B" * 55 and refused["host_id"] == host.host_id
    assert "instance_id" not in refused  # supervisor process: no instance in its context
    started_lines = [e for e in lines() if e["message"] == "host started"]
    assert started_lines and started_lines[0]["lattice"] == host.lattice
