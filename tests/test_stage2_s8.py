"""benchmarks/stage2_s8.py: one-method main-job runs at S > 1 paired by seed with the exact
S = 1 runs of docs/results/paper1_seeds; the gap by hand; --merge adds methods to a block."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXACT = json.loads((ROOT / "docs/results/paper1_seeds/paper1_seeds.json").read_text())


def write_run(runs: Path, method: str, seed: int, final: float, val_sel: float) -> None:
    folder = runs / method / f"seed{seed}" / "main" / "20261204-000000"
    folder.mkdir(parents=True)
    entry = {"final_accuracy": final, "test_accuracy_at_val_selected": val_sel, "status": "ok"}
    (folder / "summary.json").write_text(json.dumps({"methods": {method: entry}}))


def test_gap_is_the_paired_difference_by_seed(tmp_path: Path) -> None:
    from benchmarks.stage2_s8 import main

    ref = EXACT["methods"]["simclr"]["final_accuracy"]
    exact = dict(zip(ref["seeds"], ref["values"], strict=True))
    mine = {0: 0.90, 2: 0.96}  # seeds 0 and 2 only: pairing must follow the seed
    for seed, acc in mine.items():
        write_run(tmp_path, "simclr", seed, acc, acc)
    out = tmp_path / "out.json"
    assert main([str(tmp_path), "--methods", "simclr", "--into", str(out), "--key", "k"]) == 0
    block = json.loads(out.read_text())["k"]
    assert block["exact_s1"] == "docs/results/paper1_seeds/paper1_seeds.json"
    got = block["simclr"]["final_accuracy"]
    assert got["exact_s1"]["values"] == [exact[0], exact[2]]
    assert got["this"]["values"] == [0.90, 0.96]
    diffs = [exact[0] - 0.90, exact[2] - 0.96]
    mean = sum(diffs) / 2
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs))  # n - 1 = 1
    t = mean / (sd / math.sqrt(2))
    gap = got["gap_paired_t"]
    assert gap["mean_diff"] == pytest.approx(mean, abs=1e-12)
    assert gap["statistic"] == pytest.approx(t, rel=1e-9)
    # df 1: two-sided p = 1 - 2 atan(|t|) / pi (Cauchy)
    assert gap["p_value"] == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi, rel=1e-9)


def test_merge_adds_methods_and_keeps_the_block(tmp_path: Path) -> None:
    from benchmarks.stage2_s8 import main

    for seed in (0, 1):
        write_run(tmp_path, "supervised", seed, 0.9, 0.9)
        write_run(tmp_path, "barlow_twins", seed, 0.8, 0.85)
    out = tmp_path / "out.json"
    args = [str(tmp_path), "--into", str(out), "--key", "k"]
    main([*args, "--methods", "supervised", "--label", "L", "--command", "first"])
    first = json.loads(out.read_text())["k"]["supervised"]
    main([*args, "--methods", "barlow_twins", "--command", "second", "--merge"])
    block = json.loads(out.read_text())["k"]
    assert block["supervised"] == first and block["label"] == "L"
    assert block["command"] == "first; second"
    assert block["barlow_twins"]["final_accuracy"]["this"]["values"] == [0.8, 0.8]
    with pytest.raises(SystemExit) as err:  # a method already in the block is refused
        main([*args, "--methods", "barlow_twins", "--merge"])
    assert err.value.code == 2
