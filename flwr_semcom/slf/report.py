"""Paper 2's Table I (markdown) and Fig. 3-style plots from the SLF sweep's rows.

Choi et al., arXiv 2310.09394, Sec. IV, Table I and Fig. 3. A *row* is a dict with at least
``case`` (``channel``/``source``), ``method`` (``slf``/``fedavg``/``misaligned``), ``n``
(``""`` for FedAvg), ``crossover``, ``epsilon`` and the measured columns (``unfrozen_params``,
``upload_mb``, ``recovery_time_s``, ``mse``, ``accuracy``, ``wall_time_s``, ...). Table rows
also carry ``task`` (``reconstruction``/``classification``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr_semcom.results import plot_lines

__all__ = ["PAPER_TABLE1", "TASKS", "plot_fig3", "table1_markdown"]

TASKS = ("reconstruction", "classification")
CASE_TITLES = {
    "channel": "channel dissimilarity (T1 → T2)",
    "source": "source dissimilarity (T3 → T1)",
}

#: Paper 2 Table I as read in ../shared/PAPERS.md (the channel block; row labels were lost).
PAPER_TABLE1: dict[str, list[float | None]] = {
    "unfrozen_params": [114e3, 76e3, 22e3, 2e3, 0.0],
    "upload_mb": [0.456, 0.304, 0.088, 0.008, 0.0],
    "recovery_reconstruction": [3.542, 2.900, 2.144, 2.144, 2.026],
    "mse": [0.087, 0.103, 0.113, 0.121, 0.123],
    "recovery_classification": [3.422, 3.000, 1.864, 1.704, 1.586],
    "accuracy": [0.9855, 0.9804, 0.9783, 0.9701, None],
}

# (label, task, column, scale, digits, key in PAPER_TABLE1)
_LINES = (
    ("Unfrozen parameters (K)", "reconstruction", "unfrozen_params", 1e-3, 1, "unfrozen_params"),
    ("Upload (MB)", "reconstruction", "upload_mb", 1.0, 3, "upload_mb"),
    ("Recovery time, reconstruction (s)", "reconstruction", "recovery_time_s", 1.0, 3,
     "recovery_reconstruction"),
    ("MSE", "reconstruction", "mse", 1.0, 4, "mse"),
    ("Recovery time, classification (s)", "classification", "recovery_time_s", 1.0, 3,
     "recovery_classification"),
    ("Accuracy (%)", "classification", "accuracy", 100.0, 2, "accuracy"),
    ("Measured wall time here (s)", "reconstruction", "wall_time_s", 1.0, 1, ""),
)  # fmt: skip


def _cell(value: Any, scale: float, digits: int) -> str:
    if value is None or value == "":
        return "–"
    return f"{float(value) * scale:.{digits}f}"


def _case_block(case: str, rows: Sequence[Mapping[str, Any]], ns: Sequence[int]) -> list[str]:
    by_key = {(r["task"], r["method"], r["n"]): r for r in rows}
    first = rows[0]
    p, eps = float(first["crossover"]), float(first["epsilon"])
    mse, acc = float(first["baseline_mse"]), 100 * float(first["baseline_accuracy"])
    out = [
        f"**{CASE_TITLES.get(case, case)}**: link crossover p = {p:g}, ε = {eps:g}; "
        f"before alignment (misaligned) MSE {mse:.4f}, accuracy {acc:.2f} %",
        "",
        "| | " + " | ".join(f"n = {n}" for n in ns) + " | FedAvg |",
        "|---" * (len(ns) + 2) + "|",
    ]
    for label, task, column, scale, digits, paper_key in _LINES:
        cells = [by_key.get((task, "slf", n), {}).get(column) for n in ns]
        cells.append(by_key.get((task, "fedavg", ""), {}).get(column))
        out.append(f"| {label} | " + " | ".join(_cell(v, scale, digits) for v in cells) + " |")
        if case == "channel" and paper_key:
            paper = PAPER_TABLE1[paper_key]
            vals = [paper[n] if 0 <= n < len(paper) else None for n in ns]
            out.append(
                f"| {label}, paper | "
                + " | ".join(_cell(v, scale, digits) for v in vals)
                + " | – |"
            )
    return [*out, ""]


def table1_markdown(rows: Sequence[Mapping[str, Any]], freeze_layers: Sequence[int]) -> str:
    """Table I laid out like the paper: one column per ``n`` plus FedAvg, one block per case.

    In the channel block every line is followed by the paper's value (``…, paper``).
    """
    out: list[str] = []
    for case in CASE_TITLES:
        case_rows = [r for r in rows if r["case"] == case]
        if case_rows:
            out += _case_block(case, case_rows, list(freeze_layers))
    return "\n".join(out)


def _series(
    rows: Sequence[Mapping[str, Any]], x_key: str, y_key: str, ns: Sequence[int]
) -> dict[str, tuple[list[float], list[float]]]:
    groups: list[tuple[str, str, Any]] = [(f"SLF n={n}", "slf", n) for n in ns]
    groups.append(("FedAvg", "fedavg", ""))  # the misaligned baseline is in table1.md
    series = {}
    for name, method, n in groups:
        pts = sorted(
            (float(r[x_key]), float(r[y_key]))
            for r in rows
            if r["method"] == method and r["n"] == n
        )
        if pts:
            series[name] = ([p[0] for p in pts], [p[1] for p in pts])
    return series


def plot_fig3(
    folder: str | Path,
    rows: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    freeze_layers: Sequence[int],
) -> list[Path]:
    """Fig. 3-style plots (metric vs p and vs ε, one line per ``n`` and FedAvg) and
    bytes-vs-accuracy at the Table I point (SLF per ``n``, FedAvg per round). Returns paths."""
    folder = Path(folder)
    written: list[Path] = []
    for case, x_key, x_label, tag in (
        ("channel", "crossover", "link crossover p", "p"),
        ("source", "epsilon", "data dissimilarity ε", "eps"),
    ):
        case_rows = [r for r in rows if r["case"] == case]
        for metric in ("mse", "accuracy"):
            series = _series(case_rows, x_key, metric, freeze_layers)
            if series:
                path = folder / f"fig3_{metric}_vs_{tag}.png"
                plot_lines(path, series, xlabel=x_label, ylabel=metric, title=CASE_TITLES[case])
                written.append(path)
        table = [r for r in case_rows if r.get("table") and r["method"] != "misaligned"]
        series = {}
        for r in table:
            name = f"SLF n={r['n']}" if r["method"] == "slf" else "FedAvg (final)"
            series[name] = (
                [float(r["download_bytes"]) + float(r["upload_bytes"])],
                [float(r["accuracy"])],
            )
        hist = [h for h in history if h["case"] == case and h.get("table")]
        if hist:
            series["FedAvg (per round)"] = (
                [float(h["download_bytes"]) + float(h["upload_bytes"]) for h in hist],
                [float(h["accuracy"]) for h in hist],
            )
        if series:
            path = folder / f"bytes_vs_accuracy_{case}.png"
            plot_lines(
                path,
                series,
                xlabel="bytes exchanged for alignment (download + upload)",
                ylabel="accuracy",
                title=CASE_TITLES[case],
                logx=True,
            )
            written.append(path)
    return written
