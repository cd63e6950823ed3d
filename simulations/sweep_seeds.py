"""``semcom-sweep`` over seeds: aggregates per group of points and the sweep figure.

When ``seed`` is a swept key (``semcom-sweep … seed=0,1,2,3,4``), the points that differ only
in their seed form a group, and each group's ``ok`` points are aggregated over seeds with
:func:`simulations.aggregate.write_aggregate` (per ``summary.json`` metric: ``mean``, ``std``,
Student-t ``ci95_low`` / ``ci95_high``, ``n``, ``seeds``, ``values``, ``missing_seeds``; the
seeds whose point failed in ``failed_seeds``):

- ``seed`` the only swept key: ``aggregate.json`` / ``aggregate.csv`` in the sweep folder;
- with other swept keys: ``aggregate/<key=value,...>/aggregate.{json,csv}`` per group, and in
  the sweep folder ``aggregate.json`` (``{"statistic", "group_keys", "groups": [{"values",
  "folder", "failed_seeds", "runs", "metrics"}]}``, run paths relative to the sweep folder) and
  ``aggregate.csv`` (one row per group and metric, the group's values first);
- beside each group's ``aggregate.json``, where the runs' ``metrics.json`` has a learning curve
  (:func:`simulations.aggregate.default_curve`, or ``--curve X Y [BY ...]``):
  ``aggregate_<Y>.png`` / ``.pdf``, the mean over seeds with its 95 % band.

Everything is recomputed from the point folders at the end of every sweep, so a ``--resume``d
sweep writes the same aggregate as an uninterrupted one (wall-time metrics aside).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from simulations.sweep import find_summary

SEED_KEY = "seed"


def _group_folder(values: dict[str, str], taken: set[str]) -> str:
    """``aggregate/<k=v,...>`` with characters unsafe in a file name replaced by ``_``."""
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(f"{k}={v}" for k, v in values.items()))
    while name in taken:
        name += "_"
    taken.add(name)
    return f"aggregate/{name}"


def seed_aggregates(
    sweep_dir: Path,
    keys: list[str],
    rows: list[dict[str, Any]],
    curve: list[str] | None = None,
    row_keys: list[str] | None = None,
) -> list[Path]:
    """Aggregate over seeds per group of points (module docstring); the folders
    written. Nothing when ``seed`` is not swept."""
    from flwr_semcom.results import write_csv, write_json
    from simulations.aggregate import (
        CSV_COLUMNS,
        METHOD,
        csv_rows,
        default_curve,
        find_runs,
        write_aggregate,
        write_curve,
    )

    if SEED_KEY not in keys:
        return []
    others = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: int(r["point"])):
        groups.setdefault(tuple(str(row[k]) for k in others), []).append(row)
    index: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    written: list[Path] = []
    taken: set[str] = set()
    for combo, members in groups.items():
        values = dict(zip(others, combo))
        ok = [r for r in members if r["status"] == "ok"]
        found = [(r, find_summary(sweep_dir / "runs" / f"{int(r['point']):03d}")) for r in ok]
        ok = [r for r, f in found if f is not None]
        failed = sorted(int(r[SEED_KEY]) for r in members if r not in ok)
        rel = _group_folder(values, taken) if others else "."
        entry: dict[str, Any] = {"values": values, "folder": rel, "failed_seeds": failed}
        index.append(entry)
        if not ok:
            continue
        out = (sweep_dir / rel).resolve()
        folders = [f.parent for _, f in found if f is not None]
        seeds = [int(r[SEED_KEY]) for r in ok]
        agg = write_aggregate(
            folders, out, seeds=seeds, row_keys=row_keys or (), extra={"failed_seeds": failed}
        )
        runs = find_runs(folders, seeds=seeds)
        spec = (curve[0], curve[1], curve[2:]) if curve else default_curve(runs)
        if spec is not None:
            write_curve(out, runs, *spec)
        written.append(out)
        for run in agg["runs"]:
            run["path"] = os.path.normpath(os.path.join(rel, run["path"]))
        entry.update({"runs": agg["runs"], "metrics": agg["metrics"]})
        table += [{**values, **row} for row in csv_rows(agg)]
    if others:
        write_json(
            sweep_dir / "aggregate.json",
            {"statistic": METHOD, "group_keys": others, "groups": index},
        )
        write_csv(sweep_dir / "aggregate.csv", table, [*others, *CSV_COLUMNS])
    return written


def plot_sweep(
    sweep_dir: Path, keys: list[str], rows: list[dict[str, Any]], metric: str, title: str
) -> None:
    """``sweep.png``: ``metric`` against the first swept key (other than ``seed`` when seeds
    are swept: then the mean over seeds with its 95 % band)."""
    from flwr_semcom.results import plot_band, plot_lines

    over_seeds = SEED_KEY in keys and len(keys) > 1
    axes = [k for k in keys if k != SEED_KEY] if over_seeds else keys
    series: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        if metric not in r or r[metric] is None:
            continue
        try:
            x = float(r[axes[0]])
        except ValueError:
            print(f"[semcom-sweep] no sweep.png: {axes[0]} is not numeric", flush=True)
            return
        label = ", ".join(f"{k}={r[k]}" for k in axes[1:]) or metric
        series.setdefault(label, {}).setdefault(x, []).append(float(r[metric]))
    if over_seeds:
        plot_band(
            sweep_dir / "sweep.png",
            {k: (sorted(v), [v[x] for x in sorted(v)]) for k, v in series.items()},
            xlabel=axes[0],
            ylabel=metric,
            title=f"{title} (mean over seeds, 95 % band)",
        )
    else:
        plot_lines(
            sweep_dir / "sweep.png",
            {k: (list(v), [y[0] for y in v.values()]) for k, v in series.items()},
            xlabel=axes[0],
            ylabel=metric,
            title=title,
        )
