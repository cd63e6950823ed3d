"""semcom-run: early failures, key=value words, semcom-stop, and a real `flwr run` that leaves
no process behind."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _procs import ROOT, processes_with_flwr_home, run_launcher  # tests/ is on sys.path

from simulations.processes import alive, descendants, free_ports
from simulations.superlink import managed_superlinks, stop_main

_launch = functools.partial(run_launcher, timeout=240)


def test_bad_config_fails_before_starting_flower() -> None:
    res = _launch("--overrides", "channel.snr_db=nan")
    assert res.returncode == 2
    assert "channel.snr_db: invalid value nan" in res.stderr
    assert "SuperLink pid" not in res.stdout


def test_key_value_words_are_the_run_config_and_hydra_grammar() -> None:
    """`semcom-run channel.snr_db=nan` and `semcom-run snr-db=nan` both reach validation."""
    res = _launch("--experiment", "split_supervised", "channel.snr_db=nan")
    assert res.returncode == 2 and "SuperLink pid" not in res.stdout
    assert "error: channel.snr_db: invalid value nan" in res.stderr
    res = _launch("experiment=split_supervised", "snr-db=nan")
    assert res.returncode == 2
    assert "error: snr-db: invalid value nan; expected a finite number of dB" in res.stderr
    res = _launch("--experiment", "slf_table1", "rounds=2")
    assert res.returncode == 2 and "error: rounds: not used by experiment" in res.stderr


def test_semcom_stop_stops_the_managed_superlink_and_its_children(tmp_path: Path) -> None:
    """A stand-in `flower-superlink --simulation --port P` with a child; semcom-stop ends both."""
    fake = tmp_path / "flower-superlink"
    fake.write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
        " start_new_session=True)\n"
        "time.sleep(120)\n"
    )
    port = str(free_ports(1)[0])
    proc = subprocess.Popen([sys.executable, str(fake), "--simulation", "--port", port])
    try:
        deadline = time.monotonic() + 30
        while not descendants(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (child,) = descendants(proc.pid)
        assert [p.pid for p in managed_superlinks(port)] == [proc.pid]
        assert managed_superlinks(str(int(port) + 1)) == []  # another port: not this one
        assert stop_main(["--port", port]) == 0
        assert proc.wait(timeout=5) is not None
        assert not alive(child)
        assert stop_main(["--port", port]) == 0  # nothing left: says so, exit 0
    finally:
        proc.kill()


def test_gpu_request_without_gpu_is_refused_clearly() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = _launch("--experiment", "node_check", "--num-gpus", "0.25")
    assert res.returncode == 2
    assert "--num-gpus=0.25 requested but torch sees no CUDA GPU" in res.stderr
    assert "SuperLink pid" not in res.stdout  # refused before any Flower process started


def test_node_check_runs_under_flwr_run_and_cleans_up(tmp_path: Path) -> None:
    res = _launch(
        "--experiment",
        "node_check",
        "--overrides",
        f"paths.output_dir={tmp_path}",
        "--flwr-home",
        str(tmp_path / "flwr-home"),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "finished:completed" in res.stdout
    (run_dir,) = (tmp_path / "node_check").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {k: summary[k] for k in ("nodes", "answered", "failed")} == {
        "nodes": 2,
        "answered": 2,
        "failed": 0,
    }
    assert 0 < summary["round_trip_s"] < 60
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.csv").is_file()
    assert processes_with_flwr_home(tmp_path / "flwr-home") == []


@pytest.mark.slow
def test_failed_run_exits_nonzero_and_cleans_up(tmp_path: Path) -> None:
    # A run that passes pre-flight and fails inside Flower: a client raises in round 1 under
    # the abort policy (too few SuperNodes is now refused before Flower starts, exit 2).
    small = "data.num_samples=48 data.image_size=8 model.num_symbols=4 strategy.batch_size=6"
    fault = "reliability.on_failure=abort reliability.fault.partition=1 reliability.fault.round=1"
    res = _launch(
        "--experiment",
        "split_supervised",
        "--overrides",
        f"{small} strategy.rounds=1 {fault} paths.output_dir={tmp_path}",
        "--flwr-home",
        str(tmp_path / "flwr-home"),
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "finished:failed" in res.stdout
    assert processes_with_flwr_home(tmp_path / "flwr-home") == []


@pytest.mark.slow
def test_readme_plain_flwr_run_in_the_activated_venv(tmp_path: Path) -> None:
    """README's `source .venv/bin/activate`, `flwr run . --run-config ...`, `flwr list` and
    `semcom-stop`, on Flower's managed local SuperLink (own FLWR_HOME and ports)."""
    import csv

    import yaml

    http, control = free_ports(2)
    home, out = tmp_path / "flwr-home", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "VIRTUAL_ENV"))}
    env.update(
        FLWR_HOME=str(home),
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http),
        FLWR_LOCAL_CONTROL_API_PORT=str(control),
        FLWR_TELEMETRY_ENABLED="0",
    )
    small = "data.num_samples=48 data.image_size=8 model.num_symbols=4 strategy.batch_size=6"
    (tmp_path / "ok.toml").write_text(
        'experiment = "split_supervised"\nsnr-db = 5\nrounds = 1\n'
        f"overrides = {json.dumps(f'{small} paths.output_dir={out}')}\n"
    )
    (tmp_path / "bad.toml").write_text('experiment = "split_supervised"\nsnr-db = nan\n')

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f"source .venv/bin/activate && {command}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def statuses() -> dict[str, str]:
        res = sh("flwr list --format json")
        return {r["run-id"]: r["status"] for r in json.loads(res.stdout)["runs"]}

    try:
        ok = sh(f"flwr run . --run-config {tmp_path / 'ok.toml'} --stream")
        bad = sh(f"flwr run . --run-config {tmp_path / 'bad.toml'} --stream")
        assert ok.returncode == 0 and bad.returncode == 0  # Flower's exit code says nothing...
        runs = statuses()  # ... the status does
        assert sorted(runs.values()) == ["finished:completed", "finished:failed"], runs
        assert "configuration error: snr-db: invalid value nan" in bad.stdout + bad.stderr
        log = (home / "local-superlink" / "superlink.log").read_text()
        assert "Installing application dependencies" not in log + ok.stdout  # no per-run venv
        (run_dir,) = (out / "split_supervised").iterdir()
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["channel"]["snr_db"] == 5 and cfg["strategy"]["rounds"] == 1
        with (run_dir / "metrics.csv").open() as fh:
            assert len(list(csv.DictReader(fh))) == 1
        assert processes_with_flwr_home(home)  # the SuperLink is still running ...
        stop = sh(f"semcom-stop --port {http}")
        assert stop.returncode == 0 and "stopped SuperLink pid" in stop.stdout, stop.stdout
    finally:
        sh(f"semcom-stop --port {http}")
    assert processes_with_flwr_home(home) == []  # ... until semcom-stop
