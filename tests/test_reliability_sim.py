"""Client failures under ``flwr run`` on the simulation engine (slow; issue #9, item 1).

``semcom-run`` with the test-only ``reliability.fault`` settings: a client that raises in
round 2 aborts the run by default (exit 1, one ERROR line, round 1 kept), and a client that
vanishes (sleeps 40 s, past ``strategy.timeout`` = 10 s) under ``on_failure=skip`` is dropped
for round 2 and the run completes all rounds.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=8 strategy.rounds=3"
)


def _launch(tmp: Path, overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulations.launch", "--experiment", "split_supervised"]
        + ["--overrides", f"{SMALL} paths.output_dir={tmp / 'out'} {overrides}"]
        + ["--flwr-home", str(tmp / "home")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _rows(tmp: Path) -> list[dict[str, str]]:
    (folder,) = (tmp / "out" / "split_supervised").iterdir()
    with open(folder / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_raising_client_aborts_the_simulation_run_and_keeps_round_1(tmp_path: Path) -> None:
    res = _launch(tmp_path, "reliability.fault.partition=1 reliability.fault.round=2")
    out = res.stdout + res.stderr
    print("\n".join(ln for ln in out.splitlines() if "reliability: " in ln or "[semcom-run]" in ln))
    assert res.returncode == 1 and "finished:failed" in out, out[-3000:]
    assert any(
        "reliability: client node" in ln
        and "(partition 1, depth) failed in train.split_step (round 2, exchange 0)" in ln
        and "injected fault 'raise'" in ln
        and "on_failure=abort" in ln
        for ln in out.splitlines()
    ), out[-3000:]
    assert [r["round"] for r in _rows(tmp_path)] == ["1"]


@pytest.mark.slow
def test_a_vanished_client_is_skipped_for_the_round_in_simulation(tmp_path: Path) -> None:
    res = _launch(
        tmp_path,
        "reliability.on_failure=skip reliability.fault.partition=1 reliability.fault.round=2 "
        "reliability.fault.exchange=1 reliability.fault.kind=vanish "
        "reliability.fault.vanish_s=40 strategy.timeout=10",
    )
    out = res.stdout + res.stderr
    print("\n".join(ln for ln in out.splitlines() if "reliability: " in ln or "[semcom-run]" in ln))
    assert res.returncode == 0 and "finished:completed" in out, out[-3000:]
    assert any(
        "no reply within timeout=10 s" in ln
        and "(partition 1, depth)" in ln
        and "on_failure=skip: device skipped for the rest of round 2" in ln
        for ln in out.splitlines()
    ), out[-3000:]
    rows = _rows(tmp_path)
    assert [r["round"] for r in rows] == ["1", "2", "3"]
    assert [r.get("skipped", "") for r in rows] == ["", "1:depth", ""]
