"""Starting a loopback deployment: certificates, SuperLink, SuperNode keys and SuperNodes.

:func:`start_deployment` does for :func:`simulations.deploy_local.local_deployment` what an
operator does on edge boxes with the ``deploy/`` scripts (docs/deployment.md): it runs them,
waits for each process to be ready (one line naming the log to read when one is not) and
records the SuperNodes' ids.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from simulations.processes import PROJECT_ROOT

if TYPE_CHECKING:
    from simulations.deploy_local import LocalDeployment

DEPLOY_DIR = PROJECT_ROOT / "deploy"
CONNECTION = "semcom"


class DeploymentError(RuntimeError):
    """A loopback deployment could not be started (one line, names the log to read)."""


def log_line(text: str) -> None:
    print(f"[semcom-deploy] {text}", file=sys.stderr, flush=True)


def search_int(pattern: str, text: str) -> int | None:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def terminate_group(pid: int) -> None:
    """SIGTERM the process group ``pid`` (a hung launcher's watchdog)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


def worker_dir(work: Path, k: int) -> Path:
    """The worker folder of SuperNode ``k``: under ``work`` unless its socket path would be
    too long (a Unix socket path has at most 107 bytes)."""
    folder = work / "workers" / f"node{k}"
    if len(str(folder / "worker.sock")) <= 100:
        return folder
    return Path(tempfile.mkdtemp(prefix=f"semw{k}-"))


def search_str(pattern: str, text: str) -> str | None:
    """The first group of ``pattern`` in ``text``, or ``None``."""
    m = re.search(pattern, text)
    return m.group(1) if m else None


def results_dir(text: str) -> Path | None:
    """The last ``results folder:`` that ``semcom-run`` printed."""
    found = re.findall(r"results folder: (\S+)", text)
    return Path(found[-1]) if found else None


def _script(name: str) -> str:
    path = DEPLOY_DIR / name
    if not os.access(path, os.X_OK):
        raise DeploymentError(f"{path} missing or not executable")
    return str(path)


def _check(cmd: list[str], env: dict[str, str], cwd: Path, what: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    if out.returncode != 0:
        detail = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise DeploymentError(f"{what} failed: {detail[-1] if detail else out.returncode}")
    return out.stdout


def _wait_log(proc: subprocess.Popen[bytes], log: Path, pattern: str, what: str, t: float) -> str:
    deadline = time.monotonic() + t
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        m = re.search(pattern, text)
        if m:
            return m.group(0)
        if proc.poll() is not None:
            tail = text.strip().splitlines()[-1:] or [""]
            raise DeploymentError(
                f"{what} exited with code {proc.returncode} ({tail[0].strip()}); see {log}"
            )
        time.sleep(0.2)
    raise DeploymentError(f"{what} not ready within {t:.0f} s; see {log}")


def start_deployment(
    dep: LocalDeployment,
    num_nodes: int,
    tls: bool,
    auth: bool,
    task_poll_interval: float | None,
    node_config: str,
    timeout: float,
    worker_dirs: list[Path] | None = None,
    launcher: bool = True,
    fast_polls: bool = True,
) -> None:
    """Start the deployment of ``dep``; ``worker_dirs[k]``: SuperNode ``k`` starts its
    ``semcom-worker`` there first (``deploy/supernode.sh --worker``), and its ``flwr-clientapp``
    fork server unless ``launcher`` is false (``--no-launcher``); ``fast_polls`` false: Flower's
    fixed SuperNode sleeps (``--flower-polls``)."""
    work, env, neutral = dep.workdir, dep.env, dep.workdir / "neutral"
    connection = [f"[superlink.{CONNECTION}]", f'address = "{dep.address}"']
    if tls:
        _check([_script("gen_certs.sh"), str(work / "certs")], env, neutral, "gen_certs.sh")
        connection.append(f"root-certificates = {json.dumps(str(dep.ca))}")
        security = ["--certs", str(work / "certs")]
    else:
        connection.append("insecure = true")
        security = ["--insecure"]
    (dep.flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n' + "\n".join(connection) + "\n"
    )

    link_log = work / "logs" / "superlink.log"
    dep.logs["superlink"] = link_log
    link_cmd = [_script("superlink.sh"), *security, "--port", str(dep.port)]
    link_cmd += ["--database", str(work / "superlink.db")]
    if not auth:
        link_cmd.append("--no-auth")
    with open(link_log, "wb") as fh:
        link = dep.guard.start(link_cmd, env=env, cwd=neutral, stdout=fh, stderr=subprocess.STDOUT)
    scheme = "https" if tls else "http"
    log_line(f"SuperLink pid {link.pid} on {scheme}://{dep.address} (log {link_log})")
    _wait_log(link, link_log, r"Uvicorn running on", "flower-superlink", timeout)

    keys: list[Path | None] = [None] * num_nodes
    if auth:
        for k in range(num_nodes):
            name = f"supernode{k}"
            _check([_script("supernode_key.sh"), str(work / "keys"), name], env, neutral, "key")
            out = _check(
                [
                    _script("register_supernode.sh"),
                    "--superlink",
                    dep.address,
                    "--ca",
                    str(dep.ca),
                    "--name",
                    name,
                    str(work / "keys" / f"{name}.pub"),
                ],
                env,
                neutral,
                f"registering {name}",
            )
            node_id = search_int(r"SuperNode (\d+) registered", out)
            if node_id is None:
                raise DeploymentError(f"registering {name}: no node id in {out.strip()!r}")
            dep.node_ids.append(node_id)
            keys[k] = work / "keys" / name

    procs = []
    for k in range(num_nodes):
        cmd = [
            _script("supernode.sh"),
            "--superlink",
            dep.address,
            "--partition-id",
            str(k),
            "--num-partitions",
            str(num_nodes),
            "--port",
            str(dep.node_ports[k]),
        ]
        cmd += ["--ca", str(dep.ca)] if tls else ["--insecure"]
        if keys[k] is not None:
            cmd += ["--key", str(keys[k])]
        if task_poll_interval is not None:
            cmd += ["--task-poll-interval", str(task_poll_interval)]
        if node_config:
            cmd += ["--node-config", node_config]
        if not fast_polls:
            cmd.append("--flower-polls")
        if worker_dirs:
            cmd += ["--worker", str(worker_dirs[k])]
            cmd += ["--worker-log", str(work / "logs" / f"worker{k}.log")]
            dep.logs[f"worker{k}"] = work / "logs" / f"worker{k}.log"
            if not launcher:
                cmd.append("--no-launcher")
        log = work / "logs" / f"supernode{k}.log"
        dep.logs[f"supernode{k}"] = log
        with open(log, "wb") as fh:
            procs.append(
                (
                    dep.guard.start(cmd, env=env, cwd=neutral, stdout=fh, stderr=subprocess.STDOUT),
                    log,
                )
            )
        log_line(
            f"SuperNode {k} pid {procs[-1][0].pid} (partition-id={k}, port {dep.node_ports[k]})"
        )
    # a worker first imports torch and the ClientApp (tens of seconds on a loaded box)
    node_timeout = timeout + (300.0 if worker_dirs else 0.0)
    for k, (proc, log) in enumerate(procs):
        line = _wait_log(proc, log, r"SuperNode ID: \d+", f"flower-supernode {k}", node_timeout)
        if not auth:
            dep.node_ids.append(int(line.rsplit(" ", 1)[1]))

    deadline = time.monotonic() + timeout
    status: dict[int, str] = {}
    while time.monotonic() < deadline:
        status = dep.node_status()
        if sum(1 for n in dep.node_ids if status.get(n) == "online") == num_nodes:
            dep.record_pids()
            log_line(f"{num_nodes} SuperNodes online: {', '.join(map(str, dep.node_ids))}")
            return
        for proc, log in procs:
            if proc.poll() is not None:
                raise DeploymentError(
                    f"flower-supernode exited with code {proc.returncode}; see {log}"
                )
        time.sleep(1.0)
    raise DeploymentError(
        f"SuperNodes not online within {timeout:.0f} s (status {status}); see {work / 'logs'}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``semcom-deploy`` (:func:`simulations.deploy_local.main`)."""
    p = argparse.ArgumentParser(
        prog="python -m simulations.deploy_local",
        description="Run an experiment on a loopback deployment: a SuperLink and N SuperNodes "
        "on 127.0.0.1 (TLS + SuperNode authentication), stopped afterwards.",
    )
    p.add_argument(
        "words", nargs="*", metavar="key=value", help="as semcom-run: snr-db=5, channel.snr_db=5"
    )
    p.add_argument("--experiment", default="node_check", help="conf/experiment/<name>.yaml")
    p.add_argument("--overrides", default="", help='hydra overrides, e.g. "strategy.rounds=1"')
    p.add_argument("--num-supernodes", type=int, default=2)
    p.add_argument("--insecure", action="store_true", help="plain HTTP, no SuperNode auth")
    p.add_argument(
        "--cold",
        action="store_true",
        help="no semcom-worker per SuperNode: every message starts a ClientApp that imports torch",
    )
    p.add_argument("--no-auth", action="store_true", help="TLS but no SuperNode authentication")
    p.add_argument(
        "--task-poll-interval",
        type=float,
        default=0.1,
        help="FLWR_SUPEREXEC_TASK_POLL_INTERVAL on the SuperNodes, seconds (default 0.1; "
        "Flower's own default is 1.0)",
    )
    p.add_argument("--log-level", default=None, help="FLWR_LOG_LEVEL (DEBUG adds timestamps)")
    p.add_argument("--workdir", default=None, help="keep certificates, logs and DB here")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds for the run")
    return p
