"""Run ``semcom-run`` from a test, and find the processes a run left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_launcher(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m simulations.launch ARGS`` in the checkout; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "simulations.launch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
