"""Finding the processes a run started, by a marker variable in their environment.

Shared by the benchmarks (bench/_host.py) and the test suite (tests/conftest.py): each gives every
process it starts NAME=<run id> (children inherit it), then looks for leftovers here. Standard
library only, so neither side imports the other's tree.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["marked_pids", "stat_fields"]


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first, then ppid, ...);
    raises OSError once the process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def marked_pids(var: str, mark: str) -> list[int]:
    """Live (non-zombie) processes other than this one whose environment carries var=mark."""
    needle = f"{var}={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            state = stat_fields(int(entry.name))[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return pids
