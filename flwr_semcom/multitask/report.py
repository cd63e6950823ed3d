"""Final table, gains over the baselines and plots of the multi-task experiment (paper 3).

The paper (arXiv 2501.02006, Sec. IV) reports GAI's relative improvement over its baselines,
+2.71 % to +11.4 % averaged over tasks, largest at R = 1/12 and growing as the SNR drops
from 14 to -2 dB. :func:`gains` computes the same quantity for our runs: per task,
``100 · (m_GAI − m_base) / |m_base|`` for higher-is-better metrics and
``100 · (m_base − m_GAI) / m_base`` for lower-is-better ones (so a positive gain always
means GAI is better), and its mean over tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flwr_semcom.multitask.spec import ratio_label
from flwr_semcom.multitask.tasks import Task
from flwr_semcom.results import plot_lines

__all__ = ["PAPER_CLAIM", "final_rows", "gains", "plot_all", "table_markdown"]

#: The paper's headline: GAI's mean relative improvement over the baselines, in percent.
PAPER_CLAIM = (2.71, 11.4)
METHOD_NAMES = {"gai": "GAI", "gai_w": "GAI-w", "separate": "separate links"}


def metric_col(task: Task) -> str:
    return f"{task.name}_{task.metric}"


def final_rows(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last round's row of every (method, ratio, snr_db)."""
    last: dict[tuple[str, float, float], dict[str, Any]] = {}
    for row in history:
        key = (row["method"], float(row["ratio"]), float(row["snr_db"]))
        if key not in last or row["round"] >= last[key]["round"]:
            last[key] = row
    return list(last.values())


def relative_gain(task: Task, ours: float, base: float) -> float:
    """Percent improvement of ``ours`` over ``base`` (positive = better)."""
    if base == 0:
        return float("nan")
    diff = ours - base if task.higher_is_better else base - ours
    return 100.0 * diff / abs(base)


def gains(
    rows: Sequence[dict[str, Any]], tasks: Sequence[Task], method: str = "gai"
) -> list[dict[str, Any]]:
    """GAI's relative gain over every other method at each (R, SNR), per task and mean."""
    index = {(r["method"], float(r["ratio"]), float(r["snr_db"])): r for r in rows}
    out = []
    for (m, ratio, snr), base in sorted(index.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if m == method or (method, ratio, snr) not in index:
            continue
        ours = index[(method, ratio, snr)]
        per_task = {
            f"gain_{t.name}_pct": relative_gain(
                t, float(ours[metric_col(t)]), float(base[metric_col(t)])
            )
            for t in tasks
        }
        out.append(
            {
                "baseline": m,
                "ratio": ratio,
                "R": ratio_label(ratio),
                "snr_db": snr,
                **per_task,
                "gain_mean_pct": sum(per_task.values()) / len(per_task),
            }
        )
    return out


def table_markdown(rows: Sequence[dict[str, Any]], tasks: Sequence[Task]) -> str:
    """The final table: one line per (R, SNR, method) with each task's metric."""
    head = "| R | SNR (dB) | method | " + " | ".join(
        f"{t.name} {t.metric} ({'↑' if t.higher_is_better else '↓'})" for t in tasks
    )
    lines = [head + " |", "|" + "---|" * (3 + len(tasks))]
    order = list(METHOD_NAMES)
    for r in sorted(
        rows,
        key=lambda r: (-float(r["ratio"]), float(r["snr_db"]), order.index(r["method"])),
    ):
        vals = " | ".join(f"{float(r[metric_col(t)]):.4f}" for t in tasks)
        lines.append(
            f"| {ratio_label(float(r['ratio']))} | {float(r['snr_db']):g} | "
            f"{METHOD_NAMES[r['method']]} | {vals} |"
        )
    return "\n".join(lines) + "\n"


def gains_markdown(rows: Sequence[dict[str, Any]], tasks: Sequence[Task]) -> str:
    head = "| R | SNR (dB) | GAI vs | " + " | ".join(f"{t.name} gain %" for t in tasks)
    lines = [head + " | mean gain % |", "|" + "---|" * (4 + len(tasks))]
    for g in rows:
        vals = " | ".join(f"{g[f'gain_{t.name}_pct']:+.2f}" for t in tasks)
        lines.append(
            f"| {g['R']} | {g['snr_db']:g} | {METHOD_NAMES[g['baseline']]} | {vals} | "
            f"{g['gain_mean_pct']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_all(folder: Path, rows: Sequence[dict[str, Any]], tasks: Sequence[Task]) -> list[str]:
    """Per task: metric vs R (a line per method and SNR) and vs SNR (per method and R)."""
    written = []
    methods = [m for m in METHOD_NAMES if any(r["method"] == m for r in rows)]
    ratios = sorted({float(r["ratio"]) for r in rows})
    snrs = sorted({float(r["snr_db"]) for r in rows})
    for t in tasks:
        col = metric_col(t)
        ylabel = f"{t.name} {t.metric}"
        vs_r: dict[str, tuple[list[float], list[float]]] = {}
        vs_snr: dict[str, tuple[list[float], list[float]]] = {}
        for m in methods:
            for snr in snrs:
                pts = sorted(
                    (float(r["ratio"]), float(r[col]))
                    for r in rows
                    if r["method"] == m and float(r["snr_db"]) == snr
                )
                vs_r[f"{METHOD_NAMES[m]}, {snr:g} dB"] = ([p[0] for p in pts], [p[1] for p in pts])
            for ratio in ratios:
                pts = sorted(
                    (float(r["snr_db"]), float(r[col]))
                    for r in rows
                    if r["method"] == m and float(r["ratio"]) == ratio
                )
                vs_snr[f"{METHOD_NAMES[m]}, R={ratio_label(ratio)}"] = (
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                )
        name_r, name_s = f"{t.name}_vs_R.png", f"{t.name}_vs_snr.png"
        plot_lines(
            folder / name_r,
            vs_r,
            xlabel="bandwidth ratio R = k/n",
            ylabel=ylabel,
            title=f"{t.name} vs R",
            logx=True,
        )
        plot_lines(
            folder / name_s, vs_snr, xlabel="SNR (dB)", ylabel=ylabel, title=f"{t.name} vs SNR"
        )
        written += [name_r, name_s]
    return written
