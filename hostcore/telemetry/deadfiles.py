"""The metric files of dead processes, folded into one file per metric type at each scrape.

prometheus_client's multiprocess mode keeps one file per process and type (`counter_<pid>.db`,
`histogram_<pid>.db`) and its collector sums them all, so a dead process's counts stay in the
totals, and its files stay on disk: every instance that ever ran leaves two, and every scrape
reads all of them. `multiprocess.mark_process_dead` is no answer: it only deletes the files of
`live*` gauges, whose values are meant to vanish with their process; counts must not.

`fold_dead` adds each dead process's counter and histogram values into `counter_dead.db` /
`histogram_dead.db` (the collector reads them as it reads any process's file: it sums counter and
histogram samples over files, and so keeps the same totals) and then deletes the dead file. Folding
and reading happen under one exclusive lock on the directory (`FoldingCollector`), so a scrape never
sees a value twice or not at all. Gauge files are left alone: their modes (mostrecent, max, …) are
not sums, and the long-lived processes write them.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hostcore.procutil import pid_alive

__all__ = ["FOLDED_TYPES", "FoldingCollector", "fold_dead"]

FOLDED_TYPES = ("counter", "histogram")  # summed over files by the collector: safe to fold
_PER_PID = re.compile(r"^(counter|histogram)_(\d+)\.db$")
_LOCK_NAME = "fold.lock"  # not *.db: the collector never reads it


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Exclusive across processes and threads (each holder opens its own file description)."""
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fold_dead(directory: Path) -> int:
    """Fold the counter and histogram files of every dead process in `directory` into the
    `<type>_dead.db` files and delete them; returns how many files were folded. The caller holds
    the directory lock (FoldingCollector does)."""
    from prometheus_client.mmap_dict import MmapedDict

    folded = 0
    targets: dict[str, Any] = {}
    try:
        for path in sorted(directory.iterdir()):
            match = _PER_PID.match(path.name)
            if match is None or pid_alive(int(match[2])):
                continue
            typ = match[1]
            target = targets.get(typ)
            if target is None:
                target = targets[typ] = MmapedDict(str(directory / f"{typ}_dead.db"))
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(path)):
                total, _ = target.read_value(key)  # zeros too: a series shown before stays shown
                target.write_value(key, total + value, timestamp)
            path.unlink()
            folded += 1
    finally:
        for target in targets.values():
            target.close()
    return folded


class FoldingCollector:
    """prometheus_client's MultiProcessCollector for `directory`, folding dead processes' files
    first, under the directory lock. `registry`: registered there when given."""

    def __init__(self, directory: Path, registry: Any = None) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._directory = directory
        self._inner = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]
        if registry is not None:
            registry.register(self)

    def collect(self) -> list[Any]:
        with _directory_lock(self._directory):
            fold_dead(self._directory)
            return list(self._inner.collect())
