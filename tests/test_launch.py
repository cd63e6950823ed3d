"""semcom-run: early failures, key=value words, semcom-stop, and a real `flwr run` that leaves
no process behind."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _procs import processes_with_flwr_home, run_launcher  # tests/ is on sys.path

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
    res = _launch(
        "--experiment",
        "node_check",
        "--num-supernodes",
        "2",
        "--overrides",
        f"experiment.num_nodes=3 experiment.wait=3 paths.output_dir={tmp_path}",
        "--flwr-home",
        str(tmp_path / "flwr-home"),
    )
    assert res.returncode == 1
    assert "finished:failed" in res.stdout
    assert processes_with_flwr_home(tmp_path / "flwr-home") == []
