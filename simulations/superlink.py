"""SuperLinks seen from the command side: start a simulation one, talk to one with ``flwr``,
and stop the one a plain ``flwr run .`` left running (``semcom-stop``).

``semcom-run`` starts a simulation SuperLink of its own (:func:`start_simulation_superlink`:
neutral working directory, runtime dependency installation off, free ports) and follows the
run with ``flwr list`` (:func:`run_status`). A plain ``flwr run .`` instead starts Flower's
*managed* local SuperLink (127.0.0.1:39091, or ``$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``), which
keeps running after the run; ``semcom-stop`` stops it with its SuperExec and simulation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import psutil

from simulations.processes import (
    ProcessGuard,
    alive,
    find_processes,
    flwr_bin,
    free_ports,
    stop_pids,
)


def toml_str(value: str) -> str:
    """``value`` as a TOML basic string (a JSON string is one)."""
    return json.dumps(value)


def write_connection(flwr_home: Path, name: str, lines: list[str]) -> None:
    """``$FLWR_HOME/config.toml`` with the one connection ``name`` (its default)."""
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n' + "\n".join([f"[superlink.{name}]", *lines]) + "\n"
    )


def _wait_health(port: int, proc: subprocess.Popen[bytes], log_file: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"error: flower-superlink exited with code {proc.returncode}; see {log_file}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(
        f"error: flower-superlink did not start within {timeout:.0f} s; see {log_file}"
    )


def start_simulation_superlink(
    guard: ProcessGuard, flwr_home: Path, env: dict[str, str], cwd: str
) -> tuple[int, subprocess.Popen[bytes]]:
    """Start an insecure simulation SuperLink on free loopback ports; return (port, process).

    Runtime dependency installation is off; its log is ``flwr_home/superlink.log``.
    """
    port, control = free_ports(2)
    log_file = flwr_home / "superlink.log"
    link = guard.start(
        [
            flwr_bin("flower-superlink"),
            "--insecure",
            "--simulation",
            "--disable-runtime-dependency-installation",
            "--control-api-address",
            f"127.0.0.1:{control}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-file",
            str(log_file),
        ],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"[semcom-run] SuperLink pid {link.pid} on 127.0.0.1:{port} (log {log_file})", flush=True)
    _wait_health(port, link, log_file, timeout=60)
    return port, link


def parse_run_id(stdout: str) -> int | None:
    """The run id that ``flwr run --format json`` printed, or None."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    for key in ("run-id", "run_id"):
        if key in data:
            return int(data[key])
    return None


def run_status(flwr: str, run_id: int, connection: str, env: dict[str, str], cwd: str) -> str:
    """``finished:completed|failed|stopped``, ``running``, ... as ``flwr list`` reports it."""
    out = subprocess.run(
        [flwr, "list", connection, "--run-id", str(run_id), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )
    try:
        data = json.loads(out.stdout)
        runs = data.get("runs", data if isinstance(data, list) else [])
        for run in runs:
            if int(run.get("run-id", run.get("run_id", -1))) == run_id:
                return str(run.get("status", "unknown"))
    except (json.JSONDecodeError, AttributeError, ValueError):
        pass
    return "unknown: " + (out.stdout + out.stderr).strip()[-300:]


def managed_superlinks(port: str | None = None) -> list[psutil.Process]:
    """Flower's managed local SuperLinks (``flower-superlink --simulation --port PORT``)."""
    port = port or os.environ.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091")

    def match(proc: psutil.Process) -> bool:
        cmd = proc.cmdline()
        if not any(Path(a).name == "flower-superlink" for a in cmd[:2]):
            return False
        pairs = zip(cmd, cmd[1:])
        return "--simulation" in cmd and ("--port", port) in pairs

    return find_processes(match)


def stop_main(argv: list[str] | None = None) -> int:
    """``semcom-stop``: stop the managed local SuperLink that ``flwr run .`` left running."""
    p = argparse.ArgumentParser(
        prog="semcom-stop",
        description="Stop the local SuperLink that a plain `flwr run .` started (Flower leaves "
        "it running), with its SuperExec and any simulation still running on it.",
    )
    p.add_argument(
        "--port",
        default=None,
        help="its HTTP port (default: $FLWR_LOCAL_SUPERLINK_HTTP_API_PORT or 39091)",
    )
    args = p.parse_args(argv)
    links = managed_superlinks(args.port)
    if not links:
        print("[semcom-stop] no local SuperLink running")
        return 0
    family: list[int] = []
    for link in links:
        family.append(link.pid)
        try:
            family += [c.pid for c in link.children(recursive=True)]
        except psutil.Error:
            continue
    stop_pids(family)
    left = [pid for pid in family if alive(pid)]
    print(
        f"[semcom-stop] stopped SuperLink pid {', '.join(str(x.pid) for x in links)} "
        f"and {len(family) - len(links)} child process(es)"
        + (f"; still there: {left}" if left else "")
    )
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(stop_main())
