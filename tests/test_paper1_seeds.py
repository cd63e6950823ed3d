"""Paper 1 over seeds (simulations/experiments/_paper1_seeds.py) against values worked by hand.

Three hand-made seeds, three methods, three Stage II rounds of 100 payload bits each
(cumulative 100, 200, 300). Supervised finals 0.70 / 0.80 / 0.96, so the common target is
their mean 0.82; every expected number below is worked out in the comments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from simulations.experiments._paper1_seeds import main, write_report

T_975_2 = 4.302652729749464  # Student t_{0.975, 2} (3 seeds)
T_975_1 = 12.706204736174694  # Student t_{0.975, 1} (2 seeds)

# per seed: method -> Stage II test accuracy in rounds 1-3
CURVES: dict[int, dict[str, list[float]]] = {
    0: {
        "decur": [0.60, 0.85, 0.80],
        "simclr": [0.40, 0.60, 0.75],
        "supervised": [0.50, 0.90, 0.70],
    },
    1: {
        "decur": [0.90, 0.88, 0.92],
        "simclr": [0.50, 0.83, 0.81],
        "supervised": [0.40, 0.60, 0.80],
    },
    2: {
        "decur": [0.70, 0.80, 0.97],
        "simclr": [0.30, 0.50, 0.70],
        "supervised": [0.62, 0.72, 0.96],
    },
}
STAGE1 = {0: 120, 1: 120, 2: 130}  # DeCUR's Stage I bits per seed (largest cumulative value)
HEADER = "method,stage,round,snr_db,loss,test_accuracy,up_bytes,down_bytes,bits\n"


def _write_seed(root: Path, seed: int, curves: dict[str, list[float]]) -> Path:
    folder = root / f"seed{seed}" / "main" / "20260101-000000"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\nexperiment:\n  name: main\n")
    lines = [HEADER]
    # Stage I rows: DeCUR (split) moves bits, SimCLR (local) none; no test accuracy there
    lines.append("decur,pretrain,1,10.0,1.0,,0,0,50\n")
    lines.append(f"decur,pretrain,2,10.0,0.9,,0,0,{STAGE1[seed]}\n")
    lines.append("simclr,pretrain,1,10.0,1.0,,0,0,0\n")
    for method, accs in curves.items():
        # written in reverse round order: the reader sorts by round
        for r in (3, 2, 1):
            lines.append(f"{method},finetune,{r},10.0,0.5,{accs[r - 1]},0,0,{100 * r}\n")
    (folder / "metrics.csv").write_text("".join(lines))
    return root / f"seed{seed}"


@pytest.fixture
def report(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    folders = [_write_seed(tmp_path, s, c) for s, c in CURVES.items()]
    return write_report(folders[::-1]), tmp_path


def test_target_finals_best_and_stage1(report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    assert rep["seeds"] == [0, 1, 2] and rep["n_seeds"] == 3
    assert rep["target_accuracy"] == pytest.approx((0.70 + 0.80 + 0.96) / 3, abs=1e-12)  # 0.82
    assert rep["primary_test"] == "paired-t"
    d = rep["methods"]["decur"]
    # finals 0.80, 0.92, 0.97: mean 0.89667; deviations -0.096667, 0.023333, 0.073333;
    # squares sum 0.0152667, / 2 = 0.00763333, s = 0.0873689
    f = d["final_accuracy"]
    assert f["values"] == [0.80, 0.92, 0.97]
    assert f["mean"] == pytest.approx(0.8966667, abs=1e-7)
    assert f["std"] == pytest.approx(0.0873689, abs=1e-7)
    half = T_975_2 * 0.0873689 / math.sqrt(3)  # 0.2170363
    assert f["ci95_low"] == pytest.approx(0.8966667 - half, abs=1e-6)
    assert f["ci95_high"] == pytest.approx(0.8966667 + half, abs=1e-6)
    assert d["best_accuracy"]["values"] == [0.85, 0.92, 0.97]  # the test max, not the final
    assert rep["methods"]["supervised"]["best_accuracy"]["values"] == [0.90, 0.80, 0.96]
    assert d["stage1_bits"]["values"] == [120, 120, 130]
    assert d["stage1_bits"]["mean"] == pytest.approx(370 / 3, abs=1e-9)
    assert rep["methods"]["simclr"]["stage1_bits"]["values"] == [0, 0, 0]
    assert rep["methods"]["supervised"]["stage1_bits"]["values"] == [0, 0, 0]  # no Stage I rows
    assert d["stage2_bits"]["values"] == [300, 300, 300]
    assert d["total_bits"]["values"] == [420, 420, 430]


def test_bits_to_target_interpolated(report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    m = rep["methods"]
    # supervised, target 0.82: seed 0 between (100, 0.50) and (200, 0.90):
    # 100 + 0.32 / 0.40 * 100 = 180; seed 1 never (0.80 at most); seed 2 between (200, 0.72)
    # and (300, 0.96): 200 + 0.10 / 0.24 * 100 = 725 / 3
    sup = m["supervised"]["stage2_bits_to_target"]
    assert sup["seeds"] == [0, 2] and sup["missing_seeds"] == [1] and sup["n_reached"] == 2
    assert sup["values"] == pytest.approx([180.0, 725 / 3], abs=1e-9)
    # DeCUR: seed 0: 100 + 0.22 / 0.25 * 100 = 188; seed 1: round 1 already (0.90) -> 100;
    # seed 2: 200 + 0.02 / 0.17 * 100 = 3600 / 17
    dec = m["decur"]["stage2_bits_to_target"]
    assert dec["n_reached"] == 3
    assert dec["values"] == pytest.approx([188.0, 100.0, 3600 / 17], abs=1e-9)
    # SimCLR reaches 0.82 only in seed 1: 100 + 0.32 / 0.33 * 100 (the dip to 0.81 after it
    # does not matter)
    sim = m["simclr"]["stage2_bits_to_target"]
    assert (sim["n_reached"], sim["seeds"], sim["missing_seeds"]) == (1, [1], [0, 2])
    assert sim["values"] == pytest.approx([100 + 3200 / 33], abs=1e-9)
    assert sim["std"] is None and sim["ci95_low"] is None  # one seed: no interval


def test_bits_ratio_interpolated_and_round_granular(report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    r = rep["decur_to_supervised_bits_ratio"]["interpolated_common_target"]
    # seed 0: 188 / 180 = 47 / 45; seed 1: supervised never reaches -> no ratio;
    # seed 2: (3600 / 17) / (725 / 3) = 432 / 493
    a, b = 47 / 45, 432 / 493
    assert r["seeds"] == [0, 2] and r["missing_seeds"] == [1]
    assert r["values"] == pytest.approx([a, b], abs=1e-12)
    mean, s = (a + b) / 2, abs(a - b) / math.sqrt(2)
    assert r["mean"] == pytest.approx(mean, abs=1e-12)
    assert r["ci95_low"] == pytest.approx(mean - T_975_1 * s / math.sqrt(2), abs=1e-9)
    # summary.json's measure: own target (that seed's supervised final), bits of the first
    # round at or above it: seed 0 target 0.70: DeCUR round 2 (0.85), supervised round 2
    # (0.90) -> 1; seed 1 target 0.80: 100 / 300; seed 2 target 0.96: 300 / 300
    own = rep["decur_to_supervised_bits_ratio"]["round_granular_own_target"]
    assert own["values"] == pytest.approx([1.0, 1 / 3, 1.0], abs=1e-12)
    assert own["mean"] == pytest.approx(7 / 9, abs=1e-12)


def test_paired_tests_by_hand(report: tuple[dict[str, Any], Path]) -> None:
    rep, _ = report
    tests = {t["b"]: t for t in rep["paired_tests"]}
    assert sorted(tests) == ["simclr", "supervised"]
    sup = tests["supervised"]
    assert (sup["a"], sup["metric"], sup["seeds"]) == ("decur", "final_accuracy", [0, 1, 2])
    # d = 0.10, 0.12, 0.01: mean 0.0766667; deviations 0.023333, 0.043333, -0.066667;
    # squares sum 0.00686667, / 2 -> s_d = 0.0585947; t = 0.0766667 / (s_d / sqrt 3) = 2.26626
    t = 0.0766667 / (0.0585947 / math.sqrt(3))
    assert sup["t"]["statistic"] == pytest.approx(t, rel=1e-5)
    # Student t with 2 df: P(|T| > t) = 1 - t / sqrt(2 + t^2) = 0.151629
    assert sup["t"]["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-4)
    assert sup["t"]["mean_diff"] == pytest.approx(0.23 / 3, abs=1e-12)
    # Wilcoxon: all 3 differences positive -> smaller rank sum 0, exact p = 2 / 2^3 = 0.25
    assert (sup["wilcoxon"]["statistic"], sup["wilcoxon"]["p_value"]) == (0.0, 0.25)
    sim = tests["simclr"]
    # d = 0.80 - 0.75, 0.92 - 0.81, 0.97 - 0.70 = 0.05, 0.11, 0.27: all positive
    assert sim["t"]["mean_diff"] == pytest.approx(0.43 / 3, abs=1e-12)
    assert sim["wilcoxon"]["p_value"] == 0.25


def test_files_written_strict_json_csv_figure(report: tuple[dict[str, Any], Path]) -> None:
    rep, out = report

    def no_nan(token: str) -> None:
        raise AssertionError(f"non-strict JSON token {token}")

    data = json.loads((out / "paper1_seeds.json").read_text(), parse_constant=no_nan)
    assert data["seeds"] == [0, 1, 2]
    assert data["runs"][0]["path"] == "seed0"  # relative to the output folder
    assert data["methods"]["simclr"]["stage2_bits_to_target"]["missing_seeds"] == [0, 2]
    rows = (out / "paper1_seeds.csv").read_text().splitlines()
    assert rows[0].startswith("metric,mean,std,ci95_low,ci95_high,n,seeds,missing_seeds")
    sim = next(r for r in rows if r.startswith("methods.simclr.stage2_bits_to_target,"))
    assert sim.endswith(",1,1,0 2")  # n, seeds, missing seeds
    # per-round mean of supervised in round 2: (0.90 + 0.60 + 0.72) / 3 = 0.74
    sup2 = data["per_round"]["supervised"]["test_accuracy"][1]
    assert sup2["mean"] == pytest.approx(0.74, abs=1e-12) and sup2["n"] == 3
    for name in ("paper1_seeds_accuracy.png", "paper1_seeds_accuracy.pdf"):
        assert (out / name).stat().st_size > 1000


def test_missing_baseline_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_seed(tmp_path, 0, CURVES[0])
    b = _write_seed(tmp_path, 1, {k: v for k, v in CURVES[1].items() if k != "supervised"})
    assert main([str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: seed 1") and "'supervised'" in err and "\n" not in err
    assert not (tmp_path / "paper1_seeds.json").exists()


def test_val_selected_figures_and_paired_tests(tmp_path: Path) -> None:
    """With a ``val_accuracy`` column: per seed, the test accuracy at the earliest round of
    highest validation accuracy; the test accuracies never move the selection."""
    val = {  # per seed: method -> validation accuracy in rounds 1-3
        0: {"decur": [0.5, 0.9, 0.9], "supervised": [0.3, 0.4, 0.8]},
        1: {"decur": [0.7, 0.6, 0.8], "supervised": [0.6, 0.7, 0.5]},
        2: {"decur": [0.9, 0.8, 0.7], "supervised": [0.2, 0.5, 0.6]},
    }
    folders = []
    for seed in (0, 1, 2):
        folder = tmp_path / f"seed{seed}" / "main" / "20260101-000000"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(f"seed: {seed}\n")
        lines = ["method,stage,round,test_accuracy,val_accuracy,bits\n"]
        for method in ("decur", "supervised"):
            for r in (1, 2, 3):
                test = CURVES[seed][method][r - 1]
                lines.append(f"{method},finetune,{r},{test},{val[seed][method][r - 1]},{100 * r}\n")
        (folder / "metrics.csv").write_text("".join(lines))
        folders.append(tmp_path / f"seed{seed}")
    rep = write_report(folders, tmp_path / "out")
    dec, sup = rep["methods"]["decur"], rep["methods"]["supervised"]
    # DeCUR selects rounds 2 (tie 0.9 with round 3: earliest), 3, 1 -> test 0.85, 0.92, 0.70
    assert dec["val_selected_round"]["values"] == [2, 3, 1]
    assert dec["test_accuracy_at_val_selected"]["values"] == [0.85, 0.92, 0.70]
    assert dec["val_accuracy_at_selected"]["values"] == [0.9, 0.8, 0.9]
    # supervised: rounds 3, 2, 3 -> 0.70, 0.60, 0.96
    assert sup["test_accuracy_at_val_selected"]["values"] == [0.70, 0.60, 0.96]
    assert dec["test_accuracy_at_val_selected"]["mean"] == pytest.approx(2.47 / 3, abs=1e-12)
    t = rep["paired_tests_val_selected"][0]
    assert (t["a"], t["b"], t["metric"]) == ("decur", "supervised", "test_accuracy_at_val_selected")
    # d = 0.15, 0.32, -0.26: mean 0.07
    assert t["t"]["mean_diff"] == pytest.approx(0.07, abs=1e-12)
    assert rep["paired_tests"][0]["metric"] == "final_accuracy"
    assert rep["per_round"]["decur"]["val_accuracy"][1]["values"] == [0.9, 0.6, 0.8]
