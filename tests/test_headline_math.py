"""The arithmetic behind the headline figures, against values worked by hand in the comments.

- paper 1 ``summary.json`` (simulations/experiments/_paper1_summary.py): the target accuracy,
  ``stage2_rounds_to_target``, ``stage2_bits_to_target`` (round-granular: the cumulative Stage
  II payload bits of the first round at or above the target), Stage I / II bits from a ledger,
  and ``decur_to_supervised_bits_ratio``;
- paper 3 gains (flwr_semcom/multitask/report.py): ``relative_gain`` and ``gains``;
- flwr_semcom.stats: the Student-t interval and the interpolated ``bits_to_target``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from flwr_semcom.accounting import CommLedger
from flwr_semcom.multitask.report import gains, relative_gain
from flwr_semcom.multitask.tasks import build_task
from flwr_semcom.stats import bits_to_target, ci95, summarize
from simulations.experiments._paper1_summary import stage_bits
from simulations.experiments._paper1_summary import summarize as paper1_summary

BITS_PER_ROUND = 1000.0  # cumulative Stage II payload bits grow by this much per round


def _rows(method: str, accs: list[float]) -> list[dict[str, Any]]:
    return [
        {
            "method": method,
            "stage": "finetune",
            "round": r,
            "test_accuracy": a,
            "bits": BITS_PER_ROUND * r,
        }
        for r, a in enumerate(accs, start=1)
    ]


def _ledger(pre_up: int, pre_down: int, ctrl_up: int, ctrl_down: int) -> CommLedger:
    led = CommLedger()
    led.record(direction="up", stage="pretrain", kind="features", nbytes=pre_up, round=1)
    led.record(direction="down", stage="pretrain", kind="gradients", nbytes=pre_down, round=1)
    led.record(direction="up", stage="pretrain", kind="control", nbytes=ctrl_up, round=1)
    led.record(direction="down", stage="pretrain", kind="control", nbytes=ctrl_down, round=1)
    for r in (1, 2, 3, 4):
        led.record(direction="up", stage="finetune", kind="features", nbytes=60, round=r)
        led.record(direction="down", stage="finetune", kind="gradients", nbytes=65, round=r)
        led.record(direction="down", stage="finetune", kind="control", nbytes=7, round=r)
        # evaluation traffic is its own stage: never in Stage II bits
        led.record(direction="up", stage="eval", kind="features", nbytes=999, round=r)
    return led


SUPERVISED = [0.50, 0.70, 0.90, 0.80]  # final 0.80 = the target; first >= 0.80: round 3
DECUR = [0.60, 0.85, 0.70, 0.95]  # first >= 0.80: round 2 (the dip in round 3 does not matter)
SIMCLR = [0.40, 0.50, 0.60, 0.79]  # never reaches 0.80


def _methods(*labels: str) -> dict[str, dict[str, Any]]:
    return {m: {"method": m, "status": "ok"} for m in labels}


def test_paper1_summary_by_hand() -> None:
    rows = _rows("decur", DECUR) + _rows("simclr", SIMCLR) + _rows("supervised", SUPERVISED)
    ledgers = {
        "decur": _ledger(pre_up=100, pre_down=40, ctrl_up=3, ctrl_down=5),
        "simclr": _ledger(pre_up=0, pre_down=0, ctrl_up=0, ctrl_down=2),
        "supervised": CommLedger(),
    }
    s = paper1_summary(rows, _methods("decur", "simclr", "supervised"), ledgers, None)
    assert s["target_accuracy"] == 0.80
    assert s["target_source"] == "final accuracy of supervised"
    d, c, sup = (s["methods"][m] for m in ("decur", "simclr", "supervised"))
    assert (d["stage2_rounds_to_target"], d["stage2_bits_to_target"]) == (2, 2000.0)
    assert (sup["stage2_rounds_to_target"], sup["stage2_bits_to_target"]) == (3, 3000.0)
    assert (c["stage2_rounds_to_target"], c["stage2_bits_to_target"]) == (None, None)
    # ratio = DeCUR's bits to target / supervised's = 2000 / 3000
    assert s["decur_to_supervised_bits_ratio"] == pytest.approx(2.0 / 3.0, rel=1e-15)
    assert (d["best_accuracy"], d["final_accuracy"], d["finetune_rounds"]) == (0.95, 0.95, 4)
    # Stage I: payload 8 * (100 + 40) = 1120 bits, control 8 * (3 + 5) = 64 bits
    assert (d["stage1_bits"], d["stage1_control_bits"]) == (1120.0, 64.0)
    assert (c["stage1_bits"], c["stage1_control_bits"]) == (0.0, 16.0)
    # Stage II: 4 rounds * 8 * (60 + 65) = 4000 bits, control 4 * 8 * 7 = 224 bits; eval excluded
    assert (d["stage2_bits"], d["stage2_control_bits"]) == (4000.0, 224.0)
    assert sup["stage1_bits"] == sup["stage2_bits"] == 0.0


def test_paper1_stage_bits_up_to_a_round() -> None:
    led = _ledger(pre_up=100, pre_down=40, ctrl_up=3, ctrl_down=5)
    # rounds 1-2 of Stage II: up 2 * 60 = 120, down 2 * 65 = 130, control 2 * 7 = 14 bytes
    assert stage_bits(led, "finetune", max_round=2) == {
        "up_bytes": 120,
        "down_bytes": 130,
        "control_bytes": 14,
        "channel_uses": 0,
    }
    assert stage_bits(led, "pretrain") == {
        "up_bytes": 100,
        "down_bytes": 40,
        "control_bytes": 8,
        "channel_uses": 0,
    }


def test_paper1_target_sources_and_tolerance() -> None:
    rows = _rows("decur", DECUR) + _rows("supervised", SUPERVISED)
    # a set target wins; 0.85 is first reached by DeCUR in round 2, by supervised in round 3
    s = paper1_summary(rows, _methods("decur", "supervised"), {}, 0.85)
    assert (s["target_accuracy"], s["target_source"]) == (0.85, "experiment.target_accuracy")
    assert s["methods"]["decur"]["stage2_rounds_to_target"] == 2
    assert s["decur_to_supervised_bits_ratio"] == pytest.approx(2000.0 / 3000.0)
    # an accuracy 1e-12 below the target counts as reached (tolerance 1e-9), 1e-6 below not
    near = _rows("decur", [0.85 - 1e-12]) + _rows("supervised", [0.85 - 1e-6, 0.9])
    s = paper1_summary(near, _methods("decur", "supervised"), {}, 0.85)
    assert s["methods"]["decur"]["stage2_rounds_to_target"] == 1
    assert s["methods"]["supervised"]["stage2_rounds_to_target"] == 2
    # a diverged baseline does not set the target: the lowest final accuracy does (0.80 vs 0.95)
    methods = _methods("decur", "supervised")
    methods["supervised"]["status"] = "diverged"
    s = paper1_summary(rows, methods, {}, None)
    assert s["target_accuracy"] == 0.80
    assert s["target_source"] == "lowest final accuracy among the methods"
    # no Stage II row at all: no target, no ratio
    s = paper1_summary([], _methods("decur", "supervised"), {}, None)
    assert math.isnan(s["target_accuracy"]) and s["decur_to_supervised_bits_ratio"] is None


def test_main_job_documented_ratio() -> None:
    # docs/results.md: every method moves 9.83e5 Stage II bits per round (240 scenes x 2
    # devices x 32 reals x 4 bytes x 2 directions x 8 bits = 983,040); DeCUR first reaches
    # the supervised final accuracy (0.945) in round 7, supervised in round 10: 7 / 10 = 0.70.
    # Per-round accuracies: the table of docs/results.md (third digit from the run where known).
    per_round = 240 * 2 * 32 * 4 * 2 * 8
    assert per_round == 983_040
    dec = [0.368, 0.810, 0.797, 0.842, 0.792, 0.758, 0.961, 0.950, 0.965, 0.975, 0.985, 0.980]
    sup = [0.258, 0.462, 0.490, 0.632, 0.693, 0.655, 0.868, 0.848, 0.925, 0.950, 0.940, 0.945]
    rows = [
        {"method": m, "stage": "finetune", "round": r, "test_accuracy": a, "bits": per_round * r}
        for m, accs in (("decur", dec), ("supervised", sup))
        for r, a in enumerate(accs, start=1)
    ]
    s = paper1_summary(rows, _methods("decur", "supervised"), {}, None)
    assert s["target_accuracy"] == 0.945
    assert s["methods"]["decur"]["stage2_bits_to_target"] == 7 * 983_040  # 6.88e6
    assert s["methods"]["supervised"]["stage2_bits_to_target"] == 10 * 983_040  # 9.83e6
    assert s["decur_to_supervised_bits_ratio"] == pytest.approx(0.7, rel=1e-15)
    # the interpolated crossing (flwr_semcom.stats) moves little here: DeCUR 6 + (0.945 -
    # 0.758) / (0.961 - 0.758) = 6.9212 rounds, supervised 9 + 0.02 / 0.025 = 9.8 rounds
    rounds = list(range(1, 13))
    assert bits_to_target(rounds, dec, 0.945) == pytest.approx(6 + 0.187 / 0.203, abs=1e-12)
    assert bits_to_target(rounds, sup, 0.945) == pytest.approx(9.8, abs=1e-12)


def test_bits_to_target_by_hand() -> None:
    # first crossing between (2e6, 0.5) and (3e6, 0.7) for 0.6: 2e6 + 0.1 / 0.2 * 1e6 = 2.5e6
    assert bits_to_target([1e6, 2e6, 3e6], [0.4, 0.5, 0.7], 0.6) == 2.5e6
    # reached at the first point: that point's bits (no earlier point to interpolate from)
    assert bits_to_target([10.0, 20.0], [0.9, 0.95], 0.8) == 10.0
    # exactly on a point: that point; later dips ignored; never: None
    assert bits_to_target([1.0, 2.0, 3.0, 4.0], [0.1, 0.6, 0.2, 0.9], 0.6) == 2.0
    assert bits_to_target([1.0, 2.0], [0.1, 0.2], 0.3) is None


def test_ci95_of_one_two_three_by_hand() -> None:
    # x = (1, 2, 3): mean 2, s = 1, s / sqrt 3 = 0.5773503; t_{0.975, 2} = 4.302652729749464
    # half width = 4.302652729749464 / sqrt 3 = 2.4841377118...
    half = 4.302652729749464 / math.sqrt(3.0)
    assert half == pytest.approx(2.484137711, abs=1e-9)
    low, high = ci95([1.0, 2.0, 3.0]) or (math.nan, math.nan)
    assert low == pytest.approx(2.0 - half, abs=1e-12)
    assert high == pytest.approx(2.0 + half, abs=1e-12)
    s = summarize([3.0, 1.0, 2.0])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)


def test_relative_gain_by_hand() -> None:
    cls, depth = build_task("classification"), build_task("depth")
    assert cls.higher_is_better and not depth.higher_is_better
    # accuracy 0.66 vs 0.60: +0.06 / 0.60 = +10 %; 0.57 vs 0.60: -5 %
    assert relative_gain(cls, 0.66, 0.60) == pytest.approx(10.0, abs=1e-12)
    assert relative_gain(cls, 0.57, 0.60) == pytest.approx(-5.0, abs=1e-12)
    # depth error (lower is better) 0.09 vs 0.10: (0.10 - 0.09) / 0.10 = +10 %; 0.12: -20 %
    assert relative_gain(depth, 0.09, 0.10) == pytest.approx(10.0, abs=1e-12)
    assert relative_gain(depth, 0.12, 0.10) == pytest.approx(-20.0, abs=1e-12)
    # a zero baseline has no relative gain
    assert math.isnan(relative_gain(cls, 0.5, 0.0))


def test_gains_table_by_hand() -> None:
    cls, depth = build_task("classification"), build_task("depth")
    acc, err = f"{cls.name}_{cls.metric}", f"{depth.name}_{depth.metric}"

    def row(method: str, snr: float, a: float, e: float) -> dict[str, Any]:
        return {"method": method, "ratio": 0.25, "snr_db": snr, "round": 4, acc: a, err: e}

    rows = [
        row("gai", 14.0, 0.66, 0.09),
        row("separate", 14.0, 0.60, 0.10),  # +10 %, +10 %: mean +10 %
        row("gai_w", 14.0, 0.55, 0.12),  # 0.11 / 0.55 = +20 %, 0.03 / 0.12 = +25 %: mean +22.5 %
        row("gai", -2.0, 0.50, 0.20),
        row("separate", -2.0, 0.40, 0.25),  # +25 %, +20 %: mean +22.5 %
        row("separate", 6.0, 0.40, 0.25),  # no GAI row at 6 dB: no gain row
    ]
    out = gains(rows, [cls, depth])
    got = {(g["baseline"], g["snr_db"]): g for g in out}
    assert set(got) == {("separate", 14.0), ("gai_w", 14.0), ("separate", -2.0)}
    want = {
        ("separate", 14.0): (10.0, 10.0, 10.0),
        ("gai_w", 14.0): (20.0, 25.0, 22.5),
        ("separate", -2.0): (25.0, 20.0, 22.5),
    }
    for key, (g_acc, g_err, g_mean) in want.items():
        g = got[key]
        assert g[f"gain_{cls.name}_pct"] == pytest.approx(g_acc, abs=1e-9)
        assert g[f"gain_{depth.name}_pct"] == pytest.approx(g_err, abs=1e-9)
        assert g["gain_mean_pct"] == pytest.approx(g_mean, abs=1e-9)
        assert g["R"] == "1/4"
    # ordered by (R, SNR): -2 dB before 14 dB
    assert [g["snr_db"] for g in out][0] == -2.0
