"""Kill and restart one SuperNode of a running loopback deployment (failure-policy tests).

What an operator sees when an edge box dies and comes back: the box's SuperNode process and
everything it started (its SuperExec and ClientApp processes) are gone at once (SIGKILL), then
the same box starts ``deploy/supernode.sh`` again with the same arguments: the same partition,
local port and key, so the SuperLink gives it the same node ID. Its in-memory node state (the
ClientApp's ``context.state``) is lost with the process.

Flower 1.41's SuperLink activates a node only while it is registered or offline, and marks a
silent node offline two heartbeat intervals (2 × 30 s) after its last heartbeat, so
:func:`restart_supernode` waits until ``flwr supernode ls`` no longer shows the node online
before it starts it again, then until it is online.

Usage (with :func:`simulations.deploy_local.local_deployment`)::

    with local_deployment(2, workdir=work) as dep:
        ...  # a run in a thread
        kill_supernode(dep, partition=1)
        restart_supernode(dep, partition=1)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil

from simulations.deploy_local import LocalDeployment
from simulations.deploy_startup import DeploymentError, log_line
from simulations.processes import descendants

__all__ = ["kill_supernode", "restart_supernode", "supernode_process"]


def supernode_process(dep: LocalDeployment, partition: int) -> subprocess.Popen[bytes]:
    """The latest SuperNode process started for ``partition`` (``deploy/supernode.sh`` execs
    ``flower-supernode``, so its PID is the SuperNode's)."""
    found = []
    for proc in dep.guard.procs:
        args = [str(a) for a in proc.args] if isinstance(proc.args, (list, tuple)) else []
        is_node = bool(args) and args[0].endswith("supernode.sh") and "--partition-id" in args
        if is_node and args[args.index("--partition-id") + 1] == str(partition):
            found.append(proc)
    if not found:
        raise DeploymentError(f"no SuperNode of partition {partition} in this deployment")
    return found[-1]


def kill_supernode(dep: LocalDeployment, partition: int, timeout: float = 30.0) -> list[int]:
    """SIGKILL the SuperNode of ``partition`` and all its descendants at once; wait until they
    are gone. Returns their PIDs."""
    proc = supernode_process(dep, partition)
    family = [proc.pid, *descendants(proc.pid)]
    dep.record_pids()
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in family):
        if time.monotonic() > deadline:
            raise DeploymentError(f"SuperNode {partition}: processes {family} still alive")
        time.sleep(0.1)
    log_line(f"SuperNode {partition} killed (SIGKILL to pids {', '.join(map(str, family))})")
    return family


def restart_supernode(
    dep: LocalDeployment, partition: int, timeout: float = 180.0
) -> subprocess.Popen[bytes]:
    """Start the SuperNode of ``partition`` again with its original command (same port and
    key, so the same node ID), once the SuperLink no longer counts it online; wait until it
    is online. Its log is ``logs/supernode<k>-restart<i>.log``."""
    old = supernode_process(dep, partition)
    if old.poll() is None:
        raise DeploymentError(f"SuperNode {partition} (pid {old.pid}) is still running")
    node_id = dep.node_ids[partition]
    deadline = time.monotonic() + timeout
    while dep.node_status().get(node_id) == "online":  # activation needs it offline
        if time.monotonic() > deadline:
            raise DeploymentError(f"SuperNode {partition} (node {node_id}) never went offline")
        time.sleep(5.0)  # each `flwr supernode ls` costs ~0.5 s of CPU; offline takes ~60 s
    count = sum(1 for name in dep.logs if name.startswith(f"supernode{partition}-restart"))
    log = dep.workdir / "logs" / f"supernode{partition}-restart{count}.log"
    dep.logs[log.stem] = log
    with open(log, "wb") as fh:
        proc = dep.guard.start(
            [str(a) for a in old.args],  # type: ignore[union-attr]
            env=dep.env,
            cwd=dep.workdir / "neutral",
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    while dep.node_status().get(node_id) != "online":
        if proc.poll() is not None:
            raise DeploymentError(
                f"restarted SuperNode {partition} exited with code {proc.returncode}; see {log}"
            )
        if time.monotonic() > deadline:
            raise DeploymentError(f"restarted SuperNode {partition} not online; see {log}")
        time.sleep(0.5)
    dep.record_pids()
    log_line(f"SuperNode {partition} restarted: pid {proc.pid}, node {node_id} online")
    return proc


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
