"""``semcom-run``: run an experiment with ``flwr run``, safely.

``flwr run .`` alone has pitfalls (../shared/FLOWER_NOTES.md §2, §8): it leaves a detached
SuperLink running, exits 0 when the run failed, installs the app's dependencies (a second
torch) into a per-run venv, and lets the SuperLink's working directory leak into ClientApp
imports. This launcher:

1. composes and validates the config first (a bad value fails here, in one line, exit 2);
2. refuses ``--num-gpus > 0`` when torch sees no GPU (instead of Ray's "ActorPool is empty");
3. starts its own simulation SuperLink from a neutral directory, with runtime dependency
   installation disabled and a ``FLWR_HOME`` of its own inside the project
   (``.flwr-home/run-<time>-<pid>/``, removed after a completed run; kept with the SuperLink
   log after a failed one), so two runs at the same time never share a connection config;
4. runs ``flwr run <project> --stream`` with the experiment, overrides and federation
   settings, then reads the run's final status with ``flwr list``;
5. stops every process it started (by PID, also on Ctrl-C or failure) and exits non-zero
   unless the run finished ``completed``.

With ``--superlink ADDRESS`` it targets an existing (deployment) SuperLink instead and
starts nothing (see docs/deployment.md).

With ``--resume RESULTS_DIR`` it continues a stopped or killed run from the checkpoint in that
results folder, with the experiment and overrides the run was started with (``run.json``);
the run appends to the same folder (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _flwr_bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"error: `{name}` not found; install the project (pip install -e .)")
    return str(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


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


def num_nodes_for(cfg: Any) -> int:
    """How many SuperNodes the experiment needs (runner's ``num_nodes(cfg)`` or config)."""
    import importlib

    from simulations.server_app import load_runner

    load_runner(str(cfg.experiment.runner))  # unknown runner -> ConfigError listing valid ones
    module = importlib.import_module(f"simulations.experiments.{cfg.experiment.runner}")
    if hasattr(module, "num_nodes"):
        return int(module.num_nodes(cfg))
    return int(cfg.experiment.get("num_nodes", 2))


def gpu_check(num_gpus: float) -> None:
    """Fail early and clearly when GPUs are requested but none is visible."""
    if num_gpus < 0:
        raise SystemExit(
            f"error: --num-gpus must be >= 0 (a fraction such as 0.25), got {num_gpus}"
        )
    if num_gpus > 0:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                f"error: --num-gpus={num_gpus:g} requested but torch sees no CUDA GPU on this "
                "machine (Ray would fail with 'ActorPool is empty'); use --num-gpus 0"
            )


def descendants(pid: int) -> list[int]:
    """All descendant PIDs of ``pid`` (Linux /proc), including detached sessions."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class ProcessGuard:
    """Start processes in their own session; on exit kill them and all their descendants.

    Flower starts ``flower-superexec`` in a session of its own, so killing our process group
    is not enough: the descendant PIDs are collected from /proc before the first signal.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self, grace: float = 15.0) -> None:
        family = [d for p in self.procs for d in descendants(p.pid)]
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for pid in family:  # detached children (superexec, serverapp, ray) first get SIGTERM
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in family):
            time.sleep(0.2)
        for pid in family:
            _signal(pid, signal.SIGKILL)
        for proc in self.procs:  # kill leftovers of each group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


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


def run_status(flwr: str, run_id: int, connection: str, env: dict[str, str], cwd: str) -> str:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semcom-run", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default=None, help="conf/experiment/<name>.yaml (default: main)")
    p.add_argument("--overrides", default="", help='hydra overrides, e.g. "channel.snr_db=5"')
    p.add_argument(
        "--num-supernodes", type=int, default=None, help="default: what the experiment needs"
    )
    p.add_argument("--num-cpus", type=int, default=1, help="CPUs per simulated client (int)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per client, e.g. 0.25")
    p.add_argument("--superlink", default=None, help="address of a running (deployment) SuperLink")
    p.add_argument("--root-certificates", default=None, help="CA cert for a TLS SuperLink")
    p.add_argument(
        "--flwr-home",
        default=None,
        help="FLWR_HOME of this run (default: a fresh .flwr-home/run-<time>-<pid>/, removed "
        "after a completed run, so concurrent runs never share a connection config)",
    )
    p.add_argument(
        "--timeout", type=float, default=7200.0, help="seconds before the run is stopped"
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RESULTS_DIR",
        help="continue the run of this results folder from its last checkpoint",
    )
    return p


def resume_settings(run_dir: str) -> tuple[str, list[str]]:
    """Experiment and overrides that continue the run of ``run_dir`` (one-line errors).

    The checkpoint is loaded and checked against the config here, before Flower starts.
    """
    from flwr_semcom.checkpoint import Checkpointer, read_run_file
    from flwr_semcom.config import compose_config, split_overrides

    folder = Path(run_dir).resolve()
    run = read_run_file(folder)
    overrides = [
        o for o in split_overrides(run["overrides"]) if not o.startswith("reliability.resume=")
    ]
    overrides.append(f"reliability.resume={folder}")
    cfg = compose_config(run["experiment"], overrides)
    Checkpointer(folder, cfg, experiment=run["experiment"], overrides=run["overrides"]).load()
    return run["experiment"], overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(PROJECT_ROOT))
    from flwr_semcom.config import ConfigError, compose_config, split_overrides

    experiment = args.experiment or "main"
    overrides = split_overrides(args.overrides)
    if args.resume:
        from flwr_semcom.checkpoint import CheckpointError

        if args.experiment or args.overrides:
            print(
                "error: --resume continues a run with its own experiment and overrides; "
                "drop --experiment / --overrides",
                file=sys.stderr,
            )
            return 2
        try:
            experiment, overrides = resume_settings(args.resume)
        except (CheckpointError, ConfigError) as err:
            print(f"error: --resume: {err}", file=sys.stderr)
            return 2
        print(f"[semcom-run] resuming {Path(args.resume).resolve()}", flush=True)
    if not any(o.startswith("paths.project_root=") for o in overrides):
        overrides.append(f"paths.project_root={PROJECT_ROOT}")
    try:
        cfg = compose_config(experiment, overrides)
        nodes = args.num_supernodes or num_nodes_for(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.superlink:
        problem = deployment_check(args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    else:
        if nodes < 1:
            print(f"error: --num-supernodes must be >= 1, got {nodes}", file=sys.stderr)
            return 2
        if args.num_cpus < 1:
            print(
                f"error: --num-cpus must be an integer >= 1, got {args.num_cpus}", file=sys.stderr
            )
            return 2
        if os.environ.get("RAY_ADDRESS") and args.num_gpus > 0:
            # A Ray cluster's GPUs may sit on worker hosts: Ray schedules them, not this host.
            print(
                f"[semcom-run] RAY_ADDRESS is set: not checking for a local GPU "
                f"(--num-gpus={args.num_gpus:g} must be satisfiable by the cluster)",
                flush=True,
            )
        else:
            try:
                gpu_check(args.num_gpus)
            except SystemExit as err:
                print(err, file=sys.stderr)
                return 2

    own_home = args.flwr_home is None
    flwr_home = (
        PROJECT_ROOT / ".flwr-home" / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        if own_home
        else Path(args.flwr_home).resolve()
    )
    flwr_home.mkdir(parents=True, exist_ok=True)
    completed = False
    env = flwr_env(flwr_home)
    flwr = _flwr_bin("flwr")
    guard = ProcessGuard()
    neutral = tempfile.mkdtemp(prefix="semcom-run-")  # SuperLink cwd: nothing importable here
    connection = "semcom"
    quoted = " ".join(_quote_override(o) for o in overrides)
    run_config = f"experiment={_toml_str(experiment)} overrides={_toml_str(quoted)}"

    def _on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, _on_signal)
    try:
        if args.superlink:
            lines = [f"[superlink.{connection}]", f"address = {_toml_str(args.superlink)}"]
            if args.root_certificates:
                lines.append(
                    f"root-certificates = {_toml_str(str(Path(args.root_certificates).resolve()))}"
                )
            else:
                lines.append("insecure = true")
                print(
                    f"[semcom-run] connecting to {args.superlink} without TLS "
                    "(no --root-certificates)",
                    flush=True,
                )
            fed_args: list[str] = []
        else:
            port, control = _free_port(), _free_port()
            log_file = flwr_home / "superlink.log"
            link = guard.start(
                [
                    _flwr_bin("flower-superlink"),
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
                cwd=neutral,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            print(
                f"[semcom-run] SuperLink pid {link.pid} on 127.0.0.1:{port} (log {log_file})",
                flush=True,
            )
            _wait_health(port, link, log_file, timeout=60)
            lines = [
                f"[superlink.{connection}]",
                f'address = "127.0.0.1:{port}"',
                "insecure = true",
            ]
            fed = (
                f"num-supernodes={nodes} client-resources-num-cpus={args.num_cpus} "
                f"client-resources-num-gpus={args.num_gpus}"
            )
            fed_args = ["--federation-config", fed]
        (flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{connection}"\n\n' + "\n".join(lines) + "\n"
        )
        cmd = [
            flwr,
            "run",
            str(PROJECT_ROOT),
            connection,
            "--run-config",
            run_config,
            *fed_args,
            "--format",
            "json",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=neutral, timeout=300)
        run_id = _parse_run_id(out.stdout)
        if run_id is None:
            print(out.stdout + out.stderr, file=sys.stderr)
            print("error: `flwr run` did not start a run (see above)", file=sys.stderr)
            return 1
        print(f"[semcom-run] run {run_id}: experiment={experiment} nodes={nodes}", flush=True)
        streamer = guard.start(
            [flwr, "log", str(run_id), connection, "--stream"], env=env, cwd=neutral
        )
        deadline = time.monotonic() + args.timeout
        status = "running"
        while time.monotonic() < deadline:
            time.sleep(2.0)
            status = run_status(flwr, run_id, connection, env, neutral)
            if status.startswith("finished"):
                break
        else:
            subprocess.run(
                [flwr, "stop", str(run_id), connection], env=env, cwd=neutral, timeout=60
            )
            status = "finished:timeout"
        with contextlib.suppress(subprocess.TimeoutExpired):
            streamer.wait(timeout=10)
        print(f"[semcom-run] run {run_id} {status}", flush=True)
        completed = status == "finished:completed"
        if not completed:
            print(f"[semcom-run] SuperLink log and connection config kept in {flwr_home}")
        return 0 if completed else 1
    except KeyboardInterrupt:
        print("[semcom-run] interrupted; stopping Flower processes", file=sys.stderr)
        return 130
    finally:
        guard.stop_all()
        shutil.rmtree(neutral, ignore_errors=True)
        if own_home and completed:
            shutil.rmtree(flwr_home, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_handler)


def deployment_check(args: argparse.Namespace) -> str | None:
    """Problems with the ``--superlink`` options (one line), or None.

    Simulation-only options are not errors: they are reported as ignored, since a deployment
    has the SuperNodes that are connected and each picks its own device.
    """
    host, sep, port = str(args.superlink).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"--superlink must be HOST:PORT (e.g. 127.0.0.1:9091), got {args.superlink!r}"
    if args.root_certificates:
        ca = Path(args.root_certificates)
        if not ca.is_file() or not os.access(ca, os.R_OK):
            return f"--root-certificates {ca}: no such readable file (see deploy/gen_certs.sh)"
    ignored = [
        flag
        for flag, given in (
            ("--num-supernodes", args.num_supernodes is not None),
            ("--num-cpus", args.num_cpus != 1),
            ("--num-gpus", args.num_gpus != 0.0),
        )
        if given
    ]
    if ignored:
        print(
            f"[semcom-run] {', '.join(ignored)} only apply to simulation; ignored with "
            "--superlink (set device=cuda in --overrides for GPUs on the SuperNodes)",
            flush=True,
        )
    return None


def _quote_override(o: str) -> str:
    import shlex

    return shlex.quote(o)


def _parse_run_id(stdout: str) -> int | None:
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    for key in ("run-id", "run_id"):
        if key in data:
            return int(data[key])
    return None


if __name__ == "__main__":
    raise SystemExit(main())
