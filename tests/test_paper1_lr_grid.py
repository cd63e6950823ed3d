"""simulations/paper1_lr_grid.py: the lr is chosen on validation only, and the seed comparison
takes each method at its chosen lr from the right runs (issue #18, item 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulations.paper1_lr_grid import choose_lr, main

METHODS = ("decur", "simclr", "barlow_twins", "supervised")


def _row(val: float | None, test: float, final: float, status: str = "ok") -> dict[str, Any]:
    return {
        "status": status,
        "val_selected_round": 3,
        "val_accuracy_at_selected": val,
        "test_accuracy_at_val_selected": test,
        "final_accuracy": final,
    }


def test_choose_lr_reads_validation_only_breaks_ties_low_and_skips_failed_runs() -> None:
    # the highest test accuracy (0.99 at 0.2) must not matter: validation decides
    per_lr = {
        "0.05": _row(0.90, 0.80, 0.80),
        "0.1": _row(0.95, 0.70, 0.70),
        "0.2": _row(0.93, 0.99, 0.99),
    }
    assert choose_lr(per_lr) == "0.1"
    tie = {"0.2": _row(0.95, 0.5, 0.5), "0.05": _row(0.95, 0.6, 0.6), "0.1": _row(0.94, 0.9, 0.9)}
    assert choose_lr(tie) == "0.05"
    failed = {"0.1": _row(0.99, 0.9, 0.9, status="diverged"), "0.05": _row(0.5, 0.5, 0.5)}
    assert choose_lr(failed) == "0.05"
    assert choose_lr({"0.1": _row(None, 0.9, 0.9)}) is None


def _write(folder: Path, rows: dict[str, dict[str, Any]]) -> None:
    run = folder / "main" / "20261203-000000"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"methods": rows, "wall_time_s": 1.0}))


def test_seed_comparison_takes_each_method_at_its_chosen_lr(tmp_path: Path) -> None:
    # grid on seed 0: supervised is best on validation at 0.1, DeCUR at 0.05
    vals = {"0.05": {"decur": 0.9, "supervised": 0.7}, "0.1": {"decur": 0.8, "supervised": 0.8}}
    for lr, v in vals.items():
        rows = {m: _row(v.get(m, 0.5), 0.0, 0.0) for m in METHODS}
        _write(tmp_path / f"grid{lr}", rows)
    # per-seed runs at the base lr: test accuracy 0.9 + seed/100 for DeCUR, 0.6 for the rest
    for seed in (1, 2):
        rows = {m: _row(0.5, 0.6, 0.6) for m in METHODS}
        rows["decur"] = _row(0.5, 0.9 + seed / 100, 0.9 + seed / 100)
        _write(tmp_path / f"base{seed}", rows)
        _write(tmp_path / f"chosen_supervised_{seed}", {"supervised": _row(0.5, 0.85, 0.86)})
    out = tmp_path / "out"
    rc = main(
        [
            "--grid", f"0.05={tmp_path / 'grid0.05'}", f"0.1={tmp_path / 'grid0.1'}",
            "--base", str(tmp_path / "base{seed}"),
            "--chosen", str(tmp_path / "chosen_{method}_{seed}"),
            "--seeds", "1", "2",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    seeds = json.loads((out / "chosen_lr_seeds.json").read_text(), parse_constant=_no_nan)
    assert seeds["validation_choice"]["supervised"] == "0.1"
    assert seeds["validation_choice"]["decur"] == "0.05"
    sup = seeds["per_method"]["supervised"]["final_accuracy"]
    assert sup["values"] == [0.86, 0.86]  # the one-method runs at 0.1, not the base runs (0.6)
    dec = seeds["per_method"]["decur"]["final_accuracy"]
    assert dec["values"] == pytest.approx([0.91, 0.92])
    diff = seeds["paired"]["decur-supervised/final_accuracy"]["t"]["mean_diff"]
    assert diff == pytest.approx(0.915 - 0.86)
    assert (out / "table.md").read_text().count("| supervised | 0.1 |") == 1


def _no_nan(name: str) -> None:
    raise ValueError(f"non-strict JSON constant {name}")


def test_grid_folder_without_a_summary_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"--grid 0.1=.*no main/\*/summary.json"):
        main(
            [
                "--grid", f"0.1={tmp_path}",
                "--base", "x{seed}", "--chosen", "y{method}{seed}", "--out", str(tmp_path / "o"),
            ]
        )  # fmt: skip


def test_a_folder_with_two_runs_is_refused_not_guessed(tmp_path: Path) -> None:
    for stamp in ("20260101-000000", "20260102-000000"):
        (tmp_path / "main" / stamp).mkdir(parents=True)
        (tmp_path / "main" / stamp / "summary.json").write_text('{"methods": {}}')
    with pytest.raises(SystemExit, match="several runs .*20260101-000000, 20260102-000000"):
        main(
            [
                "--grid", f"0.1={tmp_path}",
                "--base", "x{seed}", "--chosen", "y{method}{seed}", "--out", str(tmp_path / "o"),
            ]
        )  # fmt: skip
