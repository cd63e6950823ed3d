"""Find the processes a test's Flower run left behind (by the run's own FLWR_HOME)."""

from __future__ import annotations

import os
from pathlib import Path


def processes_with_flwr_home(flwr_home: Path) -> list[int]:
    """PIDs of live (non-zombie) processes started with ``FLWR_HOME=flwr_home``, not this one."""
    needle = f"FLWR_HOME={flwr_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            found.append(int(entry.name))
    return found
