"""Run ``semcom-run`` from a test, and find the processes a run left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulations.processes import processes_with_env

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
    return processes_with_env("FLWR_HOME", str(flwr_home))
