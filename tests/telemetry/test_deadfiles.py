"""A dead process's counter and histogram files are folded into one file per type at a scrape:
the totals stay what they were, the files go; live processes' files and gauges stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from telemetry_support import metrics, samples  # noqa: F401 (fixture)

from hostcore.telemetry.metrics import MULTIPROC_ENV, HostMetrics

CHILD = """
import sys
from pathlib import Path
from hostcore.telemetry.metrics import HostMetrics
m = HostMetrics(Path(sys.argv[1]))
meter = m.invocation_meter("MKEY")
for _ in range(int(sys.argv[2])):
    meter.observe(0.001)
meter.error()
meter.flush()
m.instances.labels("MKEY").set(int(sys.argv[2]))
print(__import__("os").getpid())
"""
CALLS = ("hostcore_actor_invocations_total", (("actor_key", "MKEY"),))
ERRORS = ("hostcore_actor_invocation_errors_total", (("actor_key", "MKEY"),))
COUNT = ("hostcore_actor_invocation_duration_seconds_count", (("actor_key", "MKEY"),))
FAST = ("hostcore_actor_invocation_duration_seconds_bucket", (("actor_key", "MKEY"), ("le", "0.001")))


def run_child(directory: Path, calls: int) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, str(directory), str(calls)], check=True,
                         capture_output=True, text=True)
    return int(out.stdout)


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_dead_processes_fold_into_one_file_per_type_and_keep_their_counts(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    first, second = run_child(directory, 3), run_child(directory, 4)
    assert {f"counter_{first}.db", f"histogram_{second}.db"} <= names(directory)
    got = samples(directory)
    assert (got[CALLS], got[ERRORS], got[COUNT], got[FAST]) == (7, 2, 7, 7)
    left = names(directory)
    assert not any(str(pid) in name for pid in (first, second) for name in left if not name.startswith("gauge_"))
    assert {"counter_dead.db", "histogram_dead.db"} <= left

    third = run_child(directory, 5)  # folded on top of what is already folded
    got = samples(directory)
    assert (got[CALLS], got[ERRORS], got[COUNT], got[FAST]) == (12, 3, 12, 12)
    assert samples(directory)[CALLS] == 12  # a scrape with nothing to fold counts nothing twice
    assert f"counter_{third}.db" not in names(directory)
    # gauges are not sums: each dead process's gauge file stays as it was
    assert {f"gauge_mostrecent_{pid}.db" for pid in (first, second, third)} <= names(directory)


def test_a_live_process_keeps_its_files(metrics: HostMetrics) -> None:  # noqa: F811 (fixture)
    directory = Path(os.environ[MULTIPROC_ENV])
    meter = metrics.invocation_meter("MKEY")
    meter.observe(0.001)
    meter.flush()
    dead = run_child(directory, 2)
    assert samples(directory)[CALLS] == 3
    assert f"counter_{os.getpid()}.db" in names(directory)
    assert f"counter_{dead}.db" not in names(directory)
    meter.observe(0.001)
    meter.flush()  # this process goes on writing into its own file
    assert samples(directory)[CALLS] == 4
