"""benchmarks/edge.py --passes: the ratios of item 4 of issue #16 (deploy / sim / in-process
Stage II pass), paired within each interleaved repeat, median and spread by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_edge_pass_ratios_pair_the_kinds_of_each_repeat() -> None:
    from benchmarks.edge import summarise_passes

    runs = [
        {"kind": "inprocess", "repeat": 0, "pass_median_s": 2.0},
        {"kind": "sim", "repeat": 0, "pass_median_s": 3.0},
        {"kind": "deploy", "repeat": 0, "pass_median_s": 30.0},
        {"kind": "deploy", "repeat": 1, "pass_median_s": 24.0},
        {"kind": "sim", "repeat": 1, "pass_median_s": 4.0},
        {"kind": "inprocess", "repeat": 1, "pass_median_s": 2.0},
        {"kind": "inprocess", "repeat": 2, "pass_median_s": 4.0},  # deploy, sim of 2 missing
    ]
    out = summarise_passes(runs)
    # repeat 0: 15, 1.5, 10; repeat 1: 12, 2, 6; medians of two = their means
    assert out["ratio_deploy_vs_inprocess"] == 13.5
    assert out["ratio_deploy_vs_inprocess_spread"] == {"min": 12.0, "max": 15.0}
    assert out["ratio_sim_vs_inprocess"] == 1.75
    assert out["ratio_deploy_vs_sim"] == 8.0
    assert out["ratio_deploy_vs_sim_repeats"] == 2
    assert out["inprocess"] == {"pass_s_median": 2.0, "runs": [2.0, 2.0, 4.0]}


def test_accuracy_gaps_are_copied_from_the_schedule_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import edge

    study = tmp_path / "study.json"
    assert edge.accuracy_keys(study) == {}  # no study yet: no keys
    gap = {"mean_diff": 0.0123456, "ci95_low": -0.01, "ci95_high": 0.035}
    study.write_text(
        json.dumps(
            {
                "accuracy_gap_s8": 0.0150004,
                "overrides_per_schedule": {"replay": "strategy.server_gradients=group_end"},
                "main_job_stage2_s8": {
                    "label": "replay + group_end",
                    "supervised": {"final_accuracy": {"gap_paired_t": gap}},
                },
            }
        )
    )
    monkeypatch.setattr(edge, "ROOT", tmp_path)  # the source is reported relative to the repository
    out = edge.accuracy_keys(study)
    assert out["accuracy_gap_s8"] == 0.015
    assert out["accuracy_gap_s8_main_stage2_supervised"] == 0.0123
    assert out["accuracy_gap_s8_main_stage2_supervised_ci95"] == [-0.01, 0.035]
    assert out["accuracy_source"] == "study.json"
    assert "accuracy_gap_s8_main_stage2_label" not in out
