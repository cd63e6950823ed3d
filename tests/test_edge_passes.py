"""benchmarks/edge.py --passes: the ratios of item 4 of issue #16 (deploy / sim / in-process
Stage II pass), paired within each interleaved repeat, median and spread by hand."""

from __future__ import annotations


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
