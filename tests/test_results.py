"""flwr_semcom.results: strict JSON (NaN/inf -> null, finite numbers unchanged) and figures
written as PNG plus a vector twin."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flwr_semcom import results as R
from flwr_semcom.results import Results, plot_band, plot_lines, save_figure, strict_json


def _refuse(token: str) -> None:
    raise ValueError(f"non-standard JSON constant {token}")


def _strict_load(path: Path) -> Any:
    return json.loads(path.read_text(), parse_constant=_refuse)


def test_strict_json_replaces_only_non_finite_numbers() -> None:
    obj = {
        "acc": 0.1 + 0.2,
        "loss": math.nan,
        "ratio": (math.inf, -math.inf, np.float64(0.7)),
        "nested": {"x": [np.float32(0.5), np.int64(7), np.array([1.25, np.nan])]},
        "flag": True,
        "name": "decur",
        "none": None,
    }
    assert strict_json(obj) == {
        "acc": 0.30000000000000004,
        "loss": None,
        "ratio": [None, None, 0.7],
        "nested": {"x": [0.5, 7, [1.25, None]]},
        "flag": True,
        "name": "decur",
        "none": None,
    }
    assert type(strict_json(np.int64(7))) is int and strict_json(True) is True


def test_results_write_nan_as_null_and_parse_strictly(tmp_path: Path) -> None:
    res = Results(tmp_path)
    res.add({"round": 1, "test_accuracy": 0.5, "loss": math.nan})
    res.add({"round": 2, "test_accuracy": 0.625, "loss": math.inf})
    res.write_summary({"best": {"accuracy": 0.625}, "bits_to_target": math.nan})
    # the default Python writer would have produced the tokens a strict parser refuses
    with pytest.raises(ValueError, match="NaN"):
        json.loads(json.dumps({"x": math.nan}), parse_constant=_refuse)
    rows = _strict_load(tmp_path / "metrics.json")
    assert rows == [
        {"round": 1, "test_accuracy": 0.5, "loss": None},
        {"round": 2, "test_accuracy": 0.625, "loss": None},
    ]
    assert _strict_load(tmp_path / "summary.json") == {
        "best": {"accuracy": 0.625},
        "bits_to_target": None,
    }
    assert "NaN" not in (tmp_path / "summary.json").read_text()


def test_finite_numbers_are_written_as_before(tmp_path: Path) -> None:
    # The regression oracle compares summary.json numbers bit for bit: without NaN/inf the
    # file must be exactly what json.dump(..., indent=1) wrote before strict JSON.
    summary = {"a": 1 / 3, "b": [1e-17, 7.93e8, 2**60], "c": {"d": -0.0, "e": 0.985}, "f": "x"}
    Results(tmp_path).write_summary(summary)
    assert (tmp_path / "summary.json").read_text() == json.dumps(summary, indent=1)


def test_write_json_refuses_what_it_cannot_make_strict(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        R.write_json(tmp_path / "x.json", {"obj": object()})
    assert not (tmp_path / "x.json").exists()  # atomic: no partial file left


def test_plot_lines_writes_png_and_pdf(tmp_path: Path) -> None:
    path = tmp_path / "acc.png"
    series = {"DeCUR": ([1, 2, 3], [0.5, 0.7, 0.9]), "supervised": ([1, 2, 3], [0.4, 0.6, 0.8])}
    plot_lines(path, series, xlabel="round", ylabel="test accuracy", target=0.8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = path.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    # no creation date in the vector file: the same figure gives the same bytes
    plot_lines(path, series, xlabel="round", ylabel="test accuracy", target=0.8)
    assert path.with_suffix(".pdf").read_bytes() == pdf
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc.pdf", "acc.png"]


def test_save_figure_svg_and_bad_names(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    written = save_figure(fig, tmp_path / "f.png", vector="svg")
    assert written == [tmp_path / "f.png", tmp_path / "f.svg"]
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()
    with pytest.raises(ValueError, match="vector"):
        save_figure(fig, tmp_path / "g.png", vector="eps")
    with pytest.raises(ValueError, match="png"):
        save_figure(fig, tmp_path / "g.pdf")
    plt.close(fig)


def test_plot_band_draws_mean_and_student_t_band(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figs: list[Any] = []
    real = R.save_figure

    def keep(fig: Any, path: str | Path, vector: str = "pdf") -> list[Path]:
        figs.append(fig)
        return real(fig, path, vector)

    monkeypatch.setattr(R, "save_figure", keep)
    # x = 1: seeds (1, 2, 3, 4, 5) -> mean 3, band 3 ± 1.963243 (see tests/test_stats.py);
    # x = 2: seeds (0, 2) -> mean 1, band 1 ± 12.706205; x = 3: one seed -> mean only
    series = {"m": ([1.0, 2.0, 3.0], [[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 2.0], [4.0]])}
    plot_band(tmp_path / "band.png", series, xlabel="round", ylabel="acc", target=2.5)
    assert (tmp_path / "band.png").exists() and (tmp_path / "band.pdf").exists()
    (ax,) = figs[0].axes
    line = ax.lines[0]
    assert list(line.get_xdata()) == [1.0, 2.0, 3.0]
    assert list(line.get_ydata()) == pytest.approx([3.0, 1.0, 4.0])
    assert list(ax.lines[1].get_ydata()) == [2.5, 2.5]  # the target line
    verts = ax.collections[0].get_paths()[0].vertices
    assert verts[:, 0].min() == 1.0 and verts[:, 0].max() == 2.0  # no band at the 1-seed point
    assert verts[:, 1].min() == pytest.approx(1.0 - 12.706205, abs=1e-6)
    assert verts[:, 1].max() == pytest.approx(1.0 + 12.706205, abs=1e-6)
    assert any(y == pytest.approx(3.0 + 1.963243, abs=1e-6) for y in verts[:, 1])
    with pytest.raises(ValueError, match="y lists"):
        plot_band(tmp_path / "bad.png", {"m": ([1.0], [])}, xlabel="x", ylabel="y")
