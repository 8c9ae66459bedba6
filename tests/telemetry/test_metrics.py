"""Multiprocess metrics: the hot-path meter, the text exposition, the ASGI app and the server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually
from telemetry_support import metrics, samples  # noqa: F401 (fixture)

from hostcore.telemetry.metrics import (
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    HostMetrics,
    MetricsApp,
    MetricsServer,
    metrics_dir,
    prepare_metrics_dir,
    render_metrics,
)

KEY = "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
HIST = "hostcore_actor_invocation_duration_seconds"


def directory_of(m: HostMetrics) -> Path:
    return Path(os.environ[MULTIPROC_ENV])


def test_meter_flush_matches_one_observe_per_call(metrics: HostMetrics) -> None:
    meter = metrics.invocation_meter(KEY)
    reference = metrics.invocation_seconds.labels("reference")
    durations = [0.00005, 0.0001, 0.0003, 0.002, 0.002, 0.7, 42.0]  # on bounds, between, beyond
    for d in durations:
        meter.observe(d)
        reference.observe(d)
    meter.error()
    # Nothing written before the first flush: an instance never called costs no value files.
    assert ("hostcore_actor_invocations_total", (("actor_key", KEY),)) not in samples(directory_of(metrics))
    meter.flush()
    meter.flush()  # nothing new: no change
    got = samples(directory_of(metrics))
    for bound in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]:
        mine = got[(f"{HIST}_bucket", (("actor_key", KEY), ("le", bound)))]
        assert mine == got[(f"{HIST}_bucket", (("actor_key", "reference"), ("le", bound)))], bound
    assert got[(f"{HIST}_count", (("actor_key", KEY),))] == len(durations)
    assert got[(f"{HIST}_sum", (("actor_key", KEY),))] == pytest.approx(sum(durations))
    assert got[("hostcore_actor_invocations_total", (("actor_key", KEY),))] == len(durations)
    assert got[("hostcore_actor_invocation_errors_total", (("actor_key", KEY),))] == 1


def test_meter_flushes_on_its_loop_and_at_stop(metrics: HostMetrics) -> None:
    meter = metrics.invocation_meter(KEY)

    async def run() -> None:
        meter.start(asyncio.get_running_loop(), 0.01)
        meter.observe(0.001)
        # no flush() here: the meter's own periodic loop must write the sample
        await eventually(lambda: samples(directory_of(metrics)).get(
            ("hostcore_actor_invocations_total", (("actor_key", KEY),))) == 1, 5.0, "the periodic flush", interval=0.01)
        meter.observe(0.001)

    asyncio.run(run())
    meter.stop()
    meter.stop()
    assert samples(directory_of(metrics))[("hostcore_actor_invocations_total", (("actor_key", KEY),))] == 2


def test_host_level_series(metrics: HostMetrics) -> None:
    metrics.instances.labels(KEY).set(3)
    metrics.instances.labels(KEY).set(2)
    metrics.restarts.labels(KEY).inc()
    metrics.oci_pull("oci", True, 1820240, 0.2)
    metrics.oci_pull("oci", False, 0, 5.0)
    metrics.control_request("scale", "ok")
    metrics.nats_reconnect("ctl")
    got = samples(directory_of(metrics))
    assert got[("hostcore_actor_instances", (("actor_key", KEY),))] == 2
    assert got[("hostcore_actor_restarts_total", (("actor_key", KEY),))] == 1
    assert got[("hostcore_oci_pull_bytes_total", (("scheme", "oci"),))] == 1820240
    assert got[("hostcore_oci_pull_duration_seconds_count", (("result", "error"), ("scheme", "oci")))] == 1
    assert got[("hostcore_control_requests_total", (("command", "scale"), ("result", "ok")))] == 1
    assert got[("hostcore_nats_reconnects_total", (("connection", "ctl"),))] == 1


def test_a_process_that_uses_no_metric_writes_no_file(metrics: HostMetrics) -> None:
    metrics.close()  # made nothing: nothing to close
    metrics.close()
    assert list(directory_of(metrics).iterdir()) == []


CHILD = """
import sys
from pathlib import Path
from hostcore.telemetry.metrics import HostMetrics
m = HostMetrics(Path(sys.argv[1]))
meter = m.invocation_meter("MKEY")
for _ in range(int(sys.argv[2])):
    meter.observe(0.001)
meter.flush()
"""


def test_processes_add_up_and_dead_ones_still_count(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    for n in (3, 4):  # two instance processes that have exited since
        subprocess.run([sys.executable, "-c", CHILD, str(directory), str(n)], check=True)
    got = samples(directory)
    assert got[("hostcore_actor_invocations_total", (("actor_key", "MKEY"),))] == 7


def test_prepare_empties_the_directory_and_exports_it(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "metrics" / "NHOST"
    env: dict[str, str] = {}
    prepare_metrics_dir(directory, env)
    (directory / "counter_1.db").write_bytes(b"stale")
    prepare_metrics_dir(directory, env)
    assert list(directory.iterdir()) == [] and env[MULTIPROC_ENV] == str(directory)


def test_metrics_dir_is_per_host() -> None:
    class Cfg:
        data_dir = Path("/d")
        host_id = "NABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert metrics_dir(Cfg()) == Path("/d/metrics/NABCDEFGHIJKLMNO")  # type: ignore[arg-type]


async def asgi_get(app: MetricsApp, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": "/metrics"}, receive, send)
    return sent[0]["status"], dict(sent[0].get("headers", [])), sent[1]["body"]


async def test_asgi_app_serves_the_text(metrics: HostMetrics) -> None:
    metrics.restarts.labels(KEY).inc()
    app = MetricsApp(directory_of(metrics))
    status, headers, body = await asgi_get(app)
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain")
    assert f'hostcore_actor_restarts_total{{actor_key="{KEY}"}} 1.0'.encode() in body
    assert body == render_metrics(directory_of(metrics))[0]
    assert (await asgi_get(app, "POST"))[0] == 405


def test_server_serves_over_http(metrics: HostMetrics) -> None:
    metrics.control_request("la", "error")
    with MetricsServer(directory_of(metrics), 0) as server:
        with urllib.request.urlopen(server.url, timeout=5) as reply:
            text = reply.read().decode()
        server.close()
    assert 'hostcore_control_requests_total{command="la",result="error"} 1.0' in text
