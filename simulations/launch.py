"""``semcom-run``: run an experiment with ``flwr run``, safely.

    semcom-run [--experiment NAME] [key=value ...] [--overrides "k=v ..."] [options]

Each ``key=value`` word is a run-config shortcut (``snr-db=5``, ``rounds=2``, ...:
:mod:`flwr_semcom.run_config`), ``experiment=NAME``, or a hydra override of any ``conf/`` key
(``channel.snr_db=5``), the same words ``semcom-sweep`` and ``flwr run --run-config`` take.

``flwr run .`` alone has pitfalls (../shared/FLOWER_NOTES.md §2, §8): it leaves a detached
SuperLink running, exits 0 when the run failed, installs the app's dependencies (a second
torch) into a per-run venv, and lets the SuperLink's working directory leak into ClientApp
imports. This launcher:

1. composes and validates the config first, then runs the pre-flight checks
   (:mod:`simulations.preflight`: data, device, output folder, channel ↔ task, SuperNode
   count): a problem fails here, in one line, exit 2, before anything is started or created;
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
the run appends to the same folder (docs/reliability.md). A run that already finished is not
run again: the launcher says so and exits 0, changing nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from simulations.processes import PROJECT_ROOT, ProcessGuard, descendants, flwr_bin, flwr_env
from simulations.superlink import (
    parse_run_id,
    run_status,
    start_simulation_superlink,
    toml_str,
    write_connection,
)

# PROJECT_ROOT, ProcessGuard, descendants and flwr_env are imported from here by tests and
# deploy_local; they live in simulations.processes.
__all__ = ["PROJECT_ROOT", "ProcessGuard", "descendants", "flwr_env", "main"]


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


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one ``error: …`` line (exit 2), not the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="semcom-run", description=__doc__.split("\n")[0])
    p.add_argument(
        "words",
        nargs="*",
        metavar="key=value",
        help="snr-db=5, rounds=2, ... (run-config keys), experiment=NAME, or a conf/ key "
        "such as channel.snr_db=5",
    )
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


def _settings(args: argparse.Namespace) -> tuple[str, list[str], Any]:
    """Experiment, hydra overrides and composed config of the run; ``ConfigError`` when
    invalid."""
    from flwr_semcom.config import ConfigError, compose_config, split_overrides
    from flwr_semcom.run_config import cli_overrides, rename_error

    if args.resume:
        if args.experiment or args.overrides or args.words:
            raise SystemExit(
                "error: --resume continues a run with its own experiment and overrides; "
                "drop --experiment / --overrides / key=value"
            )
        experiment, overrides = resume_settings(args.resume)
        names: dict[str, str] = {}
    else:
        base = split_overrides(args.overrides)
        chosen, more, names = cli_overrides(args.words, args.experiment, base)
        experiment, overrides = chosen or "main", [*base, *more]
    if not any(o.startswith("paths.project_root=") for o in overrides):
        overrides.append(f"paths.project_root={PROJECT_ROOT}")
    try:
        cfg = compose_config(experiment, overrides)
    except ConfigError as err:
        raise rename_error(err, names) from None
    return experiment, overrides, cfg


def preflight(args: argparse.Namespace, cfg: Any) -> int:
    """The pre-flight checks of the run (:mod:`simulations.preflight`); the SuperNodes to
    start. A deployment (``--superlink``) is checked by its ServerApp on its own host."""
    from simulations import preflight as pf

    nodes = pf.check_config(cfg, None if args.superlink else args.num_supernodes)
    if not args.superlink:
        pf.check_host(cfg)
    return nodes


def _resource_problem(args: argparse.Namespace, nodes: int) -> str | None:
    """What is wrong with the simulation resources (one line), or None."""
    if nodes < 1:
        return f"--num-supernodes must be >= 1, got {nodes}"
    if args.num_cpus < 1:
        return f"--num-cpus must be an integer >= 1, got {args.num_cpus}"
    if os.environ.get("RAY_ADDRESS") and args.num_gpus > 0:
        # A Ray cluster's GPUs may sit on worker hosts: Ray schedules them, not this host.
        print(
            f"[semcom-run] RAY_ADDRESS is set: not checking for a local GPU "
            f"(--num-gpus={args.num_gpus:g} must be satisfiable by the cluster)",
            flush=True,
        )
        return None
    try:
        gpu_check(args.num_gpus)
    except SystemExit as err:
        return str(err).removeprefix("error: ")
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # options between key=value words
    sys.path.insert(0, str(PROJECT_ROOT))
    from flwr_semcom.checkpoint import CheckpointError, read_run_file
    from flwr_semcom.config import ConfigError

    try:
        experiment, overrides, cfg = _settings(args)
        nodes = preflight(args, cfg)
        if args.resume:
            from simulations.preflight import finished_run

            run = read_run_file(args.resume)
            done = finished_run(cfg, run["experiment"], run["overrides"])
            if done:
                print(f"[semcom-run] {done}", flush=True)
                return 0
            print(f"[semcom-run] resuming {Path(args.resume).resolve()}", flush=True)
    except (CheckpointError, ConfigError) as err:
        where = "--resume: " if args.resume else ""
        print(f"error: {where}{err}", file=sys.stderr)
        return 2
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    problem = deployment_check(args) if args.superlink else _resource_problem(args, nodes)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return _run(args, experiment, overrides, nodes)


def _run(args: argparse.Namespace, experiment: str, overrides: list[str], nodes: int) -> int:
    """Start Flower, run, follow the run to its end, stop every process started."""
    own_home = args.flwr_home is None
    flwr_home = (
        PROJECT_ROOT / ".flwr-home" / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        if own_home
        else Path(args.flwr_home).resolve()
    )
    flwr_home.mkdir(parents=True, exist_ok=True)
    completed = False
    env = flwr_env(flwr_home)
    flwr = flwr_bin("flwr")
    guard = ProcessGuard()
    neutral = tempfile.mkdtemp(prefix="semcom-run-")  # SuperLink cwd: nothing importable here
    connection = "semcom"
    quoted = " ".join(shlex.quote(o) for o in overrides)
    run_config = f"experiment={toml_str(experiment)} overrides={toml_str(quoted)}"

    def _on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, _on_signal)
    try:
        if args.superlink:
            lines = [f"address = {toml_str(args.superlink)}"]
            if args.root_certificates:
                ca = str(Path(args.root_certificates).resolve())
                lines.append(f"root-certificates = {toml_str(ca)}")
            else:
                lines.append("insecure = true")
                print(
                    f"[semcom-run] connecting to {args.superlink} without TLS "
                    "(no --root-certificates)",
                    flush=True,
                )
            fed_args: list[str] = []
        else:
            port, _ = start_simulation_superlink(guard, flwr_home, env, neutral)
            lines = [f'address = "127.0.0.1:{port}"', "insecure = true"]
            fed = (
                f"num-supernodes={nodes} client-resources-num-cpus={args.num_cpus} "
                f"client-resources-num-gpus={args.num_gpus}"
            )
            fed_args = ["--federation-config", fed]
        write_connection(flwr_home, connection, lines)
        cmd = [flwr, "run", str(PROJECT_ROOT), connection, "--run-config", run_config]
        cmd += [*fed_args, "--format", "json"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=neutral, timeout=300)
        run_id = parse_run_id(out.stdout)
        if run_id is None:
            print(out.stdout + out.stderr, file=sys.stderr)
            print("error: `flwr run` did not start a run (see above)", file=sys.stderr)
            return 1
        print(f"[semcom-run] run {run_id}: experiment={experiment} nodes={nodes}", flush=True)
        status = _follow(guard, flwr, run_id, connection, env, neutral, args.timeout)
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


def _follow(
    guard: ProcessGuard,
    flwr: str,
    run_id: int,
    connection: str,
    env: dict[str, str],
    cwd: str,
    timeout: float,
) -> str:
    """Stream the run's log until it finishes (or stop it after ``timeout``); its status."""
    streamer = guard.start([flwr, "log", str(run_id), connection, "--stream"], env=env, cwd=cwd)
    deadline = time.monotonic() + timeout
    status = "running"
    while time.monotonic() < deadline:
        time.sleep(2.0)
        status = run_status(flwr, run_id, connection, env, cwd)
        if status.startswith("finished"):
            break
    else:
        subprocess.run([flwr, "stop", str(run_id), connection], env=env, cwd=cwd, timeout=60)
        status = "finished:timeout"
    with contextlib.suppress(subprocess.TimeoutExpired):
        streamer.wait(timeout=10)
    return status


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


if __name__ == "__main__":
    raise SystemExit(main())
