"""Loopback deployment: a real SuperLink and N SuperNodes on 127.0.0.1, then ``semcom-run``.

What an operator does on real edge boxes (docs/deployment.md), on one machine:

1. ``deploy/gen_certs.sh``: a CA and a SuperLink certificate for ``localhost``/``127.0.0.1``;
2. ``deploy/superlink.sh``: a SuperLink with TLS, SuperNode authentication, its own database
   and runtime dependency installation disabled;
3. per SuperNode: ``deploy/supernode_key.sh`` (EC key pair) and
   ``deploy/register_supernode.sh`` (``flwr supernode register``);
4. ``deploy/supernode.sh`` per node, with ``--node-config "partition-id=K num-partitions=N"``
   and a distinct local ``--port``, and (unless ``warm=False`` / ``--cold``) ``--worker``: a
   ``semcom-worker`` per SuperNode that keeps the node's state in memory, so the per-message
   ClientApp process only relays and imports no torch; then it waits until
   ``flwr supernode ls`` shows every node ``online``;
5. ``semcom-run --superlink 127.0.0.1:PORT --root-certificates ca.crt ...`` for the experiment;
6. stops every process it started, and their descendants, by PID (also on failure, Ctrl-C or
   SIGTERM).

Python API (tests, benchmarks)::

    with local_deployment(num_nodes=2) as dep:
        result = dep.run_experiment("node_check", "paths.output_dir=/tmp/x")
        assert result.returncode == 0 and result.status == "finished:completed"

Command line::

    python -m simulations.deploy_local --experiment node_check --num-supernodes 2
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from simulations.deploy_startup import (
    CONNECTION,
    DeploymentError,
    build_parser,
    log_line,
    results_dir,
    search_int,
    search_str,
    start_deployment,
    terminate_group,
    worker_dir,
)
from simulations.processes import (
    PROJECT_ROOT,
    ProcessGuard,
    descendants,
    find_processes,
    flwr_bin,
    flwr_env,
    free_ports,
    has_args,
)

__all__ = [
    "DeploymentError",
    "LocalDeployment",
    "RunResult",
    "free_ports",
    "local_deployment",
    "main",
]


@dataclass
class RunResult:
    """Outcome of one ``semcom-run`` against the deployment."""

    returncode: int
    output: str
    wall_s: float
    run_id: int | None = None
    status: str | None = None
    results_dir: Path | None = None


@dataclass
class LocalDeployment:
    """A running loopback deployment; made by :func:`local_deployment`."""

    workdir: Path
    port: int
    node_ports: list[int]
    flwr_home: Path
    ca: Path | None
    env: dict[str, str]
    guard: ProcessGuard
    logs: dict[str, Path] = field(default_factory=dict)
    node_ids: list[int] = field(default_factory=list)
    seen_pids: set[int] = field(default_factory=set)
    worker_dirs: list[Path] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launcher_args(self) -> list[str]:
        """The ``semcom-run`` arguments that target this deployment."""
        args = ["--superlink", self.address, "--flwr-home", str(self.flwr_home)]
        if self.ca is not None:
            args += ["--root-certificates", str(self.ca)]
        return args

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a ``flwr`` CLI command against this deployment's connection."""
        return subprocess.run(
            [flwr_bin("flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir / "neutral",
            timeout=timeout,
        )

    def node_status(self) -> dict[int, str]:
        """``{node_id: status}`` as ``flwr supernode ls`` reports it."""
        out = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        try:
            data = json.loads(out.stdout)
        except json.JSONDecodeError:
            return {}
        nodes = data.get("nodes", []) if isinstance(data, dict) else []
        return {int(n["node-id"]): str(n.get("status", "")) for n in nodes if "node-id" in n}

    def record_pids(self) -> None:
        """Remember every process started so far and its current descendants."""
        for proc in self.guard.procs:
            self.seen_pids.add(proc.pid)
            self.seen_pids.update(descendants(proc.pid))

    def run_experiment(
        self,
        experiment: str,
        overrides: str = "",
        *,
        timeout: float = 1800.0,
        stream: bool = False,
        words: Sequence[str] = (),
    ) -> RunResult:
        """Run ``semcom-run --experiment ... --superlink ...`` and wait for it to finish.

        ``words`` are ``semcom-run``'s ``key=value`` words (``rounds=1``, ``channel.snr_db=5``);
        ``stream=True`` also copies the launcher's output to stderr as it arrives.
        """
        cmd = [
            sys.executable,
            "-m",
            "simulations.launch",
            "--experiment",
            experiment,
            "--overrides",
            overrides,
            "--timeout",
            str(timeout),
            *self.launcher_args(),
            *words,
        ]
        log_file = self.workdir / "logs" / f"run-{sum(k.startswith('run-') for k in self.logs)}.log"
        self.logs[log_file.stem] = log_file
        start = time.monotonic()
        chunks: list[str] = []
        with open(log_file, "w") as fh:
            proc = self.guard.start(
                cmd,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert proc.stdout is not None
            # the launcher stops the run after `timeout`; this watchdog covers a hung launcher
            watchdog = threading.Timer(timeout + 300, terminate_group, args=(proc.pid,))
            watchdog.daemon = True
            watchdog.start()
            try:
                for raw in iter(proc.stdout.readline, b""):
                    line = raw.decode(errors="replace")
                    chunks.append(line)
                    fh.write(line)
                    fh.flush()
                    if stream:
                        sys.stderr.write(line)
                    self.record_pids()
                proc.wait(timeout=timeout + 120)
            finally:
                watchdog.cancel()
                proc.stdout.close()
        output = "".join(chunks)
        return RunResult(
            returncode=int(proc.returncode),
            output=output,
            wall_s=time.monotonic() - start,
            run_id=search_int(r"\[semcom-run\] run (\d+):", output),
            status=search_str(r"\[semcom-run\] run \d+ (finished:\S+)", output),
            results_dir=results_dir(output),
        )

    def worker_pids(self) -> dict[int, int]:
        """``{partition: pid}`` of the live ``semcom-worker`` processes of the SuperNodes."""
        found = {}
        for k, folder in enumerate(self.worker_dirs):
            args = ("flwr_semcom.runtime.worker", str(folder / "worker.sock"))
            for proc in find_processes(lambda p, args=args: has_args(p, args)):  # type: ignore[misc]
                found[k] = proc.pid
        return found

    def leftover_processes(self) -> list[str]:
        """Live processes that belong to this deployment (by PID or by its paths/ports)."""
        marks = [str(self.workdir)] + [f"127.0.0.1:{p}" for p in (self.port, *self.node_ports)]
        marks += [str(d) for d in self.worker_dirs]

        def ours(proc: psutil.Process) -> bool:
            cmd = " ".join(proc.cmdline())
            return proc.pid in self.seen_pids or any(m in cmd for m in marks)

        return [f"{p.pid} {' '.join(p.cmdline())}" for p in find_processes(ours)]


@contextlib.contextmanager
def local_deployment(
    num_nodes: int = 2,
    *,
    tls: bool = True,
    auth: bool = True,
    task_poll_interval: float | None = None,
    log_level: str | None = None,
    node_config: str = "",
    workdir: Path | None = None,
    keep_workdir: bool = False,
    start_timeout: float = 120.0,
    warm: bool = True,
    launcher: bool = True,
    fast_polls: bool = True,
) -> Iterator[LocalDeployment]:
    """Start a SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1; stop them all on exit.

    ``tls`` serves the SuperLink over HTTPS with a fresh CA; ``auth`` (needs ``tls``) enables
    SuperNode authentication and registers one EC key per node. ``task_poll_interval`` sets
    ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` on the SuperNodes (Flower's default 1.0 s);
    ``log_level`` sets ``FLWR_LOG_LEVEL`` for every Flower process ("DEBUG" adds timestamps).
    Partition ``k`` gets ``--node-config "partition-id=k num-partitions=num_nodes"`` plus
    ``node_config``. Everything (certificates, keys, FLWR_HOME, database, logs) lives in
    ``workdir`` (a new temporary folder by default, removed on exit unless ``keep_workdir``).
    ``warm``: each SuperNode gets a ``semcom-worker`` (``deploy/supernode.sh --worker``, socket
    ``workdir/workers/node<k>/worker.sock``, or a short private temporary folder when that path
    is too long for a Unix socket), stopped with it; ``False``: every message is handled by
    Flower's fresh ``flwr-clientapp`` process (cold). ``launcher`` (with ``warm``): that process
    is forked from a per-SuperNode server that has Flower imported (deploy/clientapp_launcher.py).
    ``fast_polls``: the SuperNodes poll adaptively (:mod:`flwr_semcom.runtime.fastnode`);
    ``False``: Flower's fixed 3 s idle / 0.5 s reply sleeps (``--flower-polls``).
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if auth and not tls:
        raise ValueError("SuperNode authentication needs TLS (tls=True) in Flower 1.41")
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="semcom-deploy-")) if workdir is None else workdir
    work = work.resolve()
    # neutral/ is the cwd of every Flower process: nothing importable there (FLOWER_NOTES §2.6)
    for sub in ("neutral", "logs", "home"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    env = flwr_env(work / "home")
    env.pop("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", None)
    if log_level:
        env["FLWR_LOG_LEVEL"] = log_level
    port, *node_ports = free_ports(num_nodes + 1)
    guard = ProcessGuard()
    dep = LocalDeployment(
        workdir=work,
        port=port,
        node_ports=node_ports,
        flwr_home=work / "home",
        ca=work / "certs" / "ca.crt" if tls else None,
        env=env,
        guard=guard,
    )

    def _on_sigterm(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    with contextlib.suppress(ValueError):  # only possible in the main thread
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    failed = True
    try:
        if warm:
            dep.worker_dirs = [worker_dir(work, k) for k in range(num_nodes)]
        start_deployment(
            dep,
            num_nodes,
            tls,
            auth,
            task_poll_interval,
            node_config,
            start_timeout,
            worker_dirs=dep.worker_dirs,
            launcher=launcher,
            fast_polls=fast_polls,
        )
        yield dep
        failed = False
    finally:
        dep.record_pids()
        guard.stop_all()
        for folder in dep.worker_dirs:
            if not folder.is_relative_to(work):
                shutil.rmtree(folder, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if own_dir and not keep_workdir and not failed:
            shutil.rmtree(work, ignore_errors=True)
        elif failed:
            log_line(f"stopped; logs kept in {work / 'logs'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_supernodes < 1:
        print(f"error: --num-supernodes must be >= 1, got {args.num_supernodes}", file=sys.stderr)
        return 2
    if args.task_poll_interval is not None and not 0.01 <= args.task_poll_interval <= 60:
        print("error: --task-poll-interval must be in [0.01, 60] seconds", file=sys.stderr)
        return 2
    try:  # pre-flight (simulations/preflight.py) before any certificate or process
        from flwr_semcom.config import ConfigError
        from simulations.preflight import check_run

        check_run(args.experiment, args.overrides, args.words, args.num_supernodes)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else None
    try:
        with local_deployment(
            args.num_supernodes,
            tls=not args.insecure,
            auth=not (args.insecure or args.no_auth),
            task_poll_interval=args.task_poll_interval,
            log_level=args.log_level,
            workdir=workdir,
            warm=not args.cold,
        ) as dep:
            result = dep.run_experiment(
                args.experiment,
                args.overrides,
                timeout=args.timeout,
                stream=True,
                words=args.words,
            )
            where = f"; logs in {dep.workdir / 'logs'}" if workdir else ""
            log_line(
                f"run {result.run_id} {result.status} in {result.wall_s:.1f} s "
                f"(exit {result.returncode}){where}"
            )
            return result.returncode
    except DeploymentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        log_line("interrupted; stopped every process started")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
