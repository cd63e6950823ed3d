"""Paper 1's Fig. 4 / Fig. 5 grid over seeds: SNR × label fraction, 95 % intervals and paired
tests per cell (issue #18).

Usage::

    python -m simulations.experiments._paper1_grid SWEEP_DIR [SWEEP_DIR ...] --out DIR

Every paper-1 results folder below the ``SWEEP_DIR``\\ s (``runs/<NNN>/<experiment>/<time>/``
of ``semcom-sweep``) is one point; its resolved ``config.yaml`` gives the cell
(``data.label_fraction``, ``channel.snr_db``) and the seed, so one sweep per label fraction
and one sweep over everything read alike. A point whose run did not finish (no
``metrics.csv``) is skipped and listed. Per cell, the seeds go through
:func:`simulations.experiments._paper1_seeds.report` — the same statistics as the main job's
headline: test accuracy at the validation-selected round and at the final round (mean,
Student-t 95 % interval over seeds), and DeCUR against each method with a paired t-test
(primary) and Wilcoxon on both. ``ordering`` says, per cell and metric, which methods DeCUR
beats, ties or trails at p < 0.05 (paired t; no correction over the cells — the Holm-adjusted
p-values over all cells of one metric, ``p_holm`` / ``significant``, are given beside).

Writes ``grid.json`` (strict JSON), ``grid.csv`` (one row per cell, method and metric),
``table.md`` and, per label fraction, ``grid_labels<percent>.png`` + ``.pdf`` (final test
accuracy against SNR per method, mean and 95 % band).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flwr_semcom.results import plot_band, write_csv, write_json
from simulations.aggregate import SeedRun
from simulations.aggregate_slf_multitask import holm
from simulations.experiments._paper1_seeds import DISPLAY, REFERENCE, load_seed, report

__all__ = ["cell_of", "find_points", "grid_report", "main", "write_grid"]

METRICS = ("final_accuracy", "test_accuracy_at_val_selected")
ALPHA = 0.05


def cell_of(config_path: Path) -> tuple[float, float, int]:
    """``(label_fraction, snr_db, seed)`` of a run, from its resolved ``config.yaml``."""
    cfg = OmegaConf.load(config_path)
    return float(cfg.data.label_fraction), float(cfg.channel.snr_db), int(cfg.seed)


def find_points(sweeps: Sequence[str | Path]) -> tuple[list[tuple[Any, SeedRun]], list[str]]:
    """``[((label_fraction, snr_db), SeedRun)]`` of every finished point below ``sweeps``,
    and the folders skipped (no ``metrics.csv``: the run did not finish)."""
    points: list[tuple[Any, SeedRun]] = []
    skipped: list[str] = []
    for sweep in map(Path, sweeps):
        if not sweep.is_dir():
            raise ValueError(f"{sweep}: not a folder")
        for config in sorted(sweep.glob("runs/*/*/*/config.yaml")):
            folder = config.parent
            if not (folder / "metrics.csv").is_file() or not (folder / "summary.json").is_file():
                skipped.append(str(folder))
                continue
            lf, snr, seed = cell_of(config)
            points.append(((lf, snr), SeedRun(seed, folder, folder / "summary.json")))
    if not points:
        raise ValueError(f"no finished paper-1 run below {', '.join(map(str, sweeps))}")
    return points, skipped


def _verdict(test: Mapping[str, Any]) -> str:
    t = test.get("t")
    if not t or t.get("p_value") is None:
        return "n/a"
    if t["p_value"] >= ALPHA:
        return "tie"
    return "better" if t["mean_diff"] > 0 else "worse"


def grid_report(points: Sequence[tuple[Any, SeedRun]]) -> dict[str, Any]:
    """The ``grid.json`` object: one entry per cell (sorted by label fraction, then SNR)."""
    cells: dict[tuple[float, float], list[SeedRun]] = {}
    for key, run in points:
        cells.setdefault(key, []).append(run)
    out = []
    for (lf, snr), runs in sorted(cells.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        seeds = [r.seed for r in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"labels {lf}, SNR {snr} dB: a seed twice in {sorted(seeds)}")
        rep = report([load_seed(r) for r in runs])
        tests = {"final_accuracy": rep["paired_tests"]}
        tests["test_accuracy_at_val_selected"] = rep["paired_tests_val_selected"]
        out.append(
            {
                "label_fraction": lf,
                "snr_db": snr,
                "n_seeds": rep["n_seeds"],
                "seeds": rep["seeds"],
                "runs": rep["runs"],
                "target_accuracy": rep["target_accuracy"],
                "methods": {
                    m: {k: d[k] for k in (*METRICS, "val_selected_round", "stage1_bits")}
                    for m, d in rep["methods"].items()
                },
                "paired_tests": tests,
                "ordering": {
                    metric: {t["b"]: _verdict(t) for t in tests[metric]} for metric in METRICS
                },
            }
        )
    # Holm over every DeCUR-vs-method test of the grid, per metric (adds p_holm, significant)
    for metric in METRICS:
        holm([t for c in out for t in c["paired_tests"][metric] if t.get("t")], ALPHA)
    return {
        "reference": REFERENCE,
        "alpha": ALPHA,
        "ordering_note": "per cell: DeCUR better / tie / worse than each method, paired t-test "
        "over seeds at p < 0.05 without correction over cells; p_holm (and significant) is the "
        "Holm-adjusted p-value over all cells' tests of the same metric",
        "cells": out,
    }


def _fmt(s: Mapping[str, Any]) -> str:
    if s.get("mean") is None:
        return "—"
    if s.get("ci95_low") is None:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} ± {(s['ci95_high'] - s['ci95_low']) / 2:.3f}"


def _table(rep: Mapping[str, Any], metric: str) -> list[str]:
    methods = list(rep["cells"][0]["methods"])
    head = "| labels | SNR | seeds | " + " | ".join(DISPLAY.get(m, m) for m in methods)
    lines = [head + " | DeCUR vs (paired t) |", "|" + "---|" * (len(methods) + 4)]
    for c in rep["cells"]:
        best = max(methods, key=lambda m: c["methods"][m][metric]["mean"] or -1.0)
        vals = []
        for m in methods:
            text = _fmt(c["methods"][m][metric])
            vals.append(f"**{text}**" if m == best else text)
        order = ", ".join(f"{DISPLAY.get(b, b)} {v}" for b, v in c["ordering"][metric].items())
        lf = f"{100 * c['label_fraction']:.0f} %"
        lines.append(
            f"| {lf} | {c['snr_db']:.0f} dB | {c['n_seeds']} | "
            + " | ".join(vals)
            + f" | {order} |"
        )
    return lines


def write_grid(sweeps: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Read the sweeps, write ``grid.json`` / ``grid.csv`` / ``table.md`` / figures; return the
    JSON object."""
    out = Path(out_dir)
    points, skipped = find_points(sweeps)
    rep = {**grid_report(points), "skipped_runs": skipped}
    write_json(out / "grid.json", rep)
    rows = []
    for c in rep["cells"]:
        for m, d in c["methods"].items():
            for metric in METRICS:
                s = d[metric]
                rows.append(
                    {
                        "label_fraction": c["label_fraction"],
                        "snr_db": c["snr_db"],
                        "method": m,
                        "metric": metric,
                        **{k: s.get(k) for k in ("mean", "std", "ci95_low", "ci95_high", "n")},
                        "seeds": " ".join(map(str, s.get("seeds", []))),
                    }
                )
    cols = ["label_fraction", "snr_db", "method", "metric", "mean", "std", "ci95_low"]
    write_csv(out / "grid.csv", rows, [*cols, "ci95_high", "n", "seeds"])
    md = ["# Paper 1 Fig. 4 / 5 grid over seeds", ""]
    for metric, title in (
        ("final_accuracy", "Final-round test accuracy"),
        ("test_accuracy_at_val_selected", "Test accuracy at the validation-selected round"),
    ):
        md += [f"## {title} (mean ± 95 % half-width)", "", *_table(rep, metric), ""]
    (out / "table.md").write_text("\n".join(md))
    for lf in sorted({c["label_fraction"] for c in rep["cells"]}, reverse=True):
        cells = [c for c in rep["cells"] if c["label_fraction"] == lf]
        series = {
            DISPLAY.get(m, m): (
                [c["snr_db"] for c in cells],
                [c["methods"][m]["final_accuracy"]["values"] for c in cells],
            )
            for m in cells[0]["methods"]
        }
        plot_band(
            out / f"grid_labels{100 * lf:.0f}.png",
            series,
            xlabel="SNR (dB)",
            ylabel="final test accuracy",
            title=f"{100 * lf:.0f} % labels: mean, 95 % CI over seeds",
        )
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.experiments._paper1_grid")
    p.add_argument("sweeps", nargs="+", type=Path, help="semcom-sweep folders")
    p.add_argument("--out", type=Path, required=True, help="folder for grid.json and figures")
    args = p.parse_args(argv)
    try:
        rep = write_grid(args.sweeps, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for c in rep["cells"]:
        print(
            f"labels {c['label_fraction']:.2f} SNR {c['snr_db']:>4.0f} dB seeds {c['seeds']}: "
            + ", ".join(f"{m} {d['final_accuracy']['mean']:.3f}" for m, d in c["methods"].items())
        )
    if rep["skipped_runs"]:
        print(f"skipped (unfinished): {len(rep['skipped_runs'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
