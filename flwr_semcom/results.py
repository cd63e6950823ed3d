"""Results folder of a run: resolved config, metrics CSV/JSON, summary, ledger and plots.

Layout (documented in docs/results.md)::

    outputs/<experiment>/<YYYYmmdd-HHMMSS>[-N]/
        config.yaml        the resolved hydra config of the run
        metrics.csv        one row per (round, stage, method, ...) — rewritten atomically
        metrics.json       the same rows as a JSON list
        summary.json       the experiment's summary (schema per experiment)
        ledger.csv         every counted transfer (flwr_semcom.accounting)
        ledger.json        ledger rows plus totals per stage and direction
        *.png, *.pdf       plots: every PNG has a PDF twin (vector, for papers)

A folder is never reused: a second run in the same second gets a ``-1``, ``-2`` suffix. Every
file is written to a temporary name and renamed, so a killed run leaves complete files only.
A run that fails before it wrote anything worth keeping (only ``config.yaml`` / ``run.json``)
leaves no folder: :func:`stub_folders_removed` (around every runner in the ServerApp) removes
the folders created inside it that hold nothing else.

JSON is strict (RFC 8259): a NaN or infinite number is written as ``null`` (:func:`strict_json`),
never as the bare ``NaN`` / ``Infinity`` tokens that Python's ``json`` emits by default and
strict parsers reject. Finite numbers are written exactly as before.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from flwr_semcom.accounting import CommLedger, atomic_write

logger = logging.getLogger("flwr")  # Flower's logger, without importing flwr here

#: Fields that measure wall time, by name (csv columns and json keys at any depth of the files
#: the runners write), plus ``results_dir`` (the run's own folder): the only fields two runs of
#: one seed may differ in. metrics.csv ``round_time_s``, ``wall_time_s`` (and ``train_time_s``,
#: ``eval_time_s`` of split_supervised); summary.json ``elapsed_s``, ``wall_s``,
#: ``stage1_time_s``, ``stage2_time_s``, ``finetune_wall_s``, ``sweep_wall_time_s``. Used by
#: the determinism tests and ``benchmarks/main_floor.py``.
WALL_FIELDS = frozenset(
    {
        "round_time_s",
        "train_time_s",
        "eval_time_s",
        "wall_time_s",
        "stage1_time_s",
        "stage2_time_s",
        "elapsed_s",
        "wall_s",
        "finetune_wall_s",
        "sweep_wall_time_s",
        "results_dir",
    }
)

#: Files a run writes before it has results: a folder holding only these keeps nothing.
STUB_FILES = frozenset({"config.yaml", "run.json"})
_created: list[Path] = []  # folders made by new_run_dir in this process, oldest first


def new_run_dir(output_root: str | Path, experiment: str) -> Path:
    """Create and return a fresh, never-reused results folder."""
    base = Path(output_root) / experiment
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        _created.append(path)
        return path
    raise RuntimeError(f"could not create a new results folder under {base}")


def is_stub(folder: str | Path) -> bool:
    """``folder`` holds nothing worth keeping: only :data:`STUB_FILES` and hidden temporary
    files (no metrics, summary, ledger, plot, checkpoint or sub-folder)."""
    return all(
        p.is_file() and (p.name in STUB_FILES or p.name.startswith("."))
        for p in Path(folder).iterdir()
    )


@contextlib.contextmanager
def stub_folders_removed() -> Iterator[None]:
    """Remove the results folders created inside the block if it raises before they hold
    anything worth keeping (:func:`is_stub`): a run that failed before its first result or
    checkpoint leaves no folder that looks like a run, or like one to resume."""
    start = len(_created)
    try:
        yield
    except BaseException:
        for path in _created[start:]:
            if path.is_dir() and is_stub(path):
                shutil.rmtree(path, ignore_errors=True)
                logger.info("results folder %s removed: the run failed before any result", path)
        raise


def strict_json(obj: Any) -> Any:
    """Return ``obj`` with every NaN / ±inf float replaced by ``None`` (JSON ``null``).

    Mappings become dicts and tuples/lists/arrays become lists (recursively); numpy scalars
    become the equal Python number. Finite floats are returned unchanged, so
    ``json.dumps(strict_json(x))`` writes the same digits as ``json.dumps(x)`` wherever ``x``
    has no NaN/inf. Other objects are returned as they are.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        return strict_json(obj.item())
    return obj


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    """Write ``strict_json(obj)`` as strict JSON (``allow_nan=False``), atomically."""
    with atomic_write(path) as fh:
        json.dump(strict_json(obj), fh, indent=indent, allow_nan=False)


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
        write_json(self.dir / f"{self.metrics_name}.json", self.rows)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json(self.dir / "summary.json", summary)

    def write_ledger(self, ledger: CommLedger) -> None:
        ledger.write_csv(self.dir / "ledger.csv")
        ledger.write_json(self.dir / "ledger.json")


def save_figure(fig: Any, path: str | Path, vector: str = "pdf") -> list[Path]:
    """Save a matplotlib figure as ``path`` (PNG) and a ``vector`` twin (``pdf`` or ``svg``).

    Both files are written to temporary names and renamed. The vector file carries no creation
    date, so the same figure gives the same bytes. Returns the two paths written.
    """
    if vector not in ("pdf", "svg"):
        raise ValueError(f"vector: expected 'pdf' or 'svg', got {vector!r}")
    png = Path(path)
    if png.suffix.lower() != ".png":
        raise ValueError(f"path: expected a .png file name, got {png}")
    png.parent.mkdir(parents=True, exist_ok=True)
    twin = png.with_suffix(f".{vector}")
    meta = {"CreationDate": None} if vector == "pdf" else {"Date": None}
    written = []
    for target, fmt, md in ((png, "png", None), (twin, vector, meta)):
        tmp = target.with_name(f".{target.stem}.tmp.{fmt}")
        fig.savefig(tmp, format=fmt, metadata=md)
        tmp.replace(target)
        written.append(target)
    return written


def _figure(figsize: tuple[float, float] = (5.0, 3.6)) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=150)


def _finish(
    fig: Any,
    ax: Any,
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool,
    target: float | None,
    target_label: str,
    legend: bool,
) -> None:
    import matplotlib.pyplot as plt

    if target is not None:
        ax.axhline(target, color="0.3", linestyle="--", linewidth=1.0, label=target_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend or target is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_lines(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    target: float | None = None,
    target_label: str = "target",
) -> None:
    """Write a line plot (one line per series name) as ``path`` (PNG) and a PDF twin.

    ``target`` draws a dashed horizontal line (e.g. the accuracy target) labelled
    ``target_label``. Series names are the legend entries: pass display names.
    """
    fig, ax = _figure()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
    _finish(
        fig,
        ax,
        path,
        xlabel=xlabel,
        ylabel=ylabel,
        title=title,
        logx=logx,
        target=target,
        target_label=target_label,
        legend=bool(series),
    )


def plot_band(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    target: float | None = None,
    target_label: str = "target",
) -> None:
    """Plot the mean over seeds with its Student-t 95 % band, as ``path`` (PNG) and a PDF twin.

    ``series[name] = (xs, values)`` where ``values[i]`` holds one value per seed at ``xs[i]``
    (seeds may be missing at some points). The line is the mean
    (:func:`flwr_semcom.stats.summarize`); the shaded band is its 95 % interval wherever at
    least two seeds are present. ``target`` draws a dashed horizontal line.
    """
    from flwr_semcom.stats import summarize

    fig, ax = _figure()
    for name, (xs, values) in series.items():
        if len(xs) != len(values):
            raise ValueError(f"series[{name!r}]: {len(xs)} x values but {len(values)} y lists")
        pts = [(float(x), summarize(v)) for x, v in zip(xs, values) if len(v) > 0]
        (line,) = ax.plot(
            [x for x, _ in pts], [s.mean for _, s in pts], marker="o", markersize=3, label=name
        )
        band = [(x, s.ci95_low, s.ci95_high) for x, s in pts if s.ci95_low is not None]
        if band:
            ax.fill_between(
                [b[0] for b in band],
                [b[1] for b in band],
                [b[2] for b in band],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    _finish(
        fig,
        ax,
        path,
        xlabel=xlabel,
        ylabel=ylabel,
        title=title or "mean over seeds, 95 % Student-t band",
        logx=logx,
        target=target,
        target_label=target_label,
        legend=bool(series),
    )
