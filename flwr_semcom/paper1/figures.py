"""Paper 1 Fig. 4 / Fig. 5 from a sweep: accuracy vs Stage II round, one panel per SNR.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. IV-B: Fig. 4 plots test accuracy against
communication rounds for the four methods at several SNRs with full labels, Fig. 5 the same
with 50 % labels. ``python -m flwr_semcom.paper1.figures <folder>`` reads every
``metrics.csv`` / ``summary.json`` below ``<folder>`` (e.g. a ``semcom-sweep --experiment
paper1_sweep`` folder) and writes, into ``<folder>``:

- ``fig_labels<percent>_rounds.png``: one figure per label fraction, one panel per SNR, test
  accuracy vs Stage II round, one line per method (diverged methods end where they stopped
  and are marked in the legend);
- ``fig_labels<percent>_bits.png``: the same against cumulative Stage II bits;
- ``paper1_grid.csv``: one row per (label fraction, SNR, method) with the summary values.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flwr_semcom.accounting import atomic_write

__all__ = ["collect", "main", "plot_grid"]

Curve = tuple[list[float], list[float], list[float]]  # rounds, bits, accuracy


def collect(
    folder: Path,
) -> tuple[dict[tuple[float, float], dict[str, Curve]], list[dict[str, Any]]]:
    """Curves ``{(label_fraction, snr_db): {method: (rounds, bits, acc)}}`` and summary rows."""
    curves: dict[tuple[float, float], dict[str, Curve]] = {}
    rows: list[dict[str, Any]] = []
    for summary_path in sorted(folder.glob("**/summary.json")):
        metrics_path = summary_path.with_name("metrics.csv")
        if not metrics_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        if "methods" not in summary:
            continue
        key = (float(summary["label_fraction"]), float(summary["snr_db"]))
        panel = curves.setdefault(key, {})
        with metrics_path.open() as fh:
            for r in csv.DictReader(fh):
                if r["stage"] != "finetune":
                    continue
                rounds, bits, acc = panel.setdefault(r["method"], ([], [], []))
                rounds.append(float(r["round"]))
                bits.append(float(r["bits"]))
                acc.append(float(r["test_accuracy"]))
        for method, m in summary["methods"].items():
            rows.append(
                {
                    "label_fraction": key[0],
                    "snr_db": key[1],
                    "method": method,
                    "target_accuracy": summary.get("target_accuracy"),
                    **{
                        k: m.get(k)
                        for k in (
                            "status",
                            "best_accuracy",
                            "final_accuracy",
                            "stage2_rounds_to_target",
                            "stage2_bits_to_target",
                            "stage1_bits",
                            "error",
                        )
                    },
                    "results_dir": str(summary_path.parent),
                }
            )
    return curves, rows


def plot_grid(
    path: Path,
    panels: dict[float, dict[str, Curve]],
    *,
    x: str,
    title: str,
    status: dict[tuple[float, str], str],
) -> None:
    """One figure with a panel per SNR; ``x`` is ``"rounds"`` or ``"bits"``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = sorted(panels)
    fig, axes = plt.subplots(1, len(snrs), figsize=(4.2 * len(snrs), 3.6), dpi=150, squeeze=False)
    for ax, snr in zip(axes[0], snrs):
        for method, (rounds, bits, acc) in sorted(panels[snr].items()):
            xs = rounds if x == "rounds" else [max(b, 1.0) for b in bits]
            note = status.get((snr, method), "ok")
            label = method if note == "ok" else f"{method} ({note})"
            ax.plot(xs, acc, marker="o", markersize=3, label=label)
        ax.set_title(f"SNR {snr:g} dB")
        ax.set_xlabel("Stage-II round" if x == "rounds" else "cumulative Stage-II bits")
        if x == "bits":
            ax.set_xscale("log")
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flwr_semcom.paper1.figures", description=__doc__)
    p.add_argument("folder", type=Path, help="a sweep folder (or any folder of results folders)")
    args = p.parse_args(argv)
    curves, rows = collect(args.folder)
    if not curves:
        print(
            f"error: no paper-1 results (summary.json + metrics.csv) below {args.folder}",
            file=sys.stderr,
        )
        return 1
    status = {
        (float(r["label_fraction"]), float(r["snr_db"]), str(r["method"])): str(r["status"])
        for r in rows
        if r.get("status") is not None
    }
    for fraction in sorted({k[0] for k in curves}, reverse=True):
        panels = {snr: c for (f, snr), c in curves.items() if f == fraction}
        pct = f"{100 * fraction:g}"
        name = (
            "Fig. 4"
            if math.isclose(fraction, 1.0)
            else "Fig. 5"
            if math.isclose(fraction, 0.5)
            else "labels"
        )
        for x in ("rounds", "bits"):
            plot_grid(
                args.folder / f"fig_labels{pct}_{x}.png",
                panels,
                x=x,
                title=f"{name}: {pct}% labels",
                status={(k[1], k[2]): v for k, v in status.items() if k[0] == fraction},
            )
    cols = list(rows[0])
    with atomic_write(args.folder / "paper1_grid.csv") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote figures and paper1_grid.csv to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
