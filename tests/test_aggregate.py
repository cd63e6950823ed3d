"""simulations.aggregate on hand-made per-seed folders, checked against hand computations."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from simulations.aggregate import (
    default_curve,
    find_runs,
    flatten,
    main,
    seed_curves,
    write_aggregate,
)

# Three seeds; "acc" of decur is 0.90 / 0.92 / 0.94: mean 0.92, deviations -0.02, 0, 0.02,
# s^2 = 0.0008 / 2 = 0.0004, s = 0.02, s / sqrt 3 = 0.011547005,
# half width = t_{0.975,2} * 0.011547005 = 4.302653 * 0.011547005 = 0.0496828.
DECUR = [0.90, 0.92, 0.94]
SUP = [0.85, 0.90, 0.91]  # paired differences 0.05, 0.02, 0.03
SUP_BITS: list[float | None] = [None, 200.0, 300.0]  # seed 0 never reached the target


def _strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(token)

    return json.loads(text, parse_constant=refuse)


def _make_run(folder: Path, seed: int, summary: dict[str, Any], rows: Any = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\nstrategy:\n  rounds: 3\n")
    (folder / "summary.json").write_text(json.dumps(summary))
    if rows is not None:
        (folder / "metrics.json").write_text(json.dumps(rows))
    return folder


def _three_seeds(root: Path) -> list[Path]:
    folders = []
    for seed in (2, 0, 1):  # given out of order: the aggregate sorts by seed
        summary = {
            "methods": {
                "decur": {"acc": DECUR[seed], "bits_to_target": 100.0 + seed},
                "supervised": {"acc": SUP[seed], "bits_to_target": SUP_BITS[seed]},
            },
            "experiment": "main",
            "converged": True,
            "curve": [0.1 * seed, 0.5],
        }
        rows = [
            {"method": m, "round": r, "test_accuracy": 0.5 + 0.1 * r + 0.01 * seed + off}
            for m, off in (("decur", 0.05), ("supervised", 0.0))
            for r in (1, 2)
        ]
        folders.append(_make_run(root / f"seed{seed}", seed, summary, rows))
    return folders


def test_aggregate_by_hand(tmp_path: Path) -> None:
    folders = _three_seeds(tmp_path)
    agg = write_aggregate(folders)
    assert [r["seed"] for r in agg["runs"]] == [0, 1, 2]
    assert agg["runs"][0]["path"] == "seed0/summary.json"  # relative to the aggregate folder
    m = agg["metrics"]["methods.decur.acc"]
    assert m["mean"] == pytest.approx(0.92) and m["std"] == pytest.approx(0.02)
    assert m["ci95_low"] == pytest.approx(0.92 - 0.0496828, abs=1e-7)
    assert m["ci95_high"] == pytest.approx(0.92 + 0.0496828, abs=1e-7)
    assert (m["n"], m["seeds"], m["values"], m["missing_seeds"]) == (3, [0, 1, 2], DECUR, [])
    # a null in one seed: n = 2 over the seeds that reached it, and the gap is listed
    b = agg["metrics"]["methods.supervised.bits_to_target"]
    assert (b["mean"], b["n"], b["seeds"], b["missing_seeds"]) == (250.0, 2, [1, 2], [0])
    # strings and booleans are not metrics; list items are keyed by index
    assert not any(k.startswith(("experiment", "converged")) for k in agg["metrics"])
    assert agg["metrics"]["curve.0"]["mean"] == pytest.approx(0.1)
    assert agg["metrics"]["curve.1"]["std"] == 0.0
    assert "Student-t" in agg["statistic"]
    written = _strict((tmp_path / "aggregate.json").read_text())
    assert written["metrics"]["methods.decur.acc"]["values"] == DECUR


def test_aggregate_csv(tmp_path: Path) -> None:
    folders = _three_seeds(tmp_path)
    folders.append(_make_run(tmp_path / "seed7", 7, {"only_here": 3.5}))
    write_aggregate(folders)
    with (tmp_path / "aggregate.csv").open() as fh:
        rows = {r["metric"]: r for r in csv.DictReader(fh)}
    assert list(next(iter(rows.values())))[:6] == ["metric", "mean", "std", "ci95_low",
                                                   "ci95_high", "n"]  # fmt: skip
    acc = rows["methods.decur.acc"]
    assert float(acc["mean"]) == pytest.approx(0.92) and acc["n"] == "3"
    assert (acc["seeds"], acc["missing_seeds"]) == ("0 1 2", "7")
    one = rows["only_here"]  # one seed: no std and no interval (empty cells)
    assert (one["mean"], one["std"], one["ci95_low"], one["ci95_high"], one["n"]) == (
        "3.5",
        "",
        "",
        "",
        "1",
    )


def test_paired_tests_in_aggregate(tmp_path: Path) -> None:
    # d = decur - supervised = (0.05, 0.02, 0.03): mean 0.10/3 = 0.0333333,
    # s_d^2 = ((0.0166667)^2 + (0.0133333)^2 + (0.0033333)^2) / 2 = 0.00046667 / 2 = 0.00023333,
    # s_d = 0.0152753, t = 0.0333333 / (0.0152753 / sqrt 3) = 3.7796447;
    # 2 dof: p = 1 - t / sqrt(2 + t^2) = 1 - 3.7796447 / sqrt(16.2857143)
    #   = 1 - 3.7796447 / 4.0355562 = 1 - 0.9365858 = 0.0634142.
    # Wilcoxon: all 3 differences positive -> W = 0, p = 2 / 2^3 = 0.25.
    agg = write_aggregate(
        _three_seeds(tmp_path), pairs=[("methods.decur.acc", "methods.supervised.acc")]
    )
    (pt,) = agg["paired"]
    assert pt["seeds"] == [0, 1, 2]
    assert pt["t"]["statistic"] == pytest.approx(3.7796447, abs=1e-6)
    assert pt["t"]["p_value"] == pytest.approx(0.0634142, abs=1e-6)
    assert pt["t"]["mean_diff"] == pytest.approx(0.1 / 3)
    assert (pt["wilcoxon"]["statistic"], pt["wilcoxon"]["p_value"]) == (0.0, pytest.approx(0.25))
    with pytest.raises(ValueError, match="no metric"):
        write_aggregate(_three_seeds(tmp_path / "b"), pairs=[("methods.decur.acc", "nope")])


def test_find_runs_seeds_and_sweep_layout(tmp_path: Path) -> None:
    # a sweep point holds its results folder two levels down: runs/<NNN>/<experiment>/<stamp>/
    a = _make_run(tmp_path / "runs" / "000" / "main" / "20261203-070000", 3, {"x": 1.0})
    b = _make_run(tmp_path / "runs" / "001" / "main" / "20261203-070500", 4, {"x": 2.0})
    runs = find_runs([tmp_path / "runs" / "000", tmp_path / "runs" / "001"])
    assert [(r.seed, r.file) for r in runs] == [(3, a / "summary.json"), (4, b / "summary.json")]
    assert [r.seed for r in find_runs([a, b], seeds=[10, 11])] == [10, 11]
    with pytest.raises(ValueError, match="seed 3 twice"):
        find_runs([a, a])
    with pytest.raises(ValueError, match="2 folders"):
        find_runs([a, b], seeds=[1])
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "summary.json").write_text('{"x": 1}')
    with pytest.raises(ValueError, match="no top-level 'seed'"):
        find_runs([tmp_path / "bare"])
    (tmp_path / "bare" / "summary.json").write_text('{"x": 1, "seed": 9}')
    assert find_runs([tmp_path / "bare"])[0].seed == 9
    with pytest.raises(ValueError, match="no summary.json or metrics.json"):
        find_runs([tmp_path / "runs" / "000" / "main" / "empty"])


def test_flatten_rows_and_non_finite() -> None:
    rows = [
        {"method": "decur", "round": 1, "acc": 0.5, "ok": True},
        {"method": "decur", "round": 2, "acc": 0.75},
        {"other": 1.0},
    ]
    assert flatten(rows, row_keys=("method", "round")) == {
        "method=decur,round=1.acc": 0.5,
        "method=decur,round=2.acc": 0.75,
        "2.other": 1.0,
    }
    assert flatten({"a": {"b": math.nan, "c": None, "d": 2}}) == {
        "a.b": None,
        "a.c": None,
        "a.d": 2.0,
    }


def test_old_nan_tokens_read_as_missing(tmp_path: Path) -> None:
    a = _make_run(tmp_path / "a", 0, {})
    b = _make_run(tmp_path / "b", 1, {})
    (a / "summary.json").write_text('{"loss": NaN, "acc": 0.5}')
    (b / "summary.json").write_text('{"loss": 1.5, "acc": Infinity}')
    agg = write_aggregate([a, b])
    assert agg["metrics"]["loss"]["seeds"] == [1] and agg["metrics"]["acc"]["seeds"] == [0]


def test_seed_curves_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = _three_seeds(tmp_path)
    curves = seed_curves(find_runs(folders), "round", "test_accuracy", by=["method"])
    xs, values = curves["supervised"]
    assert xs == [1.0, 2.0]
    # round 1, supervised: 0.6 + 0.01 * seed for seeds 0, 1, 2
    assert sorted(values[0]) == pytest.approx([0.60, 0.61, 0.62])
    assert seed_curves(find_runs(folders), "round", "test_accuracy", where={"method": "x"}) == {}
    rc = main([*map(str, folders), "--curve", "round", "test_accuracy", "--by", "method"])
    assert rc == 0 and "over seeds [0, 1, 2]" in capsys.readouterr().out
    for name in ("aggregate.json", "aggregate.csv", "aggregate_test_accuracy.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "aggregate_test_accuracy.pdf").read_bytes().startswith(b"%PDF")
    # metrics.json as the source, rows labelled by method and round
    out = tmp_path / "rows"
    main([*map(str, folders), "--file", "metrics.json", "--row-key", "method", "--row-key",
          "round", "--out", str(out)])  # fmt: skip
    agg = _strict((out / "aggregate.json").read_text())
    assert agg["metrics"]["method=decur,round=2.test_accuracy"]["mean"] == pytest.approx(0.76)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


def test_default_curve_and_relative_run_paths(tmp_path: Path) -> None:
    folders = _three_seeds(tmp_path / "seeds")
    runs = find_runs(folders)
    # rows: method in {decur, supervised} (two values: one line each), round, test_accuracy
    assert default_curve(runs) == ("round", "test_accuracy", ["method"])
    assert main([*map(str, folders), "--out", str(tmp_path / "cli"), "--curve", "auto"]) == 0
    assert (tmp_path / "cli" / "aggregate_test_accuracy.png").is_file()
    assert main([*map(str, folders), "--out", str(tmp_path / "cli"), "--curve", "round"]) == 2
    # run paths are relative to the aggregate's folder, also outside it
    agg = _strict((tmp_path / "cli" / "aggregate.json").read_text())
    assert agg["runs"][0]["path"] == "../seeds/seed0/summary.json"
    assert (tmp_path / "cli" / agg["runs"][0]["path"]).is_file()
    # no metrics.json, or no round / accuracy column: no curve
    bare = _make_run(tmp_path / "bare", 0, {"x": 1.0}, rows=[{"step": 1, "test_accuracy": 0.5}])
    assert default_curve(find_runs([bare])) is None
    assert default_curve(find_runs([_make_run(tmp_path / "none", 0, {"x": 1.0})])) is None
