"""Processes the launchers start: Flower's executables, their environment, and stopping them.

Flower starts ``flower-superexec`` and ``flwr-serverapp`` in sessions of their own, so killing
a process group is not enough: :class:`ProcessGuard` collects every descendant (psutil)
before the first signal and stops them all by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def flwr_bin(name: str) -> str:
    """Path of a Flower executable: this venv's, else the one on ``PATH``."""
    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"error: `{name}` not found; install the project (scripts/setup.sh)")
    return str(found)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together while choosing)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process we start."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            # Flower starts flower-superexec / flwr-serverapp by name: use this venv's.
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        }
    )
    env.setdefault("RAY_TMPDIR", str(Path(tempfile.gettempdir()) / "ray-semcom"))
    return env


def descendants(pid: int) -> list[int]:
    """All descendant PIDs of ``pid``, including those in sessions of their own."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def send_signal(pid: int, sig: int) -> None:
    """``kill(pid, sig)``; a process that is gone (or not ours) is skipped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_pids(pids: Iterable[int], grace: float = 15.0) -> None:
    """SIGTERM every PID, wait up to ``grace`` seconds for all, then SIGKILL the rest."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, rest = psutil.wait_procs(procs, timeout=grace)
    for proc in rest:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(rest, timeout=5)


class ProcessGuard:
    """Start processes in their own session; on exit stop them and all their descendants."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self, grace: float = 15.0) -> None:
        family = [d for p in self.procs for d in descendants(p.pid)]  # before any signal
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        stop_pids(family, grace)  # detached children (superexec, serverapp, ray)
        for proc in self.procs:  # kill leftovers of each group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def find_processes(match: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    """Live (non-zombie) processes other than this one for which ``match`` is true."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and match(proc):
                found.append(proc)
    return found


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs of live processes whose environment has ``name=value`` (e.g. a ``FLWR_HOME``)."""
    return [p.pid for p in find_processes(lambda p: p.environ().get(name) == value)]


def has_args(proc: psutil.Process, args: Iterable[str]) -> bool:
    """Whether every one of ``args`` is a word of ``proc``'s command line."""
    cmd = proc.cmdline()
    return all(a in cmd for a in args)
