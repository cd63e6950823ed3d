"""semcom-sweep over seeds (simulations/sweep_seeds.py) on hand-made sweep folders.

Each point folder is what a sweep leaves (``runs/<NNN>/<experiment>/<timestamp>/`` with
``config.yaml``, ``summary.json`` and ``metrics.json``; the rows are the sweep's ``point.json``
rows); the aggregates are checked against hand computations and against
``python -m simulations.aggregate`` run by hand on the same folders.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _runs import SPLIT_TINY, WALL, strict_json  # tests/ is on sys.path

from simulations.aggregate import main as aggregate_main
from simulations.sweep_seeds import seed_aggregates

ROOT = Path(__file__).resolve().parents[1]

# accuracy per (snr, seed); at snr 0: 0.50 / 0.60 / 0.70 -> mean 0.60, s = 0.10,
# half width t_{0.975,2} * 0.1 / sqrt(3) = 4.302653 * 0.0577350 = 0.2484138
ACC = {("0", 0): 0.50, ("0", 1): 0.60, ("0", 2): 0.70, ("10", 0): 0.80, ("10", 1): 0.90}


def _point(sweep: Path, i: int, seed: int, acc: float | None, **swept: str) -> dict[str, Any]:
    """One point as the sweep leaves it; ``acc=None``: the run failed before its summary."""
    row: dict[str, Any] = {"point": i, **swept, "seed": str(seed)}
    folder = sweep / "runs" / f"{i:03d}" / "split_supervised" / "20261203-120000"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\n")
    if acc is None:
        return {**row, "status": "failed (exit 1)", "wall_s": 1.0}
    summary = {"final_test_accuracy": acc, "wall_time_s": 3.0 + i, "target": None}
    (folder / "summary.json").write_text(json.dumps(summary))
    curve = [{"round": r, "test_accuracy": acc * r / 2, "loss": 1.0} for r in (1, 2)]
    (folder / "metrics.json").write_text(json.dumps(curve))
    return {**row, "status": "ok", "wall_s": 5.0, **summary}


def test_only_seed_swept_writes_one_aggregate_in_the_sweep_folder(tmp_path: Path) -> None:
    rows = [_point(tmp_path, i, s, ACC[("0", s)]) for i, s in enumerate((0, 1, 2))]
    rows.append(_point(tmp_path, 3, 3, None))
    assert seed_aggregates(tmp_path, ["seed"], rows) == [tmp_path.resolve()]
    agg = strict_json(tmp_path / "aggregate.json")
    m = agg["metrics"]["final_test_accuracy"]
    assert m["mean"] == pytest.approx(0.60) and m["std"] == pytest.approx(0.10)
    assert m["ci95_low"] == pytest.approx(0.60 - 0.2484138, abs=1e-7)
    assert m["ci95_high"] == pytest.approx(0.60 + 0.2484138, abs=1e-7)
    assert (m["n"], m["seeds"]) == (3, [0, 1, 2])
    assert agg["failed_seeds"] == [3]  # the failed point is listed, not aggregated
    assert "target" not in agg["metrics"]  # null in every seed
    assert agg["runs"][0]["path"] == "runs/000/split_supervised/20261203-120000/summary.json"
    # the learning curve (round vs test_accuracy) with its band
    assert (tmp_path / "aggregate_test_accuracy.png").is_file()
    assert (tmp_path / "aggregate_test_accuracy.pdf").is_file()
    with (tmp_path / "aggregate.csv").open() as fh:
        table = {r["metric"]: r for r in csv.DictReader(fh)}
    assert table["final_test_accuracy"]["seeds"] == "0 1 2"


def test_each_combination_of_the_other_keys_gets_its_aggregate(tmp_path: Path) -> None:
    sweep, by_hand = tmp_path / "sweep", tmp_path / "by_hand"
    rows = [
        _point(sweep, i, seed, ACC.get((snr, seed)), snr=snr)
        for i, (snr, seed) in enumerate((snr, seed) for snr in ("0", "10") for seed in (0, 1, 2))
    ]
    written = seed_aggregates(sweep, ["snr", "seed"], rows, curve=["round", "loss"])
    assert written == [(sweep / "aggregate" / f"snr={v}").resolve() for v in ("0", "10")]
    top = strict_json(sweep / "aggregate.json")
    assert top["group_keys"] == ["snr"] and "Student-t" in top["statistic"]
    g0, g10 = top["groups"]
    assert (g0["values"], g0["folder"], g0["failed_seeds"]) == ({"snr": "0"}, "aggregate/snr=0", [])
    assert (g10["values"], g10["failed_seeds"]) == ({"snr": "10"}, [2])
    m10 = g10["metrics"]["final_test_accuracy"]
    assert m10["mean"] == pytest.approx(0.85) and m10["seeds"] == [0, 1]
    assert m10["std"] == pytest.approx(0.0707106781)  # sqrt(0.005 / 1)
    assert g10["runs"][1]["path"] == "runs/004/split_supervised/20261203-120000/summary.json"
    assert (sweep / g10["runs"][1]["path"]).is_file()  # relative to the sweep folder

    # each group's own files are what the aggregate CLI writes for the same folders
    for group, points in ((g0, (0, 1, 2)), (g10, (3, 4))):
        folders = [str(next((sweep / "runs" / f"{i:03d}").glob("*/*"))) for i in points]
        out = by_hand / group["values"]["snr"]
        assert aggregate_main([*folders, "--out", str(out), "--curve", "round", "loss"]) == 0
        mine = strict_json(sweep / group["folder"] / "aggregate.json")
        assert mine.pop("failed_seeds") == group["failed_seeds"]
        theirs = strict_json(out / "aggregate.json")
        assert mine["metrics"] == theirs["metrics"] == group["metrics"]
        assert [r["seed"] for r in mine["runs"]] == [r["seed"] for r in theirs["runs"]]
        assert (sweep / group["folder"] / "aggregate_loss.png").is_file()  # --curve given

    with (sweep / "aggregate.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[:3] == ["snr", "metric", "mean"]
    acc = [(r["snr"], r["seeds"]) for r in table if r["metric"] == "final_test_accuracy"]
    assert acc == [("0", "0 1 2"), ("10", "0 1")]


def test_no_aggregate_without_a_seed_axis_and_unsafe_values_make_safe_folders(
    tmp_path: Path,
) -> None:
    rows = [_point(tmp_path, 0, 0, 0.5, snr="0")]
    assert seed_aggregates(tmp_path, ["snr"], rows) == []
    assert not (tmp_path / "aggregate.json").exists()
    sweep = tmp_path / "s"
    rows = [_point(sweep, i, 0, 0.5, m=m) for i, m in enumerate(("[a,b]", "a/b"))]
    written = seed_aggregates(sweep, ["m", "seed"], rows)
    assert [p.name for p in written] == ["m=_a,b_", "m=a_b"]
    assert all(p.parent == (sweep / "aggregate").resolve() for p in written)


# ------------------------------------------------------------------ a real sweep (slow)
def _sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulations.sweep", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _without_wall(agg: dict[str, Any]) -> dict[str, Any]:
    """The aggregate's metrics, wall-time metrics (last dotted part in WALL) left out."""
    return {k: v for k, v in agg["metrics"].items() if k.rsplit(".", 1)[-1] not in WALL}


@pytest.mark.slow
def test_seed_sweep_aggregates_and_a_resumed_sweep_gives_the_same_aggregate(
    tmp_path: Path,
) -> None:
    """Two seeds of split_supervised (tiny); then the second point is lost (its folder
    removed, as if the sweep was killed before it started) and ``--resume`` runs it again."""
    words = ["--experiment", "split_supervised", "seed=0,1", "--overrides", SPLIT_TINY]
    res = _sweep(*words, "--output-dir", str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "split_supervised").iterdir()
    first = strict_json(sweep_dir / "aggregate.json")
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
    accs = [float(r["final_test_accuracy"]) for r in rows]
    m = first["metrics"]["final_test_accuracy"]
    assert (m["seeds"], m["values"], m["n"]) == ([0, 1], accs, 2)
    assert m["mean"] == pytest.approx(sum(accs) / 2)
    assert first["failed_seeds"] == []
    assert (sweep_dir / "aggregate_test_accuracy.png").is_file()  # round vs test accuracy
    assert (sweep_dir / "aggregate_test_accuracy.pdf").is_file()
    assert len([strict_json(f) for f in sweep_dir.rglob("*.json")]) > 6  # points, runs, sweep

    shutil.rmtree(sweep_dir / "runs" / "001")
    again = _sweep("--resume", str(sweep_dir))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "point 1/2: finished already" in again.stdout
    resumed = strict_json(sweep_dir / "aggregate.json")
    assert _without_wall(resumed) == _without_wall(first)
    assert resumed["runs"][0] == first["runs"][0]
    assert any(k.rsplit(".", 1)[-1] in WALL for k in first["metrics"])  # something was left out
