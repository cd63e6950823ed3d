"""semcom-run: early failures, and a real `flwr run` that leaves no process behind."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from _procs import processes_with_flwr_home, run_launcher  # tests/ is on sys.path

_launch = functools.partial(run_launcher, timeout=240)


def test_bad_config_fails_before_starting_flower() -> None:
    res = _launch("--overrides", "channel.snr_db=nan")
    assert res.returncode == 2
    assert "channel.snr_db: invalid value nan" in res.stderr
    assert "SuperLink pid" not in res.stdout


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
