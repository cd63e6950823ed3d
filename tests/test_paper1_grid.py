"""Paper 1's grid over seeds (simulations/experiments/_paper1_grid.py) against hand values.

Three cells, three seeds each, DeCUR and supervised, three Stage II rounds. Paired
differences of the final accuracy (DeCUR − supervised) are built so that the paired t-test
has a closed form: with 2 degrees of freedom the two-sided p-value is
1 − |t| / sqrt(2 + t²).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simulations.experiments._paper1_grid import main, write_grid

HEADER = "method,stage,round,snr_db,loss,test_accuracy,val_accuracy,up_bytes,down_bytes,bits\n"
VAL = (0.50, 0.90, 0.80)  # every run's validation curve: round 2 is selected
# (label fraction, SNR) -> seed -> (DeCUR final, supervised final); round 2's test accuracy
# is final - 0.05 for both
CELLS: dict[tuple[float, float], dict[int, tuple[float, float]]] = {
    (1.0, 0.0): {0: (0.80, 0.70), 1: (0.90, 0.79), 2: (0.85, 0.76)},  # d = .10, .11, .09
    (1.0, 10.0): {0: (0.60, 0.80), 1: (0.70, 0.91), 2: (0.65, 0.84)},  # d = -.20, -.21, -.19
    (0.5, 10.0): {0: (0.50, 0.60), 1: (0.60, 0.50), 2: (0.70, 0.70)},  # d = -.1, .1, 0
}


def _p_df2(t: float) -> float:
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


def _write_run(
    sweep: Path, n: int, lf: float, snr: float, seed: int, finals: tuple[float, float]
) -> None:
    folder = sweep / "runs" / f"{n:03d}" / "paper1_sweep" / "20260101-000000"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        f"seed: {seed}\ndata:\n  label_fraction: {lf}\nchannel:\n  snr_db: {snr}\n"
    )
    lines = [HEADER, "decur,pretrain,1,0,1.0,,,0,0,77\n"]
    for method, final in zip(("decur", "supervised"), finals):
        accs = (0.30, final - 0.05, final)
        for r in (1, 2, 3):
            lines.append(
                f"{method},finetune,{r},{snr},0.5,{accs[r - 1]},{VAL[r - 1]},0,0,{100 * r}\n"
            )
    (folder / "metrics.csv").write_text("".join(lines))
    (folder / "summary.json").write_text("{}")


@pytest.fixture
def sweeps(tmp_path: Path) -> list[Path]:
    # one sweep per label fraction, as the documented command runs them, plus a killed point
    out = []
    for lf in (1.0, 0.5):
        sweep = tmp_path / f"sweep{lf}"
        n = 0
        for (cell_lf, snr), seeds in CELLS.items():
            if cell_lf != lf:
                continue
            for seed, finals in seeds.items():
                _write_run(sweep, n, lf, snr, seed, finals)
                n += 1
        out.append(sweep)
    unfinished = out[1] / "runs" / "099" / "paper1_sweep" / "20260101-000000"
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text(
        "seed: 3\ndata:\n  label_fraction: 0.5\nchannel:\n  snr_db: 10\n"
    )
    return out


def test_cells_means_and_orderings_by_hand(sweeps: list[Path], tmp_path: Path) -> None:
    rep = write_grid(sweeps, tmp_path / "out")
    cells = rep["cells"]
    # sorted by label fraction (descending), then SNR
    assert [(c["label_fraction"], c["snr_db"]) for c in cells] == [
        (1.0, 0.0),
        (1.0, 10.0),
        (0.5, 10.0),
    ]
    assert all(c["seeds"] == [0, 1, 2] for c in cells)
    a, b, c = cells
    assert a["methods"]["decur"]["final_accuracy"]["mean"] == pytest.approx(0.85, abs=1e-12)
    assert a["methods"]["supervised"]["final_accuracy"]["mean"] == pytest.approx(0.75, abs=1e-12)
    # the validation-selected round is round 2 (val 0.90): final − 0.05
    assert a["methods"]["decur"]["test_accuracy_at_val_selected"]["mean"] == pytest.approx(
        0.80, abs=1e-12
    )
    assert a["methods"]["decur"]["val_selected_round"]["values"] == [2, 2, 2]
    # paired t: d = .10, .11, .09 -> mean .10, s_d = .01, t = .10 / (.01 / sqrt 3) = sqrt 300
    t_a = a["paired_tests"]["final_accuracy"][0]["t"]
    assert t_a["mean_diff"] == pytest.approx(0.10, abs=1e-12)
    assert t_a["statistic"] == pytest.approx(math.sqrt(300), rel=1e-9)
    assert t_a["p_value"] == pytest.approx(_p_df2(math.sqrt(300)), rel=1e-6)
    t_b = b["paired_tests"]["final_accuracy"][0]["t"]
    assert t_b["statistic"] == pytest.approx(-math.sqrt(1200), rel=1e-9)
    assert a["ordering"]["final_accuracy"] == {"supervised": "better"}
    assert b["ordering"]["final_accuracy"] == {"supervised": "worse"}
    assert c["ordering"]["final_accuracy"] == {"supervised": "tie"}  # mean difference 0
    # Holm over the three final-accuracy tests: p_B < p_A < p_C = 1
    p_a, p_b = _p_df2(math.sqrt(300)), _p_df2(math.sqrt(1200))
    holm = {
        (x["label_fraction"], x["snr_db"]): x["paired_tests"]["final_accuracy"][0]["p_holm"]
        for x in cells
    }
    assert holm[(1.0, 10.0)] == pytest.approx(3 * p_b, rel=1e-6)
    assert holm[(1.0, 0.0)] == pytest.approx(2 * p_a, rel=1e-6)
    assert holm[(0.5, 10.0)] == pytest.approx(1.0)
    assert len(rep["skipped_runs"]) == 1 and rep["skipped_runs"][0].endswith(
        "099/paper1_sweep/20260101-000000"
    )


def test_files_strict_json_csv_table_and_figures(sweeps: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([*map(str, sweeps), "--out", str(out)]) == 0
    data = json.loads((out / "grid.json").read_text(), parse_constant=lambda t: pytest.fail(t))
    assert len(data["cells"]) == 3
    rows = (out / "grid.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 * 2  # cells × methods × metrics
    table = (out / "table.md").read_text()
    assert "| 100 % | 0 dB | 3 | **0.850 ±" in table and "supervised worse" in table
    for name in ("grid_labels100", "grid_labels50"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0


def test_no_finished_run_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no finished paper-1 run" in capsys.readouterr().err
