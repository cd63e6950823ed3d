"""Results folder of a run: resolved config, metrics CSV/JSON, summary, ledger and plots.

Layout (documented in docs/results.md)::

    outputs/<experiment>/<YYYYmmdd-HHMMSS>[-N]/
        config.yaml        the resolved hydra config of the run
        metrics.csv        one row per (round, stage, method, ...) — rewritten atomically
        metrics.json       the same rows as a JSON list
        summary.json       the experiment's summary (schema per experiment)
        ledger.csv         every counted transfer (flwr_semcom.accounting)
        ledger.json        ledger rows plus totals per stage and direction
        *.png              plots

A folder is never reused: a second run in the same second gets a ``-1``, ``-2`` suffix. Every
file is written to a temporary name and renamed, so a killed run leaves complete files only.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flwr_semcom.accounting import CommLedger, atomic_write


def new_run_dir(output_root: str | Path, experiment: str) -> Path:
    """Create and return a fresh, never-reused results folder."""
    base = Path(output_root) / experiment
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new results folder under {base}")


def write_csv(
    path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ()
) -> None:
    """Write ``rows`` as CSV (``columns`` first, then any other key in order of appearance).

    A row without some column leaves its cell empty. Written atomically.
    """
    cols = list(columns)
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, restval="")
        writer.writeheader()
        writer.writerows(rows)


class Results:
    """Accumulates metric rows and writes the results folder after every update."""

    def __init__(self, run_dir: str | Path, metrics_name: str = "metrics") -> None:
        self.dir = Path(run_dir)
        self.metrics_name = metrics_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []

    def save_config(self, cfg: DictConfig) -> None:
        with atomic_write(self.dir / "config.yaml") as fh:
            fh.write(OmegaConf.to_yaml(cfg, resolve=True))

    def add(self, row: Mapping[str, Any]) -> None:
        """Append one metrics row and rewrite metrics.csv / metrics.json."""
        self.rows.append(dict(row))
        self.write_metrics()

    def write_metrics(self) -> None:
        write_csv(self.dir / f"{self.metrics_name}.csv", self.rows)
        with atomic_write(self.dir / f"{self.metrics_name}.json") as fh:
            json.dump(self.rows, fh, indent=1)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        with atomic_write(self.dir / "summary.json") as fh:
            json.dump(summary, fh, indent=1)

    def write_ledger(self, ledger: CommLedger) -> None:
        ledger.write_csv(self.dir / "ledger.csv")
        ledger.write_json(self.dir / "ledger.json")


def plot_lines(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
) -> None:
    """Write a line plot (one line per series name) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=150)
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
