"""semcom-sweep: grid expansion, validation before any run, and a real two-point sweep."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.sweep import expand, flatten

ROOT = Path(__file__).resolve().parents[1]


def test_expand_is_a_cartesian_product_of_swept_keys() -> None:
    keys, points = expand(["channel.snr_db=0,10,20", "seed=3", "strategy.rounds=1,2"])
    assert keys == ["channel.snr_db", "strategy.rounds"]
    assert len(points) == 6
    assert all(p[0] == "seed=3" for p in points)
    assert {(p[1], p[2]) for p in points} == {
        (f"channel.snr_db={s}", f"strategy.rounds={r}") for s in (0, 10, 20) for r in (1, 2)
    }
    assert expand(["seed=1"]) == ([], [["seed=1"]])


def test_flatten_keeps_scalars_with_dotted_keys() -> None:
    data = {"a": 1, "b": {"c": 2.5, "d": {"e": "x"}}, "l": [1, 2]}
    assert flatten(data) == {"a": 1, "b.c": 2.5, "b.d.e": "x"}


@pytest.mark.parametrize(
    ("words", "error"),
    [
        (["channel.snr_db=0,nan"], "error: channel.snr_db: invalid value nan"),
        # the same words as semcom-run: a run-config shortcut and experiment=NAME
        (["experiment=split_supervised", "snr-db=0,nan"], "error: snr-db: invalid value nan"),
        (["experiment=main,multitask"], "error: experiment: one experiment per sweep"),
    ],
)
def test_invalid_point_fails_before_any_run(tmp_path: Path, words: list[str], error: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "simulations.sweep", *words, "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert error in res.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_two_point_sweep_runs_one_flower_run_per_point(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.sweep",
            "--experiment",
            "node_check",
            "experiment.wait=240,241",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "node_check").iterdir()
    with (sweep_dir / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["experiment.wait"] for r in rows] == ["240", "241"]
    assert all(r["status"] == "ok" and r["answered"] == "2" for r in rows)
    assert len(list((sweep_dir / "runs").iterdir())) == 2
