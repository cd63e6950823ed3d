"""``semcom-run --resume``: argument errors (fast) and a real ``kill -9`` mid-run (slow).

The slow test runs the split_supervised main job under ``flwr run`` (simulation engine) three
times: uninterrupted; again, killed with SIGKILL (the launcher, the SuperLink, the ServerApp,
Ray: every process of the run at once) after its first checkpoint; and ``semcom-run --resume``
of the killed run's results folder. The resumed metrics.csv (timing columns aside) and
ledger.csv equal the uninterrupted run's byte for byte.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _procs import processes_with_flwr_home, run_launcher  # tests/ is on sys.path
from _runs import without_wall  # tests/ is on sys.path

from simulations.launch import descendants

ROOT = Path(__file__).resolve().parents[1]
SMALL = (
    "data.num_samples=120 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=8 strategy.rounds=6"
)


_launch = functools.partial(run_launcher, timeout=600)


def test_resume_of_a_folder_without_checkpoint_fails_in_one_line(tmp_path: Path) -> None:
    res = _launch("--resume", str(tmp_path))
    assert res.returncode == 2
    assert "--resume:" in res.stderr and "no checkpoint.pt" in res.stderr
    assert res.stderr.count("\n") == 1 and "SuperLink pid" not in res.stdout


def test_resume_refuses_new_overrides(tmp_path: Path) -> None:
    res = _launch("--resume", str(tmp_path), "--overrides", "strategy.lr=0.1")
    assert res.returncode == 2 and "drop --experiment / --overrides" in res.stderr


def _kill9(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as fh:
        return without_wall(list(csv.DictReader(fh)))  # no time columns (WALL)


def _checkpoint_round(out: Path) -> int:
    for path in out.glob("split_supervised/*/checkpoint.pt"):
        try:
            return int(torch.load(path, weights_only=True)["round"])
        except Exception:  # noqa: BLE001 - being replaced right now; try again
            return 0
    return 0


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # same-length output paths (the overrides string is counted in the ledger)
    ref_out, out = tmp_path / "a", tmp_path / "b"
    ref = _launch(
        "--experiment",
        "split_supervised",
        "--overrides",
        f"{SMALL} paths.output_dir={ref_out}",
        "--flwr-home",
        str(tmp_path / "h1"),
    )
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    (ref_dir,) = (ref_out / "split_supervised").iterdir()

    home = tmp_path / "h2"
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simulations.launch", "--experiment", "split_supervised"]
            + ["--overrides", f"{SMALL} paths.output_dir={out}", "--flwr-home", str(home)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 600
        while _checkpoint_round(out) < 1 and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.1)
        family = [proc.pid, *descendants(proc.pid), *processes_with_flwr_home(home)]
        _kill9(family)  # kill -9 the whole run at once
        killed_at = _checkpoint_round(out)
    finally:
        _kill9([proc.pid, *descendants(proc.pid), *processes_with_flwr_home(home)])
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert 1 <= killed_at < 6
    (run_dir,) = (out / "split_supervised").iterdir()
    assert len(_metrics(run_dir)) < 6

    res = _launch("--resume", str(run_dir), "--flwr-home", str(tmp_path / "h3"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resuming {run_dir}" in res.stdout
    assert _metrics(run_dir) == _metrics(ref_dir)
    assert len(_metrics(run_dir)) == 6
    assert (run_dir / "ledger.csv").read_bytes() == (ref_dir / "ledger.csv").read_bytes()
    time.sleep(1.0)
    for h in ("h1", "h2", "h3"):
        leftover = processes_with_flwr_home(tmp_path / h)
        _kill9(leftover)
        assert leftover == [], h
